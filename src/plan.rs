//! Validate first, then act: raw CLI arguments become a checked plan (sizes parsed, output path
//! writable, password hashed, host tools present) before c2vm touches Docker or writes a disk.
use crate::cli::{Bootloader, DiskArgs, DiskFormat};
use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};

pub const MIB: u64 = 1024 * 1024;

/// `--size`: what the files need plus headroom, or a fixed whole-disk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRequest {
    Auto,
    Bytes(u64),
}

/// Everything the disk stages need, checked.
#[derive(Debug)]
pub struct DiskPlan {
    pub output: PathBuf,
    pub format: DiskFormat,
    pub force: bool,
    pub size: SizeRequest,
    pub esp_size: u64,
    pub bootloader: Bootloader,
    pub hostname: String,
    /// SHA-512 crypt hash of the root password; the plain text is dropped as soon as it is hashed.
    pub root_password_hash: Option<String>,
    pub ssh_key: Option<String>,
    pub dns: Vec<std::net::IpAddr>,
    pub append_cmdline: String,
    pub workdir: PathBuf,
    /// Neither --workdir nor TMPDIR was given: c2vm may stage in RAM (see [`DiskPlan::staging_dir`]).
    pub workdir_is_default: bool,
}

impl DiskPlan {
    pub fn from_args(args: &DiskArgs) -> Result<DiskPlan> {
        let format = match args.format {
            Some(f) => f,
            None => format_from_extension(&args.output)?,
        };
        check_output_path(&args.output, args.force)?;
        let size = parse_size_request(&args.size)?;
        let esp_size = parse_size(&args.esp_size).context("--esp-size")?;
        if esp_size < 64 * MIB || esp_size % MIB != 0 {
            bail!(
                "--esp-size must be a whole number of MiB, at least 64M (got {})",
                args.esp_size
            );
        }
        check_hostname(&args.hostname)?;
        let password = if let Some(path) = &args.password_file {
            Some(read_password_file(path)?)
        } else if args.password_stdin {
            Some(
                read_first_line(std::io::stdin().lock())
                    .context("reading the password from stdin")?,
            )
        } else {
            None
        };
        let root_password_hash = password.map(|p| hash_password(&p)).transpose()?;
        let ssh_key = args.ssh_key.as_deref().map(read_ssh_key).transpose()?;
        let workdir_is_default = args.workdir.is_none() && std::env::var_os("TMPDIR").is_none();
        let workdir = match &args.workdir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir(),
        };
        if !workdir.is_dir() {
            bail!(
                "work directory {} does not exist; create it or choose another with --workdir",
                workdir.display()
            );
        }
        let plan = DiskPlan {
            output: args.output.clone(),
            format,
            force: args.force,
            size,
            esp_size,
            bootloader: args.bootloader,
            hostname: args.hostname.clone(),
            root_password_hash,
            ssh_key,
            dns: args.dns.clone(),
            append_cmdline: args.append_cmdline.trim().to_string(),
            workdir,
            workdir_is_default,
        };
        crate::cmd::require("mke2fs")?;
        crate::boot::check_host_tools(plan.bootloader)?;
        crate::output::check_host_tools(plan.format)?;
        Ok(plan)
    }
}

impl DiskPlan {
    /// Where to put the staging tree for about `expected` bytes of files. Unpacking ~15,000
    /// files is bound by the filesystem's metadata speed (18 s on a virtual disk, 4 s on tmpfs),
    /// so without --workdir or TMPDIR, c2vm stages in /dev/shm when it is a tmpfs with room for the
    /// tree and the raw disk three times over and the machine has that much memory available.
    pub fn staging_dir(&self, expected: u64) -> PathBuf {
        let shm = Path::new("/dev/shm");
        if self.workdir_is_default && expected > 0 {
            let need = expected.saturating_mul(3) + 512 * MIB;
            if is_tmpfs_with_room(shm, need) && mem_available().is_some_and(|m| m > need + need / 2)
            {
                log::debug!(
                    "staging in {} (tmpfs, {} MiB needed)",
                    shm.display(),
                    need / MIB
                );
                return shm.to_path_buf();
            }
        }
        self.workdir.clone()
    }
}

// f_type is i64 on x86-64 glibc but narrower elsewhere: the cast is for portability.
#[allow(clippy::unnecessary_cast)]
fn is_tmpfs_with_room(dir: &Path, need: u64) -> bool {
    match rustix::fs::statfs(dir) {
        Ok(st) => {
            const TMPFS_MAGIC: i64 = 0x0102_1994;
            st.f_type as i64 == TMPFS_MAGIC && st.f_bavail.saturating_mul(st.f_bsize as u64) >= need
        }
        Err(_) => false,
    }
}

