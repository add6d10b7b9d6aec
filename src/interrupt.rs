//! Ctrl-C and SIGTERM: the handler only raises a flag; long loops and child-process waits poll it
//! and return [`Interrupted`], so that guards (staging tree, container, partial output) unwind and
//! clean up through ordinary `Drop`.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// The error a stage returns when the user interrupted it. `main` maps it to exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Route SIGINT, SIGTERM and SIGHUP to the flag. A second signal while cleaning up is ignored on
/// purpose: cleanup is short and must finish.
pub fn install() {
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Registration only fails for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(sig, Arc::clone(flag()));
    }
}

pub fn is_set() -> bool {
    flag().load(Ordering::Relaxed)
}

/// `Err(Interrupted)` once a signal arrived: call it in every long loop.
pub fn check() -> Result<(), Interrupted> {
    if is_set() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
