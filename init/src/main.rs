//! c2vm-init: PID 1 for a VM made from an image with no init of its own (distroless, `FROM
//! scratch`, busybox, an unknown distro). It sets up the machine (filesystems, hostname, network
//! by DHCP), runs the image's ENTRYPOINT + CMD as `docker run` would, and powers the VM off when
//! the app ends, saying how it ended so that `c2vm run` can exit with the same status.
//!
//! PID 1 must never exit or panic (the kernel would panic): every failure is said on the console,
//! then the VM powers off.
mod agent;
mod button;
mod config;
mod credentials;
mod dhcp;
mod net;
mod supervise;
mod system;

use config::Config;
use std::time::Duration;

/// How `c2vm run` recognises init's last word: `c2vm-init: exit N`.
const EXIT_MARK: &str = "exit";
/// init's own failure, as `docker run` reports a failure of the runtime.
const INIT_FAILED: i32 = 125;

/// getrandom's custom backend: GRND_INSECURE, which never blocks. At early boot, with no
/// entropy source, the kernel's pool may not be ready for many seconds, and a DHCP transaction id
/// needs no secrecy.
///
/// # Safety
/// `dest` must be valid for `len` bytes (getrandom's contract).
#[no_mangle]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    const GRND_INSECURE: libc::c_uint = 0x0004;
    let mut done = 0;
    while done < len {
        // SAFETY: writes at most `len - done` bytes from `dest + done`.
        let n = unsafe { libc::getrandom(dest.add(done).cast(), len - done, GRND_INSECURE) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(getrandom::Error::UNSUPPORTED);
        }
        done += n as usize;
    }
    Ok(())
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("agent") {
        agent::serve_forever(std::env::args().nth(2));
    }
    supervise::block_signals();
    system::ensure_console();
    let code = match start() {
        Ok(ended) => {
            system::say(&ended.describe());
            ended.code()
        }
        Err(e) => {
            system::say(&format!("error: {e}; powering off"));
            INIT_FAILED
        }
    };
    system::say(&format!("{EXIT_MARK} {code}"));
    system::power_off();
}

fn start() -> Result<supervise::Ended, String> {
    system::mount_all()?;
    let text = std::fs::read_to_string(config::PATH)
        .map_err(|e| format!("reading {}: {e}", config::PATH))?;
    let mut config = Config::parse(&text)?;
    let applied = credentials::read().apply(&mut config)?;
    if !applied.is_empty() {
        system::say(&format!("settings given at boot: {}", applied.join(", ")));
    }
    system::set_hostname(&config.hostname)?;
    if !config.dns.is_empty() {
        system::write_resolv_conf(&config.dns)?;
    }
    network(&config);
    agent::spawn_if_present();
    button::watch();
    supervise::run(&config)
}

/// lo up; DHCP on the first Ethernet NIC, waiting a few seconds for the lease before the app
/// starts (as a container starts with its network), then renewing it in the background.
fn network(config: &Config) {
    let (lo, ether) = net::interfaces();
    if let Some(lo) = &lo {
        if let Err(e) = net::link_up(lo.index) {
            system::say(&format!("bringing up lo: {e}"));
        }
    }
    let Some(nic) = ether else {
        system::say("no Ethernet interface: the VM has no network");
        return;
    };
    if let Err(e) = net::link_up(nic.index) {
        system::say(&format!("bringing up {}: {e}", nic.name));
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let own_dns = !config.dns.is_empty();
    std::thread::spawn(move || {
        let mut client = match dhcp::Client::new(&nic.name, nic.mac) {
            Ok(c) => c,
            Err(e) => {
                system::say(&format!("DHCP on {}: {e}", nic.name));
                return;
            }
        };
        let mut lease = match client.acquire() {
            Ok(lease) => lease,
            Err(e) => {
                system::say(&format!("DHCP on {}: {e}", nic.name));
                let _ = tx.send(());
                return;
            }
        };
        let mut installed = configure(&nic, None, &lease, own_dns);
        let _ = tx.send(());
        loop {
            std::thread::sleep(Duration::from_secs(lease.renew_after.into()));
            match client.renew(&lease).or_else(|_| client.acquire()) {
                Ok(renewed) => {
                    installed = configure(&nic, installed, &renewed, own_dns);
                    lease = renewed;
                }
                Err(e) => system::say(&format!("DHCP renewal on {}: {e}", nic.name)),
            }
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(15));
}

/// Bring the interface from the lease `installed` (None: nothing known in place) to `lease`,
/// saying what failed. Returns the lease now in place, None when configuring it failed (so that
/// the next renewal tries again).
fn configure(
    nic: &net::Interface,
    installed: Option<dhcp::Lease>,
    lease: &dhcp::Lease,
    own_dns: bool,
) -> Option<dhcp::Lease> {
    let dhcp::Change::Apply { remove } = dhcp::change(installed.as_ref(), lease) else {
        return installed;
    };
    // The old address goes first, as dhclient-script does: with promote_secondaries off (the
    // default), removing it after adding a new one of the same subnet would remove both.
    if let Some((address, prefix_len)) = remove {
        if let Err(e) = net::del_address(nic.index, address, prefix_len) {
            system::say(&format!(
                "removing the old address {address}/{prefix_len} from {}: {e}",
                nic.name
            ));
        }
    }
    match apply(nic, lease, own_dns) {
        Ok(()) => {
            system::say(&format!(
                "{} has {}/{} from DHCP",
                nic.name, lease.address, lease.prefix_len
            ));
            Some(lease.clone())
        }
        Err(e) => {
            system::say(&format!(
                "configuring {} with {}/{}: {e}",
                nic.name, lease.address, lease.prefix_len
            ));
            None
        }
    }
}

fn apply(nic: &net::Interface, lease: &dhcp::Lease, own_dns: bool) -> Result<(), String> {
    net::add_address(nic.index, lease.address, lease.prefix_len)?;
    if let Some(router) = lease.router {
        net::add_default_route(nic.index, router)?;
    }
    if !own_dns && !lease.dns.is_empty() {
        let servers: Vec<String> = lease.dns.iter().map(|d| d.to_string()).collect();
        system::write_resolv_conf(&servers)?;
    }
    Ok(())
}