/// MemAvailable from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn format_from_extension(output: &Path) -> Result<DiskFormat> {
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Ok(match ext.as_str() {
        "img" | "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        "vmdk" => DiskFormat::Vmdk,
        "vdi" => DiskFormat::Vdi,
        "vhdx" => DiskFormat::Vhdx,
        "vhd" | "vpc" => DiskFormat::Vhd,
        _ => bail!(
            "cannot tell the disk format from `{}`; use an extension (.img, .raw, .qcow2, .vmdk, .vdi, .vhdx, .vhd) or --format",
            output.display()
        ),
    })
}

/// The output must not exist (unless --force) and its directory must exist and be writable:
/// found out now, not after minutes of work.
fn check_output_path(output: &Path, force: bool) -> Result<()> {
    if output.exists() && !force {
        bail!(
            "{} already exists; use --force to overwrite it",
            output.display()
        );
    }
    if output.is_dir() {
        bail!(
            "{} is a directory; give a file name for the disk",
            output.display()
        );
    }
    let dir = output_dir(output);
    if !dir.is_dir() {
        bail!(
            "the output directory {} does not exist; create it first",
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".c2vm-probe")
        .tempfile_in(&dir)
        .with_context(|| format!("the output directory {} is not writable", dir.display()))?;
    Ok(())
}

pub fn output_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub fn parse_size_request(text: &str) -> Result<SizeRequest> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(SizeRequest::Auto);
    }
    parse_size(text)
        .map(SizeRequest::Bytes)
        .context("--size takes `auto` or a size such as 4G, 1536M, 2GiB")
}

/// Parse `4G`, `1536M`, `2GiB`, `512MB`, `1073741824` (units are powers of 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        bail!("`{text}` is not a size");
    }
    let value: u64 = num
        .parse()
        .with_context(|| format!("`{text}` is not a size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => bail!("`{text}` is not a size: unknown unit `{unit}` (use K, M, G or T)"),
    };
    value
        .checked_mul(1u64 << shift)
        .with_context(|| format!("`{text}` is too large"))
}

fn check_hostname(name: &str) -> Result<()> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > 253 || !name.split('.').all(ok_label) {
        bail!("`{name}` is not a valid hostname (letters, digits and `-`, dot-separated labels of at most 63)");
    }
    Ok(())
}

fn read_first_line(reader: impl BufRead) -> Result<String> {
    let line = reader.lines().next().transpose()?.unwrap_or_default();
    let line = line.trim_end_matches('\r').to_string();
    if line.is_empty() {
        bail!("the password is empty");
    }
    Ok(line)
}

pub fn read_password_file(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the password file {}", path.display()))?;
    read_first_line(std::io::BufReader::new(file))
        .with_context(|| format!("reading the password file {}", path.display()))
}

/// SHA-512 crypt (`$6$`), what Debian's passwd and chpasswd write.
pub fn hash_password(password: &str) -> Result<String> {
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e:?}"))?;
    sha_crypt::sha512_simple(password, &params)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e:?}"))
}

fn read_ssh_key(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the SSH public key {}", path.display()))?;
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if keys.is_empty() || keys.iter().any(|k| k.contains("PRIVATE KEY")) {
        bail!("{} is not an SSH public key (expected lines like `ssh-ed25519 AAAA... comment`; give the .pub file)", path.display());
    }
    Ok(keys.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("1536M").unwrap(), 1536 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("big").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert_eq!(parse_size_request("auto").unwrap(), SizeRequest::Auto);
    }

    #[test]
    fn format_follows_extension() {
        assert_eq!(
            format_from_extension(Path::new("a.qcow2")).unwrap(),
            DiskFormat::Qcow2
        );
        assert_eq!(
            format_from_extension(Path::new("a.IMG")).unwrap(),
            DiskFormat::Raw
        );
        assert_eq!(
            format_from_extension(Path::new("a.vhd")).unwrap(),
            DiskFormat::Vhd
        );
        assert!(format_from_extension(Path::new("a.iso")).is_err());
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(check_hostname("c2vm").is_ok());
        assert!(check_hostname("web-1.example.org").is_ok());
        assert!(check_hostname("-bad").is_err());
        assert!(check_hostname("bad_name").is_err());
        assert!(check_hostname("").is_err());
    }

    #[test]
    fn password_hash_verifies_and_hides_the_text() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$6$"));
        assert!(!hash.contains("s3cret"));
        assert!(sha_crypt::sha512_check("s3cret", &hash).is_ok());
        assert!(sha_crypt::sha512_check("other", &hash).is_err());
    }

    #[test]
    fn password_file_takes_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\r\nsecond\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "first");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_password_file(&path).is_err());
    }
}
