//! `c2vm cp`: files, directories and symlinks between the host and a running VM, through its
//! agent (QGA's `guest-file-*`, with c2vm's `c2vm-stat`, `c2vm-mkdir`, `c2vm-chmod` and
//! `c2vm-symlink`), modes kept. As `docker cp`: into a directory that exists, under the source's
//! name; else to the destination's name, whose parent must exist.
use super::agent::{self, Agent, Refused};
use super::options::{CpArgs, Place};
use super::Instance;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Bytes a read or write carries (base64 in JSON: a third more).
const CHUNK: usize = 1 << 20;

pub fn cp(args: &CpArgs) -> Result<()> {
    match (Place::parse(&args.source), Place::parse(&args.destination)) {
        (Place::Guest { name, path }, Place::Host(dst)) => {
            let vm = Instance::running(&name)?;
            let mut agent = super::connect_agent(&vm)?;
            let st = stat(&mut agent, &path, false)
                .with_context(|| format!("{name}:{path} is not there to copy"))?;
            let dst = match dst.is_dir() {
                true => dst.join(base_name(&path)),
                false => {
                    check_host_parent(&dst)?;
                    dst
                }
            };
            copy_out(&mut agent, &path, &st, &dst)
        }
        (Place::Host(src), Place::Guest { name, path }) => {
            let meta = std::fs::symlink_metadata(&src)
                .with_context(|| format!("{} is not there to copy", src.display()))?;
            let vm = Instance::running(&name)?;
            let mut agent = super::connect_agent(&vm)?;
            let dst = guest_destination(&mut agent, &name, &path, &src)?;
            copy_in(&mut agent, &src, &meta, &dst)
        }
        (Place::Guest { .. }, Place::Guest { .. }) => {
            bail!("c2vm cp copies between the host and a VM; give a host path on one side")
        }
        (Place::Host(_), Place::Host(_)) => {
            bail!("c2vm cp copies between the host and a VM: name the VM's side NAME:/PATH")
        }
    }
}

fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

fn check_host_parent(dst: &Path) -> Result<()> {
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "{} does not exist: c2vm cp makes the last part of a path only",
            parent.display()
        );
    }
    Ok(())
}

/// `c2vm-stat`: what is at `path` in the guest.
fn stat(agent: &mut Agent, path: &str, follow: bool) -> Result<Value> {
    agent.call("c2vm-stat", json!({"path": path, "follow": follow}))
}

/// Where a host file lands in the guest.
fn guest_destination(agent: &mut Agent, name: &str, path: &str, src: &Path) -> Result<String> {
    match stat(agent, path, true) {
        Ok(st) if st["type"] == "dir" => {
            let base = src
                .file_name()
                .context("the source has no name to copy under")?
                .to_string_lossy();
            Ok(format!("{}/{base}", path.trim_end_matches('/')))
        }
        Ok(_) => Ok(path.to_string()),
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            let parent = match path.trim_end_matches('/').rsplit_once('/') {
                Some(("", _)) | None => "/",
                Some((parent, _)) => parent,
            };
            match stat(agent, parent, true) {
                Ok(st) if st["type"] == "dir" => Ok(path.to_string()),
                _ => bail!(
                    "{name}:{parent} does not exist: c2vm cp makes the last part of a path only"
                ),
            }
        }
        Err(e) => Err(e),
    }
}

fn mode_of(st: &Value) -> u32 {
    st["mode"].as_u64().unwrap_or(0o644) as u32 & 0o7777
}

/// A guest path's contents to the host, recursively.
fn copy_out(agent: &mut Agent, src: &str, st: &Value, dst: &Path) -> Result<()> {
    crate::interrupt::check()?;
    match st["type"].as_str() {
        Some("dir") => {
            match std::fs::create_dir(dst) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).with_context(|| format!("creating {}", dst.display()))
                }
                _ => {}
            }
            for entry in st["entries"].as_array().into_iter().flatten() {
                let name = entry.as_str().context("a directory entry without a name")?;
                let child = format!("{}/{name}", src.trim_end_matches('/'));
                let child_st = stat(agent, &child, false)?;
                copy_out(agent, &child, &child_st, &dst.join(name))?;
            }
            set_mode(dst, mode_of(st))
        }
        Some("file") => {
            let handle = agent.call("guest-file-open", json!({"path": src, "mode": "r"}))?;
            let mut file = std::fs::File::create(dst)
                .with_context(|| format!("creating {}", dst.display()))?;
            loop {
                crate::interrupt::check()?;
                let read =
                    agent.call("guest-file-read", json!({"handle": handle, "count": CHUNK}))?;
                file.write_all(&agent::bytes(&read, "buf-b64")?)
                    .with_context(|| format!("writing {}", dst.display()))?;
                if read["eof"].as_bool() != Some(false) {
                    break;
                }
            }
            agent.call("guest-file-close", json!({"handle": handle}))?;
            set_mode(dst, mode_of(st))
        }
        Some("symlink") => {
            let target = st["target"]
                .as_str()
                .context("a symlink without a target")?;
            std::os::unix::fs::symlink(target, dst)
                .with_context(|| format!("creating the symlink {}", dst.display()))
        }
        _ => {
            crate::progress::note(&format!(
                "c2vm: {src} is not a file, directory or symlink: left out"
            ));
            Ok(())
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// A host path's contents into the guest, recursively.
fn copy_in(agent: &mut Agent, src: &Path, meta: &std::fs::Metadata, dst: &str) -> Result<()> {
    crate::interrupt::check()?;
    let mode = meta.permissions().mode() & 0o7777;
    let kind = meta.file_type();
    if kind.is_dir() {
        agent.call("c2vm-mkdir", json!({"path": dst, "mode": mode}))?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", src.display()))?;
        entries.sort();
        for child in entries {
            let name = child.file_name().map(|n| n.to_string_lossy().into_owned());
            let meta = std::fs::symlink_metadata(&child)
                .with_context(|| format!("reading {}", child.display()))?;
            let dst = format!("{}/{}", dst.trim_end_matches('/'), name.unwrap_or_default());
            copy_in(agent, &child, &meta, &dst)?;
        }
        // The mode last: a read-only directory still takes its entries.
        agent.call("c2vm-chmod", json!({"path": dst, "mode": mode}))?;
    } else if kind.is_symlink() {
        let target =
            std::fs::read_link(src).with_context(|| format!("reading {}", src.display()))?;
        agent.call(
            "c2vm-symlink",
            json!({"target": target.to_string_lossy(), "path": dst}),
        )?;
    } else if kind.is_file() {
        let mut file =
            std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let handle = agent.call("guest-file-open", json!({"path": dst, "mode": "w"}))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            crate::interrupt::check()?;
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", src.display()))?;
            if n == 0 {
                break;
            }
            let data = agent::encode(&buf[..n]);
            agent.call(
                "guest-file-write",
                json!({"handle": handle, "buf-b64": data}),
            )?;
        }
        agent.call("guest-file-close", json!({"handle": handle}))?;
        agent.call("c2vm-chmod", json!({"path": dst, "mode": mode}))?;
    } else {
        crate::progress::note(&format!(
            "c2vm: {} is not a file, directory or symlink: left out",
            src.display()
        ));
    }
    Ok(())
}
