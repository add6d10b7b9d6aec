//! `c2vm save NAME FILE` and `c2vm run -d --restore FILE`: a running VM stopped into one file
//! (QEMU's migration stream, the overlay that holds its writes, what its boot attached, and how
//! QEMU was started), and started again from it, ready for `exec`, without a boot.
//!
//! A restore needs what the save ran on: the same QEMU (its version is recorded and compared),
//! the same firmware code (its SHA-256), and the disk the overlay reads through, at the same
//! path and unchanged. After a restore the guest's clock is set to the host's and its random
//! pool stirred with fresh host bytes, through the agent (QGA's `guest-set-time` where the agent
//! has it, and a write to /dev/urandom), so two VMs restored from one file do not share a
//! future random stream. Asked for (`--hostname`), a restored guest takes a distinct identity:
//! that hostname (the kernel's and /etc/hostname) and a new /etc/machine-id. What read the
//! machine-id at boot (journald's directory, a DHCP client's DUID) keeps the saved one until the
//! next boot; the NIC's MAC stays the saved one (each VM has its own user-mode network).
use super::agent::{self, Agent};
use super::qmp::Qmp;
use super::{state, Instance};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The state file's first member: what the rest needs.
const MANIFEST: &str = "c2vm-state.json";
const MIGRATION: &str = "migration";

/// `c2vm save`.
pub fn save(name: &str, file: &Path) -> Result<()> {
    let vm = Instance::running(name)?;
    let partial = partial_name(file)?;
    let result = save_into(&vm, &partial).and_then(|()| {
        std::fs::rename(&partial, file)
            .with_context(|| format!("renaming {} to {}", partial.display(), file.display()))
    });
    // Saved or not, the VM is gone: its QEMU has quit or is killed, and nothing is left.
    super::kill_qemu(&vm).ok();
    vm.remove().ok();
    if result.is_err() {
        std::fs::remove_file(&partial).ok();
    }
    result
}

/// Where the state file is written until it is complete.
fn partial_name(file: &Path) -> Result<PathBuf> {
    let name = file
        .file_name()
        .with_context(|| format!("{} names no file", file.display()))?;
    let dir = super::existing_parent(file, "give the state file a directory that does")?;
    Ok(dir.join(format!(".{}.partial", name.to_string_lossy())))
}

fn save_into(vm: &Instance, out: &Path) -> Result<()> {
    let command: Value = read_json(&vm.path(state::COMMAND))?;
    let binary = command["binary"]
        .as_str()
        .context("no QEMU program in the VM's record")?;
    let mut qmp = Qmp::connect(&vm.path(state::QMP))?;
    qmp.execute("stop", Value::Null)?;
    let stream = vm.path(MIGRATION);
    let uri = format!(
        "exec:cat > '{}'",
        stream.to_string_lossy().replace('\'', "'\\''")
    );
    qmp.execute("migrate", json!({ "uri": uri }))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        crate::interrupt::check()?;
        let status = qmp.execute("query-migrate", Value::Null)?;
        match status["status"].as_str() {
            Some("completed") => break,
            Some("failed") | Some("cancelled") => {
                bail!("QEMU could not save the VM: {}", status["error-desc"])
            }
            _ if Instant::now() > deadline => bail!("QEMU took more than 600 s to save the VM"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    qmp.execute("quit", Value::Null).ok();
    let manifest = json!({
        "version": 1,
        "name": vm.name,
        "dir": vm.dir.to_string_lossy(),
        "record": vm.record()?,
        "command": command,
        "qemu": qemu_version(binary)?,
        "firmware": firmware_digests(&command)?,
    });
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let text = serde_json::to_vec_pretty(&manifest).context("encoding the state's manifest")?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    let me = rustix::process::getuid().as_raw();
    header.set_uid(me.into());
    header.set_gid(rustix::process::getgid().as_raw().into());
    header.set_mtime(crate::units::unix_now());
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, text.as_slice())
        .with_context(|| format!("writing {}", out.display()))?;
    for member in [MIGRATION, state::OVERLAY, state::RECORD] {
        if vm.path(member).exists() {
            tar.append_path_with_name(vm.path(member), member)
                .with_context(|| format!("writing {} into {}", member, out.display()))?;
        }
    }
    if vm.path(state::FILES).is_dir() {
        tar.append_dir_all(state::FILES, vm.path(state::FILES))
            .with_context(|| format!("writing the boot's files into {}", out.display()))?;
    }
    let mut writer = tar.into_inner().context("finishing the state file")?;
    std::io::Write::flush(&mut writer).context("finishing the state file")?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().context("flushing the state file")?;
    use std::os::unix::fs::PermissionsExt;
    // It holds the guest's memory: its secrets too.
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", out.display()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))
}

/// `qemu-system-… --version`'s first line.
fn qemu_version(binary: &str) -> Result<String> {
    let out = crate::cmd::Cmd::new(binary, "Asking QEMU its version")
        .arg("--version")
        .run()?;
    Ok(out.stdout.lines().next().unwrap_or("").to_string())
}

/// The SHA-256 of each read-only firmware file QEMU was given (the pflash code).
fn firmware_digests(command: &Value) -> Result<Vec<(String, String)>> {
    let mut digests = Vec::new();
    for arg in command["args"].as_array().into_iter().flatten() {
        let arg = arg.as_str().unwrap_or("");
        if !(arg.contains("if=pflash") && arg.contains("readonly=on")) {
            continue;
        }
        if let Some(file) = arg.split(',').find_map(|part| part.strip_prefix("file=")) {
            digests.push((file.to_string(), file_digest(Path::new(file))?));
        }
    }
    Ok(digests)
}

fn file_digest(path: &Path) -> Result<String> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&data)))
}

