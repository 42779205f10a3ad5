//! A server's processes, threads and CPU time, read from `/proc` (Linux only; elsewhere the functions
//! return `None` and the tests that need them say they skip).

use std::fs;
use std::time::Duration;

/// One process: its pid and its state letter (`R`, `S`, `Z` for a zombie, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub state: char,
}

/// Every process in `/proc`: its pid, state letter, parent and process group. A process that
/// exits while we look is skipped.
fn processes() -> Option<Vec<(u32, char, u32, u32)>> {
    let entries = fs::read_dir("/proc").ok()?;
    let mut all = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so split
        // after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let mut number = || fields.next().and_then(|n| n.parse::<u32>().ok());
        if let (Some(ppid), Some(pgrp)) = (number(), number()) {
            all.push((pid, state, ppid, pgrp));
        }
    }
    Some(all)
}

/// The children of `parent`, zombies included.
pub fn children_of(parent: u32) -> Option<Vec<Process>> {
    let children = processes()?
        .into_iter()
        .filter(|&(_, _, ppid, _)| ppid == parent)
        .map(|(pid, state, _, _)| Process { pid, state })
        .collect();
    Some(children)
}

/// How many threads process `pid` has.
pub fn thread_count(pid: u32) -> Option<usize> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
}

/// The resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The state letter of process `pid` (`R`, `S`, `Z` for a zombie, ...), or `None` when there
/// is no such process (or no `/proc`).
pub fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

/// Whether process `pid` is still running: it exists and is not a zombie (a process that
/// exited and whose parent has not collected it yet).
pub fn is_running(pid: u32) -> bool {
    state(pid).is_some_and(|state| state != 'Z')
}

/// Whether process `pid` exists (zombies count).
pub fn exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// The CPU time process `pid` has used so far, all its threads together (user and system), or
/// `None` off Linux. Threads that have already ended are included.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After `pid (comm)`, state is field 3; utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_micros(
        (utime + stime) * 1_000_000 / ticks_per_second,
    ))
}

/// The running processes of process group `pgid` (zombies excluded).
pub fn group_members(pgid: u32) -> Vec<u32> {
    processes()
        .unwrap_or_default()
        .into_iter()
        .filter(|&(_, state, _, pgrp)| pgrp == pgid && state != 'Z')
        .map(|(pid, ..)| pid)
        .collect()
}

/// `root` and all its descendants.
pub fn tree(root: u32) -> Vec<u32> {
    let mut all = vec![root];
    let mut next = 0;
    while next < all.len() {
        let children = children_of(all[next]).unwrap_or_default();
        all.extend(children.iter().filter(|c| c.state != 'Z').map(|c| c.pid));
        next += 1;
    }
    all
}

/// What a process tree holds: processes, threads, open descriptors and resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeUsage {
    pub processes: usize,
    pub threads: usize,
    pub fds: usize,
    pub rss_kib: u64,
}

/// The usage of the tree under `root`, or `None` off Linux (or when `root` is gone). A
/// descendant that exits while we look counts as gone.
pub fn tree_usage(root: u32) -> Option<TreeUsage> {
    thread_count(root)?;
    let mut usage = TreeUsage {
        processes: 0,
        threads: 0,
        fds: 0,
        rss_kib: 0,
    };
    for pid in tree(root) {
        let (Some(threads), Ok(fds), Some(rss)) = (
            thread_count(pid),
            fs::read_dir(format!("/proc/{pid}/fd")),
            rss_kib(pid),
        ) else {
            continue;
        };
        usage.processes += 1;
        usage.threads += threads;
        usage.fds += fds.count();
        usage.rss_kib += rss;
    }
    Some(usage)
}

/// The bytes a TCP connection's sender still holds unsent or unacknowledged (its send queue),
/// found by its two ports in `/proc/net/tcp`; `Some(None)` once that end is closed or gone
/// (no longer `ESTABLISHED`), `None` without `/proc`.
pub fn tcp_send_queue(local_port: u16, remote_port: u16) -> Option<Option<u64>> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    // `sl local_address rem_address st tx_queue:rx_queue ...`, addresses as `HEXIP:HEXPORT`.
    let port = |address: &str| {
        let (_, port) = address.split_once(':')?;
        u16::from_str_radix(port, 16).ok()
    };
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local, remote, state, queues, ..] = fields[..] else {
            continue;
        };
        if port(local) != Some(local_port) || port(remote) != Some(remote_port) {
            continue;
        }
        const ESTABLISHED: &str = "01";
        if state != ESTABLISHED {
            return Some(None);
        }
        let (tx, _) = queues.split_once(':')?;
        return Some(u64::from_str_radix(tx, 16).ok());
    }
    Some(None)
}
