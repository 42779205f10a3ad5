//! Replacing the binary without closing the port: `kill -USR2 <master>`, nginx's binary upgrade.
//!
//! A reload (`SIGHUP`) replaces the workers, but they are forks of the running master: a
//! rebuilt binary only runs after a stop and a start, and meanwhile the port is closed and the
//! connections waiting in its backlog are lost. On `SIGUSR2` the master starts its successor
//! from the binary on disk instead, and hands it the listening socket, which never closes:
//!
//! ```text
//! old master: fork; the child clears FD_CLOEXEC on the listening socket and on the write end
//!             of a "ready" pipe, names both in the environment, and execs the binary
//! new master: adopts the socket (common::listen::inherited), forks its workers; once each has
//!             said it can accept (crate::ready), writes its pid to the ready pipe
//! old master: reads it, asks its own workers to finish their requests and exit (--grace-ms),
//!             exits 0; the new master, its child until now, is re-parented to init
//! ```
//!
//! Both masters' workers accept from the same socket for a moment, which is harmless: each
//! connection goes to one of them. If the new binary fails (it exits, or is not ready within
//! `--upgrade-timeout-ms`, then it is sent `SIGTERM`), the old master logs one line and goes on
//! serving: an upgrade never leaves the port dead. (nginx waits for the operator instead; a
//! bounded wait lets the old master decide.)
//!
//! Inheritance is one of two ways to hand a socket to another program. The other sends the
//! descriptor over a Unix socket (`sendmsg` with `SCM_RIGHTS`), which also works between
//! processes that are not parent and child: Envoy's hot restart and HAProxy's `-x` take the
//! listeners from the running process that way. Inheritance needs no protocol, only a number
//! in the environment, so nginx and we use it.
//!
//! With `--listen reuseport` the old master has no socket to hand over (its workers each own
//! one): the child binds a fresh socket of the `SO_REUSEPORT` group for its successor, which
//! its first worker takes, as at start-up. Bound, not listening: the first worker makes it
//! listen when it can accept. A socket of the group that listens gets its share of new
//! connections at once, and a new binary that failed or hung would leave them queued there,
//! never accepted, until they were reset. The old workers' sockets close when they exit, and
//! a connection still queued in one of them then is reset by the kernel (unless
//! `net.ipv4.tcp_migrate_req` is 1): nginx has the same window. We make it small by retiring
//! the old workers only once every new worker has bound its socket.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::thread;
use std::time::{Duration, Instant};

use common::Signals;
use common::listen::{
    INHERITED_VARIABLE, close_unadopted, inherited_value, keep_across_exec, named_values,
    own_inherited,
};
use common::log;
use common::process::exit_child;
use common::wait::wait_readable;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

/// Where the old master tells the new one how to report back: `ready=FD;generation=N`, the
/// write end of the ready pipe and the new master's generation.
pub const UPGRADE_VARIABLE: &str = "FORK_TO_PROXY_UPGRADE";

/// In the old master: the successor being started.
pub struct Upgrade {
    /// The new master (our child until we exit).
    pub pid: Pid,
    /// The read end of the ready pipe: the new master's pid arrives on it once it is ready;
    /// end of file comes first if it exits before that.
    ready: OwnedFd,
    /// Given up on after this.
    pub deadline: Instant,
    /// How long it was given (`--upgrade-timeout-ms`), for the line that says it was too slow.
    timeout: Duration,
    /// How it ended, once reaped (for the one line that says the upgrade failed).
    pub ended: Option<String>,
}

/// How an upgrade stands.
pub enum Progress {
    Waiting,
    /// The new master serves: this one can retire.
    Ready,
    /// One line saying why; the old master goes on serving.
    Failed(String),
}

