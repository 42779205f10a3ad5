//! The limit on open descriptors, which is the limit on connections.
//!
//! Every connection is a descriptor, and a process may hold only `RLIMIT_NOFILE` of them. The
//! *soft* limit, often 1024, is what applies; the *hard* limit is how far a process may raise
//! it by itself. An event loop meant for ten thousand connections raises it at start, as nginx
//! does with `worker_rlimit_nofile`.

use std::io;

use nix::libc::rlim_t;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Sets the soft limit on open descriptors to `wanted`, or to the hard limit when `wanted` is
/// `None`, and returns the limit now in force (`wanted` above the hard limit gets the hard limit).
///
/// # Errors
///
/// When the limits cannot be read or set (macOS refuses more than its `kern.maxfilesperproc`,
/// even under an unlimited hard limit).
/// (`rlim_t` is unsigned on Linux and macOS, signed on FreeBSD; it is a plain integer either way.)
pub fn set_open_files_limit(wanted: Option<rlim_t>) -> io::Result<rlim_t> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = wanted.map_or(hard, |wanted| wanted.min(hard));
    if target != soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    Ok(target)
}
