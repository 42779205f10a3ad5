//! The limit on open descriptors, which is the limit on connections.
//!
//! Every connection is a descriptor, and a process may hold only `RLIMIT_NOFILE` of them. The
//! *soft* limit, often 1024, is what applies; the *hard* limit is how far a process may raise
//! it by itself. An event loop meant for ten thousand connections raises it at start, as nginx
//! does with `worker_rlimit_nofile`.

use std::io;

use nix::errno::Errno;
use nix::libc::rlim_t;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// macOS refuses a soft limit above this (`OPEN_MAX`), even when the hard limit is unlimited.
const MACOS_OPEN_MAX: rlim_t = 10_240;

/// Sets the soft limit on open descriptors to `wanted`, or as high as allowed when `wanted` is
/// `None`, and returns the limit now in force (`wanted` above the hard limit gets the hard limit).
/// (`rlim_t` is unsigned on Linux and macOS, signed on FreeBSD; it is a plain integer either way.)
///
/// # Errors
///
/// When the limits cannot be read or set.
pub fn set_open_files_limit(wanted: Option<rlim_t>) -> io::Result<rlim_t> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = wanted.map_or(hard, |wanted| wanted.min(hard));
    if target == soft {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => Ok(target),
        Err(Errno::EINVAL) if wanted.is_none() && target > MACOS_OPEN_MAX => {
            let fallback = soft.max(MACOS_OPEN_MAX);
            setrlimit(Resource::RLIMIT_NOFILE, fallback, hard)?;
            Ok(fallback)
        }
        Err(errno) => Err(errno.into()),
    }
}
