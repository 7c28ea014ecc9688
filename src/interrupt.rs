//! Ctrl-C and SIGTERM during an event that acts. An event that has begun to
//! act (a dispatch written, ssh running) is finished and recorded, never
//! cancelled half-way: a launch cut short leaves nobody knowing whether the
//! host deployed. A signal that arrives before the first effect stops the
//! event there, with nothing done. The handler only sets a flag (and says
//! once on stderr what will happen); the engine reads it.

use std::sync::atomic::{AtomicI32, Ordering};

/// Each caught signal's bit (`1 << signal`): a Ctrl-C held back while a
/// launch runs may land after a later SIGTERM, and both are said.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.fetch_or(1 << signal, Ordering::SeqCst) == 0 {
        let text: &[u8] = b"selfdeploy: signal received: an event that has begun to act is finished and recorded, not cancelled half-way\n";
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        unsafe {
            libc::write(2, text.as_ptr().cast(), text.len());
        }
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP for the rest of the process.
pub fn install() {
    for signal in SIGNALS {
        // SAFETY: the handler only touches an atomic and calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A signal caught so far, if any (SIGINT before SIGTERM before SIGHUP).
pub fn received() -> Option<i32> {
    let caught = RECEIVED.load(Ordering::SeqCst);
    SIGNALS.into_iter().find(|s| caught & (1 << s) != 0)
}

/// Every signal caught so far, for messages: "SIGINT", "SIGINT and SIGTERM".
pub fn received_names() -> String {
    let caught = RECEIVED.load(Ordering::SeqCst);
    let names: Vec<&str> = SIGNALS
        .into_iter()
        .filter(|s| caught & (1 << s) != 0)
        .map(name)
        .collect();
    match names.as_slice() {
        [] => "no signal".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The signal's name, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
