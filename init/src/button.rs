//! The ACPI power button (`system_powerdown` in QEMU, a cloud's "stop"): the kernel's button
//! driver reports it as a key press on an input device named "Power Button"; init turns it into
//! SIGPWR for its own loop, which stops the app.
use std::io::Read;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// Watch every power-button device in a thread of its own.
pub fn watch() {
    for dir in std::fs::read_dir("/sys/class/input")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = dir.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let label = std::fs::read_to_string(dir.path().join("device/name")).unwrap_or_default();
        if label.trim() != "Power Button" {
            continue;
        }
        let Ok(mut device) = std::fs::File::open(format!("/dev/input/{name}")) else {
            continue;
        };
        std::thread::spawn(move || {
            // struct input_event on 64-bit: timeval (16 bytes), type, code (u16), value (i32)
            let mut event = [0u8; 24];
            while device.read_exact(&mut event).is_ok() {
                let kind = u16::from_ne_bytes([event[16], event[17]]);
                let code = u16::from_ne_bytes([event[18], event[19]]);
                let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    // SAFETY: a signal to init itself, taken by its sigtimedwait loop.
                    unsafe { libc::kill(1, libc::SIGPWR) };
                }
            }
        });
    }
}
