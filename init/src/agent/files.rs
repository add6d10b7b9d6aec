//! Files for the host: QGA's guest-file-* (open handles, read and write in base64) and c2vm's
//! c2vm-stat, c2vm-mkdir, c2vm-symlink, c2vm-chmod, which `c2vm cp` needs to copy trees with
//! their modes.
use super::{int_arg, opt_bool, opt_int, opt_str, os_error, str_arg};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::Mutex;

/// guest-file-read's default and largest count (QGA's).
const DEFAULT_COUNT: i64 = 4096;
const MAX_COUNT: i64 = 48 << 20;

/// Open files by handle.
pub struct Files {
    open: Mutex<HashMap<i64, File>>,
    next: Mutex<i64>,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            open: Mutex::new(HashMap::new()),
            // Handles are plain integers to QGA clients; start where no small int is mistaken.
            next: Mutex::new(1000),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Files {
    /// guest-file-open {"path", "mode"?} → HANDLE.
    pub fn open(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let path = str_arg(args, "path")?;
        let mode = opt_str(args, "mode")?.unwrap_or("r");
        let mut options = OpenOptions::new();
        match mode.replace('b', "").as_str() {
            "r" => options.read(true),
            "r+" => options.read(true).write(true),
            "w" => options.write(true).create(true).truncate(true),
            "w+" => options.read(true).write(true).create(true).truncate(true),
            "a" => options.append(true).create(true),
            "a+" => options.read(true).append(true).create(true),
            _ => return Err(format!("guest-file-open: unknown mode {mode:?}")),
        };
        let file = options
            .mode(0o644)
            .open(path)
            .map_err(|e| os_error(path, &e))?;
        let handle = {
            let mut next = lock(&self.next);
            *next += 1;
            *next
        };
        lock(&self.open).insert(handle, file);
        Ok(handle.into())
    }

    /// guest-file-read {"handle", "count"?} → {"count", "buf-b64", "eof"}.
    pub fn read(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let handle = int_arg(args, "handle")?;
        let count = opt_int(args, "count")?.unwrap_or(DEFAULT_COUNT);
        if !(0..=MAX_COUNT).contains(&count) {
            return Err(format!(
                "guest-file-read: count {count} is not in 0..={MAX_COUNT}"
            ));
        }
        let mut open = lock(&self.open);
        let file = open.get_mut(&handle).ok_or_else(|| no_handle(handle))?;
        let mut buf = vec![0u8; count as usize];
        let mut done = 0;
        let mut eof = false;
        while done < buf.len() {
            match file.read(&mut buf[done..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("guest-file-read: handle {handle}: {e}")),
            }
        }
        buf.truncate(done);
        Ok(json!({ "count": done, "buf-b64": B64.encode(&buf), "eof": eof }))
    }

    /// guest-file-write {"handle", "buf-b64", "count"?} → {"count", "eof": false}.
    pub fn write(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let handle = int_arg(args, "handle")?;
        let data = B64
            .decode(str_arg(args, "buf-b64")?)
            .map_err(|e| format!("guest-file-write: buf-b64: {e}"))?;
        let count = match opt_int(args, "count")? {
            Some(c) if c < 0 || c as usize > data.len() => {
                return Err(format!("guest-file-write: count {c} is beyond the data"))
            }
            Some(c) => c as usize,
            None => data.len(),
        };
        let mut open = lock(&self.open);
        let file = open.get_mut(&handle).ok_or_else(|| no_handle(handle))?;
        file.write_all(&data[..count])
            .map_err(|e| format!("guest-file-write: handle {handle}: {e}"))?;
        Ok(json!({ "count": count, "eof": false }))
    }

    /// guest-file-close {"handle"} → {}.
    pub fn close(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let handle = int_arg(args, "handle")?;
        let file = lock(&self.open)
            .remove(&handle)
            .ok_or_else(|| no_handle(handle))?;
        // What was written reaches the disk before the host is told it is done (QGA's close
        // does the same). Files that cannot be synced (procfs, sysfs, pipes) say EINVAL: they
        // have nothing to flush.
        match file.sync_all() {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => {
                Err(format!("guest-file-close: handle {handle}: {e}"))
            }
            _ => Ok(json!({})),
        }
    }
}

fn no_handle(handle: i64) -> String {
    format!("no open file with handle {handle}")
}

/// c2vm-stat {"path", "follow"?} → {"type", "mode", "uid", "gid", "size", "target"?,
/// "entries"?}.
pub fn stat(args: &Map<String, Value>) -> Result<Value, String> {
    let path = str_arg(args, "path")?;
    let meta = if opt_bool(args, "follow")? {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| os_error(path, &e))?;
    let kind = meta.file_type();
    let mut reply = json!({
        "type": if kind.is_symlink() { "symlink" } else if kind.is_dir() { "dir" }
                else if kind.is_file() { "file" } else { "other" },
        "mode": meta.mode() & 0o7777,
        "uid": meta.uid(),
        "gid": meta.gid(),
        "size": meta.size(),
    });
    if kind.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| os_error(path, &e))?;
        reply["target"] = target.to_string_lossy().into_owned().into();
    } else if kind.is_dir() {
        let mut entries = std::fs::read_dir(path)
            .map_err(|e| os_error(path, &e))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| os_error(path, &e))?;
        entries.sort();
        reply["entries"] = entries.into();
    }
    Ok(reply)
}

fn mode_arg(args: &Map<String, Value>) -> Result<u32, String> {
    let mode = int_arg(args, "mode")?;
    u32::try_from(mode)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode {mode} is not a permission mode"))
}

/// c2vm-mkdir {"path", "mode"} → {}: an existing directory is fine; the mode is set either way.
pub fn mkdir(args: &Map<String, Value>) -> Result<Value, String> {
    let path = str_arg(args, "path")?;
    let mode = mode_arg(args)?;
    if let Err(e) = std::fs::create_dir(path) {
        if !(e.kind() == std::io::ErrorKind::AlreadyExists && std::path::Path::new(path).is_dir()) {
            return Err(os_error(path, &e));
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| os_error(path, &e))?;
    Ok(json!({}))
}

/// c2vm-symlink {"target", "path"} → {}.
pub fn symlink(args: &Map<String, Value>) -> Result<Value, String> {
    let target = str_arg(args, "target")?;
    let path = str_arg(args, "path")?;
    std::os::unix::fs::symlink(target, path).map_err(|e| os_error(path, &e))?;
    Ok(json!({}))
}

/// c2vm-chmod {"path", "mode", "uid"?, "gid"?} → {}: owner first (chown clears setuid bits),
/// then the mode; a symlink's mode is left alone (chmod would change its target).
pub fn chmod(args: &Map<String, Value>) -> Result<Value, String> {
    let path = str_arg(args, "path")?;
    let mode = mode_arg(args)?;
    let id = |key| -> Result<Option<u32>, String> {
        opt_int(args, key)?
            .map(|v| u32::try_from(v).map_err(|_| format!("argument '{key}' out of range")))
            .transpose()
    };
    let (uid, gid) = (id("uid")?, id("gid")?);
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(path, uid, gid).map_err(|e| os_error(path, &e))?;
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| os_error(path, &e))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| os_error(path, &e))?;
    }
    Ok(json!({}))
}
