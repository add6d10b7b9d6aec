//! The output stage: the disk is built under a temporary name beside the output and renamed into
//! place only when complete; raw stays sparse, other formats go through `qemu-img convert`.
use crate::cli::DiskFormat;
use crate::cmd::Cmd;
use crate::progress::Stage;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub fn check_host_tools(format: DiskFormat) -> Result<()> {
    if format != DiskFormat::Raw {
        crate::cmd::require("qemu-img")?;
    }
    Ok(())
}

/// qemu-img's name for a format.
pub fn qemu_format(format: DiskFormat) -> &'static str {
    match format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Vmdk => "vmdk",
        DiskFormat::Vdi => "vdi",
        DiskFormat::Vhdx => "vhdx",
        DiskFormat::Vhd => "vpc",
    }
}

/// A file being written beside the final output; removed on drop unless committed.
pub struct PendingOutput {
    temp: Option<tempfile::TempPath>,
    target: PathBuf,
}

impl PendingOutput {
    pub fn new(target: &Path) -> Result<PendingOutput> {
        let dir = crate::plan::output_dir(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".c2vm-partial")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary output in {}", dir.display()))?
            .into_temp_path();
        Ok(PendingOutput {
            temp: Some(temp),
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        self.temp.as_deref().unwrap_or(&self.target)
    }

    /// Rename into place (atomically replacing an old output when --force was given).
    pub fn commit(mut self, force: bool) -> Result<()> {
        if !force && self.target.exists() {
            anyhow::bail!(
                "{} appeared while c2vm was working; not overwriting it (use --force)",
                self.target.display()
            );
        }
        let temp = self.temp.take().context("output already committed")?;
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", temp.display()))?;
        temp.persist(&self.target)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming the finished disk to {}", self.target.display()))?;
        Ok(())
    }
}

/// Convert the finished raw image into `dest` in `format`, showing qemu-img's progress.
pub fn convert(raw: &Path, dest: &Path, format: DiskFormat) -> Result<()> {
    let stage = Stage::bytes(&format!("Converting to {}", qemu_format(format)), 100);
    Cmd::new("qemu-img", "Converting the disk")
        .args(["convert", "-p", "-f", "raw", "-O", qemu_format(format)])
        .arg(raw)
        .arg(dest)
        .run_streaming(|line| {
            // "    (42.00/100%)"
            if let Some(pct) = line
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.split('/').next())
            {
                if let Ok(p) = pct.parse::<f64>() {
                    stage.set_position(p as u64);
                }
            }
        })?;
    stage.done();
    Ok(())
}
