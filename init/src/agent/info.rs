//! The machine as QGA clients ask about it: its OS, its network interfaces, and its shutdown.
use super::Mode;
use serde_json::{json, Map, Value};
use std::process::{Command, Stdio};

/// guest-shutdown {"mode"}: as PID 1, the power button's path (the app gets its stop signal,
/// then the VM powers off); under another init, that init's command, not waited for.
pub fn shutdown(mode: Mode, how: &str) -> Result<(), String> {
    if !matches!(how, "powerdown" | "halt" | "reboot") {
        return Err(format!("guest-shutdown: unknown mode {how:?}"));
    }
    if mode == Mode::Init {
        if how == "reboot" {
            return Err(
                "guest-shutdown: an app VM powers off when its app ends; it does not \
                        reboot"
                    .into(),
            );
        }
        // SAFETY: the signal the power button raises, taken by init's own loop.
        unsafe { libc::kill(1, libc::SIGPWR) };
        return Ok(());
    }
    let verb = if how == "powerdown" { "poweroff" } else { how };
    let mut cmd = if std::path::Path::new("/run/systemd/system").exists() {
        let mut c = Command::new("systemctl");
        c.arg(verb);
        c
    } else {
        Command::new(verb)
    };
    cmd.stdin(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("guest-shutdown: running {verb}: {e}"))
}

/// guest-set-time {"time"?: nanoseconds since 1970} → {}: the system clock set (QGA's; without
/// a time, from the hardware clock, which only the host's `hwclock` knows how to read: refused).
/// The host sets it after restoring a saved VM, whose clock stood still meanwhile.
pub fn set_time(nanos: Option<i64>) -> Result<Value, String> {
    let nanos = nanos.ok_or("guest-set-time: give the time; reading the RTC is not supported")?;
    let ts = libc::timespec {
        tv_sec: (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec, read only.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "guest-set-time: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(serde_json::json!({}))
}

/// guest-get-osinfo → {"id", "name", "pretty-name", "version", "version-id", "kernel-release",
/// "kernel-version", "machine"}, each only when known.
pub fn osinfo() -> Value {
    let release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let mut info = os_release(&release);
    let uname = rustix::system::uname();
    for (key, value) in [
        ("kernel-release", uname.release()),
        ("kernel-version", uname.version()),
        ("machine", uname.machine()),
    ] {
        info.insert(key.into(), value.to_string_lossy().into_owned().into());
    }
    Value::Object(info)
}

pub(super) fn os_release(text: &str) -> Map<String, Value> {
    let mut info = Map::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let field = match key.trim() {
            "ID" => "id",
            "NAME" => "name",
            "PRETTY_NAME" => "pretty-name",
            "VERSION" => "version",
            "VERSION_ID" => "version-id",
            _ => continue,
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        info.insert(field.into(), value.into());
    }
    info
}

/// guest-network-get-interfaces → [{"name", "hardware-address"?, "ip-addresses": [{
/// "ip-address-type", "ip-address", "prefix"}]}].
pub fn interfaces() -> Result<Value, String> {
    let mut list: Vec<(String, Option<String>, Vec<Value>)> = Vec::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list that freeifaddrs frees below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(format!(
            "guest-network-get-interfaces: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cursor };
        cursor = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let at = match list.iter().position(|(n, _, _)| *n == name) {
            Some(i) => i,
            None => {
                list.push((name.clone(), None, Vec::new()));
                list.len() - 1
            }
        };
        // SAFETY: the addresses are sockaddrs of the family they say.
        let (mac, ip) = unsafe { decode(ifa) };
        if let Some(mac) = mac {
            list[at].1 = Some(mac);
        }
        if let Some(ip) = ip {
            list[at].2.push(ip);
        }
    }
    // SAFETY: the list from getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(addrs) };
    let out: Vec<Value> = list
        .into_iter()
        .map(|(name, mac, ips)| {
            let mac = mac.or_else(|| {
                std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
                    .ok()
                    .map(|s| s.trim().to_string())
            });
            let mut v = json!({ "name": name, "ip-addresses": ips });
            if let Some(mac) = mac {
                v["hardware-address"] = mac.into();
            }
            v
        })
        .collect();
    Ok(Value::Array(out))
}

/// One getifaddrs entry: a MAC (AF_PACKET) or an IP address with its prefix.
///
/// # Safety
/// `ifa`'s addresses must be valid sockaddrs of the family they carry.
unsafe fn decode(ifa: &libc::ifaddrs) -> (Option<String>, Option<Value>) {
    if ifa.ifa_addr.is_null() {
        return (None, None);
    }
    let family = i32::from((*ifa.ifa_addr).sa_family);
    let netmask = ifa.ifa_netmask;
    match family {
        libc::AF_PACKET => {
            let ll = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
            let len = usize::from(ll.sll_halen).min(ll.sll_addr.len());
            let mac: Vec<String> = ll.sll_addr[..len]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (Some(mac.join(":")), None)
        }
        libc::AF_INET => {
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let prefix = if netmask.is_null() {
                32
            } else {
                u32::from_be((*(netmask as *const libc::sockaddr_in)).sin_addr.s_addr).count_ones()
            };
            (None, Some(address("ipv4", &ip.to_string(), prefix)))
        }
        libc::AF_INET6 => {
            let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let prefix = if netmask.is_null() {
                128
            } else {
                let mask = (*(netmask as *const libc::sockaddr_in6)).sin6_addr.s6_addr;
                mask.iter().map(|b| b.count_ones()).sum()
            };
            (None, Some(address("ipv6", &ip.to_string(), prefix)))
        }
        _ => (None, None),
    }
}

fn address(kind: &str, ip: &str, prefix: u32) -> Value {
    json!({ "ip-address-type": kind, "ip-address": ip, "prefix": prefix })
}
