//! The touches of the operating system that std does not offer: free disk space (`statvfs`), available
//! memory (`/proc/meminfo` and the cgroup limit) and a SIGINT/SIGTERM flag.
//!
//! Safety contract: `statvfs` gets a NUL-terminated path and a zeroed out-struct it fills; the signal
//! handler only stores to an atomic (async-signal-safe).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Route SIGINT and SIGTERM to [`interrupted`] so a conversion can stop between chunks and clean up.
pub fn install_interrupt_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: see the module contract.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Route SIGINT (Ctrl-C) alone to the flag; SIGTERM keeps its default (the chat REPL: Ctrl-C stops an
/// answer, a termination request still terminates).
pub fn install_sigint_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: see the module contract.
    unsafe {
        libc::signal(libc::SIGINT, handler);
    }
}

/// The flag itself, for APIs that take a cancel flag (`Session::generate`).
pub fn interrupt_flag() -> &'static AtomicBool {
    &INTERRUPTED
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Ask a running conversion to stop (what SIGINT does), e.g. from another thread of an embedding program.
/// Process-wide; [`clear_interrupt`] re-arms it.
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn available_space(dir: &Path) -> std::io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: see the module contract.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Memory this process may still take: Linux's `MemAvailable`, lowered to what the cgroup (v2 `memory.max`
/// − `memory.current`, or v1 `limit_in_bytes` − `usage_in_bytes`) leaves. `None` where neither is readable.
pub fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = read("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    });
    let cgroup = match (num(read("/sys/fs/cgroup/memory.max")), num(read("/sys/fs/cgroup/memory.current"))) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => match (
            num(read("/sys/fs/cgroup/memory/memory.limit_in_bytes")),
            num(read("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
        ) {
            // v1 reports "no limit" as a huge number
            (Some(max), Some(cur)) if max < 1 << 60 => Some(max.saturating_sub(cur)),
            _ => None,
        },
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
