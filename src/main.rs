//! The `c2vm` binary: parse arguments, hand them to the library, exit with its code.
use clap::Parser;

fn main() {
    std::process::exit(c2vm::main(c2vm::Cli::parse()));
}
