//! The `c2vm` binary: parse arguments, run the library, print the error chain, pick the exit code.
use clap::Parser;

fn main() {
    let cli = c2vm::cli::Cli::parse();
    c2vm::logging::init(cli.verbose, cli.quiet);
    c2vm::interrupt::install();
    match c2vm::run_cli(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let code = c2vm::exit_code_for(&err);
            if code == c2vm::EXIT_INTERRUPTED {
                c2vm::progress::say("c2vm: interrupted; cleaned up");
            } else {
                c2vm::progress::say(&format!("c2vm: error: {err:#}"));
            }
            std::process::exit(code);
        }
    }
}
