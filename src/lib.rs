//! c2vm turns a container image into a bootable virtual-machine disk.
//!
//! A conversion runs its stages in this order: `source` (an engine, a transport or a tarball) →
//! `kernel` (a per-distro template adds one) → `rootfs` (the stream edit and guest setup) →
//! `disk` (GPT, ext4 by `mke2fs -d`, LUKS2, the FAT32 ESP) → `boot` (SYSLINUX/systemd-boot or
//! GRUB, and the guest's side of booting) → `output` (formats, containerDisk); `convert` holds
//! the options, the choices and the pipeline, and `run` boots a disk.
//!
//! Imports point down these layers, never up and never across (tests/layers.rs reads every
//! `use crate::` and `super::` against this list; a stage builds on those listed below it):
//! 1. `cli`
//! 2. `convert`, `convert::pipeline`, `run`
//! 3. `instance`
//! 4. `convert::assemble`
//! 5. `convert::input`
//! 6. `convert::plan`
//! 7. `convert::options`
//! 8. `convert::choose`, `convert::report`
//! 9. `output`
//! 10. `boot`
//! 11. `disk`
//! 12. `rootfs`
//! 13. `kernel`
//! 14. `source`
//! 15. helpers, which may also use each other: `arch`, `cmd`, `credentials`, `host_tools`,
//!     `image`, `interrupt`, `logging`, `progress`, `raw_terminal`, `secret`, `tar_rules`,
//!     `testutil`, `units`, `workspace`
//!
//! Only the command line is public; the fuzz targets get the unpacker and the layer merge
//! through [`fuzzing`]. Without the default feature `cli`, only those are built (see
//! Cargo.toml).
// Without the `cli` feature (the fuzz targets' build), only what `fuzzing` reaches is built, and
// much of it goes unused.
#![cfg_attr(not(feature = "cli"), allow(dead_code, unused_imports))]
mod arch;
mod boot;
#[cfg(feature = "cli")]
mod cli;
mod cmd;
#[cfg(feature = "cli")]
mod convert;
mod credentials;
mod disk;
mod host_tools;
mod image;
#[cfg(feature = "cli")]
mod instance;
mod interrupt;
#[cfg(feature = "cli")]
mod kernel;
#[cfg(feature = "cli")]
mod logging;
#[cfg(feature = "cli")]
mod output;
mod progress;
#[cfg(feature = "cli")]
mod raw_terminal;
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
            convert::pipeline::convert(&args.source, &args.options)?;
            Ok(0)
        }
        Command::Build(args) => {
            convert::pipeline::build(
                &args.context,
                args.dockerfile.as_deref(),
                &args.build_args,
                &args.options,
            )?;
            Ok(0)
        }
        Command::Run(args) => run::run(&args, cli.verbose > 0),
        Command::Exec(args) => instance::exec(&args),
        Command::Cp(args) => instance::cp(&args).map(|()| 0),
        Command::Wait(args) => instance::wait(&args).map(|()| 0),
        Command::Logs(args) => instance::logs(&args).map(|()| 0),
        Command::Ps => instance::ps().map(|()| 0),
        Command::Stop(args) => instance::stop(&args).map(|()| 0),
        Command::Kill(args) => instance::kill(&args).map(|()| 0),
        Command::Save(args) => instance::saved::save(&args.name, &args.file).map(|()| 0),
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
            &crate::boot::guest::edit_policy(None, false),
            |_| Ok(()),
        )?;
        crate::rootfs::unpack::unpack(edited.as_slice(), root)
    }

    /// The unpacker alone, on the raw archive: its own checks are the second line of defence.
    pub use crate::rootfs::unpack::unpack as unpack_raw;

    /// An image's layer tars (bottom first) merged into one stream, as a transport's are.
    pub use crate::source::layers::merge_in_memory as merge;
}