impl Upgrade {
    /// Forks and execs the binary this process was started from, handing it `listeners`
    /// (by name, see [`common::listen::inherited`]) and the generation after `generation`; it
    /// has `timeout` to be ready. `listeners` runs in the child before the exec, to open what
    /// only the child may hold.
    ///
    /// # Errors
    ///
    /// When the pipe cannot be created or the fork fails.
    pub fn start(
        signals: Signals,
        generation: u64,
        timeout: Duration,
        listeners: impl FnOnce() -> Result<Vec<(&'static str, OwnedFd)>, String>,
    ) -> Result<Upgrade, String> {
        let (read, write) = nix::unistd::pipe()
            .map_err(|errno| format!("cannot create a pipe: {}", errno.desc()))?;
        for end in [&read, &write] {
            fcntl(end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(|errno| format!("cannot set up the pipe: {}", errno.desc()))?;
        }
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|errno| format!("cannot set up the pipe: {}", errno.desc()))?;
        // SAFETY: the master is single-threaded (see `crate::master`, "Fork safety"), so the
        // child is a complete copy and may allocate, format and log until it execs.
        match unsafe { signals.fork() } {
            Ok(ForkResult::Child) => {
                drop(read);
                let why = exec_successor(write, generation + 1, listeners);
                log::error(format_args!("master: upgrade: {why}"));
                exit_child(127);
            }
            Ok(ForkResult::Parent { child }) => Ok(Upgrade {
                pid: child,
                ready: read,
                deadline: Instant::now() + timeout,
                timeout,
                ended: None,
            }),
            Err(errno) => Err(format!("cannot fork: {}", errno.desc())),
        }
    }

    /// Readable when the new master reports, or exits.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// Reads what the new master said, if anything.
    pub fn progress(&mut self) -> Progress {
        let mut message = [0u8; 4];
        match nix::unistd::read(&self.ready, &mut message) {
            Ok(0) => {
                self.collect();
                Progress::Failed(format!(
                    "the new master (pid {}) {} before it was ready",
                    self.pid,
                    self.ended.as_deref().unwrap_or("closed its pipe")
                ))
            }
            Ok(_) => Progress::Ready,
            Err(Errno::EAGAIN | Errno::EINTR) if Instant::now() < self.deadline => {
                Progress::Waiting
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Progress::Failed(format!(
                "the new master (pid {}) was not ready within {} s",
                self.pid,
                self.timeout.as_secs_f64()
            )),
            Err(errno) => Progress::Failed(format!(
                "cannot read the new master's answer: {}",
                errno.desc()
            )),
        }
    }
}

impl Upgrade {
    /// After end of file on the pipe: the new master is exiting (the kernel closes a process's
    /// descriptors just before it becomes a zombie), so it can be reaped within a moment, and
    /// the one line that reports the failure can say how it ended. Waits 20 ms at most.
    fn collect(&mut self) {
        for _ in 0..20 {
            if self.ended.is_some() {
                return;
            }
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.ended = Some(format!("exited with status {code}"));
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    self.ended = Some(format!("was killed by {}", signal.as_str()));
                }
                Ok(WaitStatus::StillAlive) => thread::sleep(Duration::from_millis(1)),
                // Reaped already, or stopped: nothing more to learn here.
                _ => return,
            }
        }
    }
}

