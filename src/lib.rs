//! c2vm turns a container image into a bootable virtual-machine disk.
//!
//! Modules point one way: `cli` → `pipeline` → the stages → the helpers.
//! - Stages, in pipeline order: `source` (an engine or a tarball) → `kernel` (a per-distro
//!   template adds a kernel) → `rootfs` (safe unpack and guest setup) → `disk` (GPT, ext4 by
//!   `mke2fs -d`, FAT32 ESP) → `boot` (SYSLINUX/systemd-boot or GRUB) → `output` (raw or
//!   qemu-img formats); `run` boots a disk.
//! - Checked options: `plan`, with `credentials` and `workspace`; `report` tells the result.
//! - Helpers every stage may use: `arch` (what differs between amd64 and arm64), `cmd`,
//!   `progress`, `interrupt`, `units`, `image`, `tar_rules`.
//!
//! Only the command line is public; the fuzz targets get the unpacker and the layer merge
//! through [`fuzzing`]. Without the default feature `cli`, only those are built (see
//! Cargo.toml).
// Without the `cli` feature (the fuzz targets' build), only what `fuzzing` reaches is built, and
// much of it goes unused.
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]
mod arch;
#[cfg(feature = "cli")]
mod assemble;
mod boot;
#[cfg(feature = "cli")]
mod choose;
#[cfg(feature = "cli")]
mod cli;
mod cmd;
#[cfg(feature = "cli")]
mod containerdisk;
mod credentials;
mod disk;
mod host_tools;
mod image;
#[cfg(feature = "cli")]
mod input;
mod interrupt;
#[cfg(feature = "cli")]
mod kernel;
#[cfg(feature = "cli")]
mod logging;
#[cfg(feature = "cli")]
mod options;
#[cfg(feature = "cli")]
mod output;
#[cfg(feature = "cli")]
mod pipeline;
#[cfg(feature = "cli")]
mod plan;
mod progress;
#[cfg(feature = "cli")]
mod report;
mod rootfs;
#[cfg(feature = "cli")]
mod run;
mod secret;
mod source;
mod tar_rules;
#[cfg(test)]
mod testutil;
mod units;
#[cfg(feature = "cli")]
mod workspace;

#[cfg(feature = "cli")]
pub use cli::Cli;
#[cfg(feature = "cli")]
use cli::Command;

/// What a `Debug` of a secret-holding type shows in the secret's place.
const REDACTED: &str = "<redacted>";

#[cfg(feature = "cli")]
const EXIT_FAILURE: i32 = 1;
#[cfg(feature = "cli")]
const EXIT_INTERRUPTED: i32 = 130;

/// Run a parsed command line: logging, signal handling, the command, and its error printed as
/// one line. Returns the process exit code.
#[cfg(feature = "cli")]
pub fn main(cli: Cli) -> i32 {
    logging::init(cli.verbose, cli.quiet);
    interrupt::install();
    match run_command(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = exit_code_for(&err);
            if code == EXIT_INTERRUPTED {
                progress::say("c2vm: interrupted; cleaned up");
            } else {
                progress::say(&format!("c2vm: error: {err:#}"));
            }
            code
        }
    }
}

#[cfg(feature = "cli")]
fn run_command(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Convert(args) => {
            pipeline::convert(&args.source, &args.options)?;
            Ok(0)
        }
        Command::Build(args) => {
            pipeline::build(
                &args.context,
                args.dockerfile.as_deref(),
                &args.build_args,
                &args.options,
            )?;
            Ok(0)
        }
        Command::Run(args) => run::run(&args, cli.verbose > 0),
        Command::Completions { shell } => {
            cli::completions(shell);
            Ok(0)
        }
        Command::Man { dir } => {
            cli::man(dir.as_deref())?;
            Ok(0)
        }
    }
}

/// Exit code for an error: 130 when interrupted, 1 otherwise.
#[cfg(feature = "cli")]
fn exit_code_for(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<interrupt::Interrupted>()) || interrupt::is_set() {
        EXIT_INTERRUPTED
    } else {
        EXIT_FAILURE
    }
}

/// For `fuzz/fuzz_targets/` only: not part of c2vm's interface.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// What the staging path does with an archive: the stream edit (its hostile-archive policy
    /// first), then the safe unpacker into `root`.
    pub fn unpack(archive: &[u8], root: &Path) -> anyhow::Result<()> {
        let mut edited = Vec::new();
        crate::rootfs::edit::edit(
            archive,
            &mut edited,
            &crate::boot::guest::edit_policy(None),
            |_| Ok(()),
        )?;
        crate::rootfs::unpack::unpack(edited.as_slice(), root)
    }

    /// The unpacker alone, on the raw archive: its own checks are the second line of defence.
    pub use crate::rootfs::unpack::unpack as unpack_raw;

    /// An image's layer tars (bottom first) merged into one stream, as a transport's are.
    pub use crate::source::layers::merge_in_memory as merge;
}
