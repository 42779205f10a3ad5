//! Starting a step's binary and stopping it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
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
    /// `None`: dropping the server kills its group at once (tests). `Some`: `SIGTERM` first,
    /// and this long to exit (the grader, which stops a server as its user would).
    stop_grace: Option<Duration>,
    /// Where the panics it printed go when it is dropped (the grader's hints).
    panic_sink: Option<Arc<Mutex<Vec<String>>>>,
    /// The thread reading its stderr, which ends when the pipe does.
    stderr_drain: Option<thread::JoinHandle<()>>,
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
            .args(args);
        let name = Path::new(bin).file_name().map_or_else(
            || bin.to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        Server::spawn(command, name, None)
    }

    /// Starts `command` (in a process group of its own, stdin closed, both pipes drained) and
    /// waits until it is ready: its first line on stdout is the contract's `listening on`
    /// line, or, when `port` is given (a command that was told its port), that line or a
    /// connection accepted on `127.0.0.1:port`, whichever comes first. A server that
    /// answers as `name` (its `Server` field and `/stats`'s `step`).
    ///
    /// # Errors
    ///
    /// A description of the failure, including what the server printed on stderr.
    pub(crate) fn spawn(
        mut command: Command,
        name: String,
        port: Option<u16>,
    ) -> Result<Server, String> {
        let shown = format!("{command:?}");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that dropping the server also stops what it forked.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {shown}: {e}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (first_line, first_line_rx) = mpsc::channel();
        // Both pipes are drained for the server's whole life: a server blocked on a full pipe
        // would look like a server that stopped answering.
        if let Some(pipe) = child.stdout.take() {
            drain(pipe, Arc::clone(&stdout), Some(first_line));
        }
        let stderr_drain = child
            .stderr
            .take()
            .map(|pipe| drain(pipe, Arc::clone(&stderr), None));
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            name,
            stdout,
            stderr,
            stop_grace: None,
            panic_sink: None,
            stderr_drain,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match first_line_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    let announced = line
                        .strip_prefix("listening on http://")
                        .and_then(|address| address.parse().ok());
                    match (announced, port) {
                        (Some(address), _) => {
                            server.addr = address;
                            return Ok(server);
                        }
                        (None, None) => {
                            return Err(format!("unexpected first line from {shown}: {line:?}"));
                        }
                        // Told its port, a server may print what it likes (nginx prints
                        // nothing): the port decides.
                        (None, Some(_)) => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(20))
                }
            }
            if let Some(port) = port
                && TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            {
                return Ok(server);
            }
            let exited = matches!(server.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                let status = server.wait_exit(Duration::from_millis(200));
                // Let the drain threads catch the last lines it printed.
                thread::sleep(Duration::from_millis(50));
                let waited = if port.is_some() {
                    format!("neither said `listening on` nor accepted on port {port:?}")
                } else {
                    "printed no start-up line".to_string()
                };
                return Err(format!(
                    "{shown} {waited} (exit: {status:?}); stderr: {:?}",
                    server.stderr_lines()
                ));
            }
        }
    }

    /// From now on, dropping the server stops it as a user would: `SIGTERM`, then, if it is
    /// still there after `grace`, `SIGKILL` to its process group and to every process it
    /// started (a forked child that left the group too).
    pub fn stop_gracefully(&mut self, grace: Duration) {
        self.stop_grace = Some(grace);
    }

    /// When the server is dropped, the panics it printed on stderr are added to `sink`.
    pub fn report_panics_to(&mut self, sink: Arc<Mutex<Vec<String>>>) {
        self.panic_sink = Some(sink);
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
        self.try_wait_for_workers(count)
            .unwrap_or_else(|| panic!("expected {count} workers, found {:?}", self.workers()))
    }

    /// Like [`Server::wait_for_workers`], for a caller that explains the failure itself (a
    /// model check, whose message is the student's hint): `None` after 10 s.
    ///
    /// # Panics
    ///
    /// Without `/proc`.
    pub fn try_wait_for_workers(&self, count: usize) -> Option<Vec<u32>> {
        wait_for(Duration::from_secs(10), || {
            let workers = self.workers();
            (workers.len() == count).then_some(workers)
        })
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
        let pid = Pid::from_raw(self.pid() as i32);
        if let Some(grace) = self.stop_grace {
            let record = self.stop_as_a_user_would(grace);
            if let Ok(mut log) = STOPS.lock() {
                log.push(record);
            }
        }
        // The group id is the server's pid (`process_group(0)` above).
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.wait();
        if let Some(sink) = &self.panic_sink {
            // Its last lines may still be in the pipe (on a busy machine the reading thread
            // lags): read them to the end, which comes now that its group is gone (a second at
            // most, should something outside the group hold the pipe), so that no panic is
            // missed.
            let until = Instant::now() + Duration::from_secs(1);
            while self
                .stderr_drain
                .as_ref()
                .is_some_and(|reader| !reader.is_finished())
                && Instant::now() < until
            {
                thread::sleep(Duration::from_millis(5));
            }
            if let Ok(mut sink) = sink.lock() {
                sink.extend(panic_messages(&self.stderr_lines()));
            }
        }
    }
}

/// How a server stopped when asked with `SIGTERM` (see [`Server::stop_gracefully`]).
#[derive(Debug, Clone)]
pub struct StopRecord {
    pub pid: u32,
    /// Its exit status, if it exited within the grace period.
    pub exit: Option<ExitStatus>,
    /// Processes it started that were still running once it had exited (or once the grace
    /// was over); they were killed.
    pub survivors: Vec<u32>,
}

/// Every graceful stop so far, for the grader's report.
static STOPS: Mutex<Vec<StopRecord>> = Mutex::new(Vec::new());

/// The graceful stops recorded so far, emptied.
pub fn take_stop_records() -> Vec<StopRecord> {
    STOPS
        .lock()
        .map(|mut log| std::mem::take(&mut *log))
        .unwrap_or_default()
}

impl Server {
    /// `SIGTERM` to the server, `grace` to exit, then `SIGKILL` to whatever of it is left:
    /// its process group and every process it started, even one that left the group.
    fn stop_as_a_user_would(&mut self, grace: Duration) -> StopRecord {
        let pid = self.pid();
        // Who it started, before they are orphaned and reparented.
        let mut started = crate::procfs::tree(pid);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let exit = self.wait_exit(grace);
        // A moment for what it stopped on its way out to finish exiting.
        let settle = Instant::now() + Duration::from_millis(300);
        let survivors = loop {
            started.extend(crate::procfs::group_members(pid));
            started.sort_unstable();
            started.dedup();
            let survivors: Vec<u32> = started
                .iter()
                .copied()
                .filter(|&other| other != pid && crate::procfs::is_running(other))
                .collect();
            if survivors.is_empty() || Instant::now() >= settle {
                break survivors;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        for &other in &survivors {
            let _ = kill(Pid::from_raw(other as i32), Signal::SIGKILL);
        }
        StopRecord {
            pid,
            exit,
            survivors,
        }
    }
}

/// The panics among a server's stderr lines: each `panicked at` line with the message that
/// follows it.
fn panic_messages(lines: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            let message = lines.get(index + 1).map_or("", String::as_str);
            found.push(format!("{} {message}", line.trim()));
        }
    }
    found
}

/// Reads `pipe` line by line into `lines` until it closes; the first line also goes to `first`.
pub(crate) fn drain(
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
    crate::target::Target::binary(bin, args).run_to_exit(None, &[], timeout)
}