/// In the child: makes `ready` and the listeners survive the exec, names them in the
/// environment and execs. Returns only on failure, with why.
fn exec_successor(
    ready: OwnedFd,
    generation: u64,
    listeners: impl FnOnce() -> Result<Vec<(&'static str, OwnedFd)>, String>,
) -> String {
    let listeners = match listeners() {
        Ok(listeners) => listeners,
        Err(why) => return why,
    };
    let mut named: Vec<(&str, RawFd)> = Vec::new();
    for (name, fd) in &listeners {
        if let Err(errno) = keep_across_exec(fd.as_fd()) {
            return format!("cannot hand over {name}: {}", errno.desc());
        }
        named.push((name, fd.as_raw_fd()));
    }
    if let Err(errno) = keep_across_exec(ready.as_fd()) {
        return format!("cannot hand over the ready pipe: {}", errno.desc());
    }
    // SAFETY: this child of a single-threaded master has one thread, so nothing reads the
    // environment while it changes.
    unsafe {
        std::env::set_var(INHERITED_VARIABLE, inherited_value(&named));
        std::env::set_var(
            UPGRADE_VARIABLE,
            format!("ready={};generation={generation}", ready.as_raw_fd()),
        );
    }
    // The path this process was started as (argv[0]), as nginx does, not /proc/self/exe: that
    // link names the inode that is running, so after a rebuild it would start the *old* binary
    // again (and `std::env::current_exe` reads it as ".../step06-master-worker (deleted)").
    // The path names whatever is on disk now: a rebuilt binary takes over. `execvp` searches
    // PATH for a bare name, as the shell did; we never change directory, so a relative path
    // still means what it meant at start.
    let args: Vec<OsString> = std::env::args_os().collect();
    let Ok(args) = args
        .into_iter()
        .map(|arg| CString::new(arg.into_vec()))
        .collect::<Result<Vec<CString>, _>>()
    else {
        return "an argument holds a NUL byte".into();
    };
    let Some(program) = args.first() else {
        return "no program name (argv[0]) to exec".into();
    };
    match nix::unistd::execvp(program, &args) {
        Err(errno) => format!("cannot exec {program:?}: {}", errno.desc()),
        Ok(never) => match never {},
    }
}

/// In a master: where it came from. A master started by `SIGUSR2` tells its predecessor when
/// its workers are ready; the first one has nobody to tell.
pub struct Predecessor {
    /// The write end of the old master's ready pipe, until it is used.
    ready: Option<OwnedFd>,
    /// 1 for a master started by hand, one more for each binary upgrade.
    pub generation: u64,
}

impl Predecessor {
    /// Reads what the old master left in the environment, and removes it, along with
    /// [`INHERITED_VARIABLE`], so that nothing this master starts later (its own successor,
    /// step 07's demo upstreams) takes it for its own. Call it once every inherited listener is
    /// adopted.
    ///
    /// # Errors
    ///
    /// When the variable is there but wrong.
    pub fn from_environment() -> Result<Predecessor, String> {
        close_unadopted();
        let value = std::env::var(UPGRADE_VARIABLE).ok();
        // SAFETY: called by the master at start-up, before it forks or starts anything: this
        // process has one thread, so nothing reads the environment while it changes.
        unsafe {
            std::env::remove_var(UPGRADE_VARIABLE);
            std::env::remove_var(INHERITED_VARIABLE);
        }
        let Some(value) = value else {
            return Ok(Predecessor {
                ready: None,
                generation: 1,
            });
        };
        let field = |name: &str| {
            named_values(&value)
                .find(|&(entry, _)| entry == name)
                .and_then(|(_, number)| number.parse::<u64>().ok())
                .ok_or_else(|| format!("{UPGRADE_VARIABLE}: no {name} in {value:?}"))
        };
        let (fd, generation) = (field("ready")?, field("generation")?);
        let fd = RawFd::try_from(fd)
            .map_err(|_| format!("{UPGRADE_VARIABLE}: bad descriptor in {value:?}"))?;
        // The variable is gone now: nothing else will claim the descriptor.
        let ready = own_inherited(fd).map_err(|why| format!("{UPGRADE_VARIABLE}: {why}"))?;
        fcntl(&ready, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|errno| format!("{UPGRADE_VARIABLE}: {}", errno.desc()))?;
        Ok(Predecessor {
            ready: Some(ready),
            generation,
        })
    }

    /// In the new master, once every worker of its first generation is ready: tells the old
    /// master it can retire. Once; later calls do nothing.
    pub fn ready(&mut self) {
        if let Some(ready) = self.ready.take() {
            let pid = std::process::id() as i32;
            if let Err(errno) = nix::unistd::write(&ready, &pid.to_ne_bytes()) {
                log::error(format_args!(
                    "master: cannot tell the old master that this one is ready: {}",
                    errno.desc()
                ));
            } else {
                log::event(format_args!(
                    "master: generation {} of the binary is ready; the old master retires",
                    self.generation
                ));
            }
        }
    }

    /// In a worker just forked: it must not hold the pipe, or the old master would not see
    /// end of file when this master dies before it is ready.
    pub fn forget(&mut self) {
        self.ready = None;
    }
}

/// After a handover, in a master that is PID 1 (a container's, see chapter 07): when PID 1
/// exits, the kernel kills every process of its namespace, the new master included. So this one
/// stays, as a small init: it passes `SIGTERM`, `SIGINT`, `SIGHUP` and `SIGUSR2` on to the
/// master in service, reaps orphans, and exits with that master's status once it is gone. A
/// master that upgrades again leaves its own successor orphaned, handed to us: it is followed
/// in turn.
pub fn stay_as_init(signals: Signals, mut master: Pid) -> i32 {
    log::event(format_args!(
        "master: PID 1 stays, as init for the new master (pid {master})"
    ));
    let mut stop_sent = false;
    loop {
        let mut fds = vec![signals.wake_fd()];
        // Once the stop is passed on, the shutdown pipe stays readable: stop watching it.
        if !stop_sent {
            fds.push(signals.shutdown_fd());
        }
        if let Err(error) = wait_readable(&fds, None) {
            log::error(format_args!("init: cannot wait for events: {error}"));
            return 1;
        }
        let pending = signals.take();
        if signals.shutdown_requested() && !stop_sent {
            let _ = kill(master, Signal::SIGTERM);
            stop_sent = true;
        }
        for signal in [Signal::SIGHUP, Signal::SIGUSR2] {
            if pending.contains(signal) {
                let _ = kill(master, signal);
            }
        }
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => status,
                // ECHILD: nobody left to serve or to reap.
                Err(_) => return 0,
            };
            if status.pid() != Some(master) {
                continue;
            }
            match (status, remaining_child()) {
                // It upgraded in turn (and retired with 0): its successor is ours now.
                (WaitStatus::Exited(_, 0), Some(next)) if !stop_sent => master = next,
                (WaitStatus::Exited(_, code), _) => return code,
                _ => return 1,
            }
        }
    }
}

/// A child of this process still running, from Linux's `/proc/self/task/PID/children`.
fn remaining_child() -> Option<Pid> {
    let pid = std::process::id();
    let children = std::fs::read_to_string(format!("/proc/self/task/{pid}/children")).ok()?;
    let first = children.split_whitespace().next()?;
    first.parse().ok().map(Pid::from_raw)
}
