//! The options of the commands that drive a running VM: exec, cp, wait, logs, ps, stop, kill.
use clap::Args;
use std::path::PathBuf;

/// `c2vm exec`.
#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The VM (`c2vm run -d --name NAME`)
    pub name: String,
    /// Pass standard input to the command
    #[arg(short, long)]
    pub interactive: bool,
    /// A terminal in the guest, sized as c2vm's: output is one stream, and with -i keys go to
    /// it as typed (Ctrl-C included)
    #[arg(short, long)]
    pub tty: bool,
    /// An environment variable for the command, KEY=VALUE; may be repeated
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run as this user (name or uid, with :group) [default: root]
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// The command's working directory [default: the user's home, else /]
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `c2vm cp`.
#[derive(Args, Debug, Clone)]
pub struct CpArgs {
    /// What to copy: a host path, or NAME:PATH in a VM
    pub source: String,
    /// Where: NAME:PATH in a VM, or a host path (one side is the VM's)
    pub destination: String,
}

/// `c2vm wait`: one condition, until it holds or the timeout.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("condition").required(true).multiple(false)))]
pub struct WaitArgs {
    pub name: String,
    /// A systemd unit is active (fails at once if it failed)
    #[arg(long, group = "condition", value_name = "UNIT")]
    pub unit: Option<String>,
    /// A TCP port listens in the guest
    #[arg(long, group = "condition", value_name = "PORT")]
    pub port: Option<u16>,
    /// A file exists in the guest
    #[arg(long, group = "condition", value_name = "PATH")]
    pub file: Option<String>,
    /// The console shows this regular expression
    #[arg(long, group = "condition", value_name = "REGEX")]
    pub console: Option<String>,
    /// This shell command succeeds in the guest (`sh -c`)
    #[arg(long, group = "condition", value_name = "CMD")]
    pub exec: Option<String>,
    /// Give up after this many seconds, saying what was last seen
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// `c2vm logs`.
#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    pub name: String,
    /// Follow the console until the VM stops (or Ctrl-C)
    #[arg(short, long)]
    pub follow: bool,
}

/// `c2vm stop`.
#[derive(Args, Debug, Clone)]
pub struct StopArgs {
    pub name: String,
    /// Seconds between the power button and killing QEMU
    #[arg(short, long, default_value_t = 60)]
    pub time: u64,
}

/// `c2vm save`.
#[derive(Args, Debug, Clone)]
pub struct SaveArgs {
    pub name: String,
    /// The state file to write (it holds the guest's memory: 0600)
    pub file: PathBuf,
}

/// `c2vm kill`.
#[derive(Args, Debug, Clone)]
pub struct KillArgs {
    pub name: String,
}

/// Where a file is: on the host, or in a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Host(PathBuf),
    Guest { name: String, path: String },
}

impl Place {
    /// `NAME:PATH` is a VM's (a name holds no `/`); anything else the host's.
    pub fn parse(text: &str) -> Place {
        match text.split_once(':') {
            Some((name, path))
                if !name.is_empty() && !name.contains('/') && path.starts_with('/') =>
            {
                Place::Guest {
                    name: name.to_string(),
                    path: path.to_string(),
                }
            }
            _ => Place::Host(PathBuf::from(text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_a_vms_when_it_names_one() {
        assert_eq!(
            Place::parse("web:/etc/hostname"),
            Place::Guest {
                name: "web".into(),
                path: "/etc/hostname".into()
            }
        );
        assert_eq!(Place::parse("./a:b"), Place::Host("./a:b".into()));
        assert_eq!(Place::parse("/tmp/x"), Place::Host("/tmp/x".into()));
        assert_eq!(Place::parse("web:rel"), Place::Host("web:rel".into()));
    }
}