/// `c2vm run -d --restore FILE`: the VM named `name`, running again and answering.
pub fn restore(file: &Path, name: &str, hostname: Option<&str>) -> Result<()> {
    if let Some(h) = hostname {
        crate::rootfs::setup::check_hostname(h)?;
    }
    let vm = Instance::create(name)?;
    let result = restore_into(&vm, file, hostname);
    if result.is_err() {
        super::kill_qemu(&vm).ok();
        vm.remove().ok();
    }
    result
}

fn restore_into(vm: &Instance, file: &Path, hostname: Option<&str>) -> Result<()> {
    let archive = std::fs::File::open(file)
        .with_context(|| format!("opening the state file {}", file.display()))?;
    crate::rootfs::unpack::unpack(std::io::BufReader::new(archive), &vm.dir)
        .with_context(|| format!("reading the state file {}", file.display()))?;
    let manifest = read_json(&vm.path(MANIFEST))
        .with_context(|| format!("{} is not a state file of `c2vm save`", file.display()))?;
    let binary = manifest["command"]["binary"]
        .as_str()
        .context("the state file names no QEMU")?;
    let saved_on = manifest["qemu"].as_str().unwrap_or("");
    let here = qemu_version(binary)?;
    if here != saved_on {
        bail!(
            "{} was saved by {saved_on}; this host has {here}: a restore needs the same QEMU",
            file.display()
        );
    }
    for pair in manifest["firmware"].as_array().into_iter().flatten() {
        let (path, digest) = (
            pair[0].as_str().unwrap_or(""),
            pair[1].as_str().unwrap_or(""),
        );
        if file_digest(Path::new(path)).ok().as_deref() != Some(digest) {
            bail!("{} was saved with the firmware {path}, which is not the same here (or gone): a restore needs the same firmware", file.display());
        }
    }
    // The saved VM's files were in its directory: they are in this one now.
    let old_dir = manifest["dir"]
        .as_str()
        .context("the state file names no directory")?;
    let new_dir = vm.dir.to_string_lossy();
    let args: Vec<String> = manifest["command"]["args"]
        .as_array()
        .context("the state file holds no QEMU arguments")?
        .iter()
        .map(|a| a.as_str().unwrap_or("").replace(old_dir, &new_dir))
        .collect();
    let record: state::Record = serde_json::from_value(manifest["record"].clone())
        .context("reading the saved VM's record")?;
    if !Path::new(&record.disk).exists() {
        bail!(
            "the saved VM's disk {} is gone: a restore reads through it",
            record.disk
        );
    }
    vm.write_record(&state::Record {
        started: crate::units::unix_now(),
        ..record
    })?;
    let stream = vm.path(MIGRATION);
    let incoming = format!(
        "exec:cat '{}'",
        stream.to_string_lossy().replace('\'', "'\\''")
    );
    let child = super::start::spawn(vm, binary, &args, &["-incoming".into(), incoming])?;
    let mut qmp = connect_qmp(vm)?;
    wait_for_migration(&mut qmp)?;
    qmp.execute("cont", Value::Null)?;
    super::start::wait_ready(vm, child, Duration::from_secs(120), false, None)?;
    std::fs::remove_file(&stream).ok();
    let mut agent = Agent::connect(&vm.path(state::AGENT), Duration::from_secs(10))?;
    refresh(&mut agent)?;
    match hostname {
        Some(h) => new_identity(&mut agent, h),
        None => Ok(()),
    }
}

/// QEMU's socket, once QEMU has made it.
fn connect_qmp(vm: &Instance) -> Result<Qmp> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Qmp::connect(&vm.path(state::QMP)) {
            Ok(qmp) => return Ok(qmp),
            Err(e) if Instant::now() > deadline || !vm.qemu_alive() => {
                return Err(e).context(format!(
                    "QEMU did not start from the state{}",
                    vm.console_tail(0)
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Until QEMU has read the whole stream (its status leaves `inmigrate`).
fn wait_for_migration(qmp: &mut Qmp) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        crate::interrupt::check()?;
        let status = qmp.execute("query-status", Value::Null)?;
        match status["status"].as_str() {
            Some("inmigrate") if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Some("inmigrate") => bail!("QEMU took more than 600 s to read the state"),
            _ => return Ok(()),
        }
    }
}

/// The guest's clock to the host's, and its random pool stirred with fresh host bytes.
fn refresh(agent: &mut Agent) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    if let Err(e) = agent.call("guest-set-time", json!({ "time": nanos })) {
        crate::progress::note(&format!("c2vm: the guest's clock was not set ({e:#})"));
    }
    let mut fresh = [0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut fresh);
    write_file(agent, "/dev/urandom", &fresh)
}

/// `hostname` as the kernel's and /etc/hostname, and a new machine-id, through files only (the
/// guest may have no `hostname` program).
fn new_identity(agent: &mut Agent, hostname: &str) -> Result<()> {
    let id: [u8; 16] = rand::random();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    for (path, text) in [
        ("/proc/sys/kernel/hostname", hostname.to_string()),
        ("/etc/hostname", format!("{hostname}\n")),
        ("/etc/machine-id", format!("{id}\n")),
    ] {
        write_file(agent, path, text.as_bytes())
            .with_context(|| format!("giving the restored guest its identity ({path})"))?;
    }
    Ok(())
}

/// `data` written over the guest's `path`, through QGA's file commands.
fn write_file(agent: &mut Agent, path: &str, data: &[u8]) -> Result<()> {
    let handle = agent.call("guest-file-open", json!({"path": path, "mode": "w"}))?;
    agent.call(
        "guest-file-write",
        json!({"handle": handle, "buf-b64": agent::encode(data)}),
    )?;
    agent.call("guest-file-close", json!({"handle": handle}))?;
    Ok(())
}
