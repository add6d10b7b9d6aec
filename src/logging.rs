//! stderr logging for people: `-v` shows debug lines (commands run), `-q` only errors.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_module("c2vm", level)
        .filter_level(log::LevelFilter::Warn)
        // It logs every untrusted certificate as an error; c2vm says what to do about it.
        .filter_module("rustls_platform_verifier", log::LevelFilter::Off)
        .format_timestamp(None)
        .format_target(false)
        .parse_env("C2VM_LOG")
        .init();
    crate::progress::set_quiet(quiet);
}
