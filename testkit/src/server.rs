//! Starting a step's binary and stopping it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::client::{self, Response};
use crate::procfs;
use crate::wait::wait_for;

/// How long a server may take to print its start-up line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A step's binary running on a free loopback port. Dropping it kills the server's whole
/// process group (the server and any child it forked) and reaps it.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    name: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `bin` with `--port 0` and `args`, and waits for its `listening on` line.
    ///
    /// # Panics
    ///
    /// When the binary cannot start or does not announce itself in time (this is a test
    /// helper: a panic is a failed test, with the server's stderr in the message).
    pub fn start(bin: &str, args: &[&str]) -> Server {
        Server::try_start(bin, args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`Server::start`], but returns what went wrong instead of panicking.
    ///
    /// # Errors
    ///
    /// A description of the failure, including what the server printed on stderr.
    pub fn try_start(bin: &str, args: &[&str]) -> Result<Server, String> {
        Server::try_start_with_env(bin, args, &[])
    }

    /// Like [`Server::start`], with these variables added to the server's environment (such
    /// as `HTTP_PROXY`, which a proxy must ignore).
    pub fn start_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::try_start_with_env(bin, args, env).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`Server::try_start`], with these variables added to the server's environment.
    ///
    /// # Errors
    ///
    /// As [`Server::try_start`].
    pub fn try_start_with_env(
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut command = Command::new(bin);
        command
            .envs(env.iter().copied())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that dropping the server also stops what it forked.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (first_line, first_line_rx) = mpsc::channel();
        // Both pipes are drained for the server's whole life: a server blocked on a full pipe
        // would look like a server that stopped answering.
        if let Some(pipe) = child.stdout.take() {
            drain(pipe, Arc::clone(&stdout), Some(first_line));
        }
        if let Some(pipe) = child.stderr.take() {
            drain(pipe, Arc::clone(&stderr), None);
        }
        let name = Path::new(bin).file_name().map_or_else(
            || bin.to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            name,
            stdout,
            stderr,
        };
        let line = match first_line_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = server.wait_exit(Duration::from_millis(200));
                return Err(format!(
                    "{bin} printed no start-up line (exit: {status:?}); stderr: {:?}",
                    server.stderr_lines()
                ));
            }
        };
        let address = line
            .strip_prefix("listening on http://")
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| format!("unexpected first line from {bin}: {line:?}"))?;
        server.addr = address;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The crate name, which the server sends as `Server:` and `/stats` reports as `step`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's running children, sorted: a master's worker processes (zombies, already
    /// dead, do not count).
    ///
    /// # Panics
    ///
    /// Without Linux's `/proc` (gate the test with [`crate::tools::has_procfs`]).
    pub fn workers(&self) -> Vec<u32> {
        let children = procfs::children_of(self.pid())
            .unwrap_or_else(|| panic!("workers: no /proc (see tools::has_procfs)"));
        let mut pids: Vec<u32> = children
            .into_iter()
            .filter(|child| child.state != 'Z')
            .map(|child| child.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Waits until the server has exactly `count` running children (a master's workers), and
    /// returns their pids.
    ///
    /// # Panics
    ///
    /// When that does not happen within 10 s, or without `/proc`.
    pub fn wait_for_workers(&self, count: usize) -> Vec<u32> {
        wait_for(Duration::from_secs(10), || {
            let workers = self.workers();
            (workers.len() == count).then_some(workers)
        })
        .unwrap_or_else(|| panic!("expected {count} workers, found {:?}", self.workers()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One `GET` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        client::get(self.addr, path)
    }

    /// Sends `signal` to the server process (not its group).
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), signal);
    }

    /// Waits up to `timeout` for the server to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server printed on stdout so far, a line each.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }

    /// What the server printed on stderr so far, a line each.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }

    /// Asserts that nothing the server printed looks like a panic.
    pub fn assert_no_panic(&self) {
        let lines = self.stderr_lines();
        assert!(
            !lines.iter().any(|line| line.contains("panicked")),
            "{} panicked: {lines:#?}",
            self.name
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The group id is the server's pid (`process_group(0)` above).
        let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line into `lines` until it closes; the first line also goes to `first`.
fn drain(
    pipe: impl std::io::Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    mut first: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(first) = first.take() {
                let _ = first.send(line.clone());
            }
            if let Ok(mut lines) = lines.lock() {
                lines.push(line);
            }
        }
    })
}

/// Runs `bin` with `args`, expecting it to exit by itself within `timeout` (for option
/// errors); its exit status and stderr lines. A process still running then is killed, and the
/// test fails.
pub fn run_to_exit(bin: &str, args: &[&str], timeout: Duration) -> (ExitStatus, Vec<String>) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {bin}: {error}"));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let drained = child
        .stderr
        .take()
        .map(|pipe| drain(pipe, Arc::clone(&stderr), None));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            panic!("{bin} {args:?} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Let the drain thread read the last lines after the exit: it ends at the end of the pipe,
    // unless something the binary started still holds it.
    let read_until = Instant::now() + Duration::from_secs(2);
    while drained.as_ref().is_some_and(|thread| !thread.is_finished())
        && Instant::now() < read_until
    {
        thread::sleep(Duration::from_millis(5));
    }
    let lines = stderr.lock().map(|lines| lines.clone()).unwrap_or_default();
    (status, lines)
}
