//! The command line: subcommands and their arguments, nothing else. The option groups are
//! declared with their commands (`options` for convert and build, `run`'s own) and flattened in
//! here; `plan` turns convert's into checked values.
use crate::convert::options::ConvertOptions;
use crate::instance::options::{
    CpArgs, ExecArgs, KillArgs, LogsArgs, SaveArgs, StopArgs, WaitArgs,
};
use crate::run::RunArgs;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "c2vm",
    version,
    about = "Turn a container image into a bootable VM disk (BIOS and UEFI), without loop devices or mounts",
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl-C, SIGTERM).\n\
                  With `run --exec`, the exit code is the command's own."
)]
pub struct Cli {
    /// More output: -v shows every command run and the whole build log
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert an image (or a root filesystem tarball) into a bootable disk
    Convert(ConvertArgs),
    /// Build a Dockerfile through the Docker Engine API, then convert the result
    Build(BuildArgs),
    /// Boot a disk in QEMU with its serial console on this terminal (or, with -d, in the
    /// background)
    Run(RunArgs),
    /// Run a command in a running VM (`run -d`): its stdout, stderr and exit status
    Exec(ExecArgs),
    /// Copy files between the host and a running VM: `c2vm cp NAME:/etc/os-release .`
    Cp(CpArgs),
    /// Wait until a running VM is ready: a unit active, a port listening, a file, console text
    Wait(WaitArgs),
    /// Print a VM's console (-f: follow it)
    Logs(LogsArgs),
    /// List the VMs started with `run -d`
    Ps,
    /// Stop a VM: the power button, then QEMU killed after --time; nothing is left
    Stop(StopArgs),
    /// Kill a VM's QEMU at once; nothing is left
    Kill(KillArgs),
    /// Stop a running VM into a state file that `c2vm run -d --restore FILE` starts again
    Save(SaveArgs),
    /// Print a shell completion script: `c2vm completions bash > /etc/bash_completion.d/c2vm`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (c2vm.1 and one per subcommand) into DIR, or c2vm.1 to standard
    /// output
    Man { dir: Option<PathBuf> },
}

/// `c2vm completions SHELL`: from the same definitions as the parser, so they never drift.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "c2vm", &mut std::io::stdout());
}

/// `c2vm man [DIR]`: roff pages from the same definitions (clap_mangen).
pub fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let command = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        return clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("writing the manual page");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, command: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_mangen::Man::new(command)
            .render(&mut file)
            .with_context(|| format!("writing {}", path.display()))
    };
    for sub in command.get_subcommands() {
        let name = format!("c2vm-{}", sub.get_name());
        write(&name, sub.clone().name(name.clone()))?;
    }
    write("c2vm", command)
}

#[derive(Args, Debug, Clone)]
pub struct ConvertArgs {
    /// What to convert: an image in the engine at DOCKER_HOST (`debian:latest`), or with no
    /// engine `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`, `docker-archive:PATH[:REF]`,
    /// `docker://REGISTRY/NAME[:TAG]`; or `rootfs:PATH`, a tarball of a whole root filesystem
    /// with a kernel in /boot
    pub source: String,
    #[command(flatten)]
    pub options: ConvertOptions,
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The build context directory
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (default: Dockerfile)
    #[arg(short = 'f', long = "file")]
    pub dockerfile: Option<PathBuf>,
    /// A build argument, KEY=VALUE; may be repeated
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    #[command(flatten)]
    pub options: ConvertOptions,
}
