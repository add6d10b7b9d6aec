//! c2vm turns a container image into a bootable virtual-machine disk.
//!
//! The pipeline, one module per stage:
//! `source` (Docker Engine API or a tarball) → `kernel` (per-distro template adds a kernel) →
//! `rootfs` (safe unpack + guest setup) → `disk` (GPT, ext4 via mke2fs -d, FAT32 ESP) →
//! `boot` (SYSLINUX/systemd-boot or GRUB) → `output` (raw or qemu-img formats); `run` boots a disk.
pub mod boot;
pub mod cli;
pub mod cmd;
pub mod disk;
pub mod interrupt;
pub mod kernel;
pub mod logging;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod rootfs;
pub mod run;
pub mod source;

use anyhow::Result;
use cli::{Cli, Command};

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INTERRUPTED: i32 = 130;

/// Run a parsed command line; returns the process exit code.
pub fn run_cli(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Convert(args) => {
            let plan = plan::DiskPlan::from_args(&args.disk)?;
            match source::SourceRef::parse(&args.source)? {
                source::SourceRef::Tarball(path) => {
                    pipeline::require_root()?;
                    let unpacked = pipeline::unpack_tarball(&path, &plan)?;
                    pipeline::build_disk(unpacked, &plan)?;
                }
                source::SourceRef::Image(image) => {
                    pipeline::require_root()?;
                    let unpacked = pipeline::unpack_image(&image, &args.image, &plan)?;
                    pipeline::build_disk(unpacked, &plan)?;
                }
            }
            Ok(0)
        }
        Command::Build(args) => {
            let plan = plan::DiskPlan::from_args(&args.disk)?;
            pipeline::require_root()?;
            let tag = pipeline::build_user_image(&args)?;
            let unpacked = pipeline::unpack_image(&tag, &args.image, &plan)?;
            pipeline::build_disk(unpacked, &plan)?;
            Ok(0)
        }
        Command::Run(args) => run::run(&args, cli.verbose > 0),
    }
}

/// Exit code for an error: 130 when interrupted, 1 otherwise.
pub fn exit_code_for(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<interrupt::Interrupted>()) || interrupt::is_set() {
        EXIT_INTERRUPTED
    } else {
        EXIT_FAILURE
    }
}
