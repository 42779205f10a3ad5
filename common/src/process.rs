//! Ending a forked child.

use std::io::Write;

/// Ends a forked child at once with `status`, after flushing its own output.
///
/// `_exit`, not `std::process::exit`: the child is a copy of its parent, and `exit` would run
/// the parent's `atexit` handlers and flush stdio buffers that the parent also owns, printing
/// their contents twice. The child flushes what it wrote itself and leaves the rest alone.
pub fn exit_child(status: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) is async-signal-safe and always sound to call; it does not return.
    unsafe { libc::_exit(status) }
}
