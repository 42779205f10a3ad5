//! What the contract checks run against: a server to start, as many times as a check needs.
//!
//! The steps' tests start a binary with `--port 0` and read its `listening on` line
//! ([`Target::binary`]); the grader (`scripts/grade`) starts any command, in any language,
//! with `{port}` in it filled with a free port ([`Target::command`]). The checks do not know
//! which: that is what lets `cargo test` and the grader run the same checks.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::server::{Server, drain};

/// The placeholder a command's arguments carry for the port the grader chose.
pub const PORT: &str = "{port}";

/// A server the checks can start: a program, its arguments, and how to tell it its port.
#[derive(Debug, Clone)]
pub struct Target {
    program: String,
    args: Vec<String>,
    /// `true`: the arguments carry `{port}`; `false`: the contract's `--host 127.0.0.1 --port
    /// 0` go first (a binary of ours), or the command prints its port itself.
    placeholder: bool,
    /// `true` for [`Target::binary`]: `--host 127.0.0.1 --port 0` go before the arguments.
    port_zero: bool,
    /// The name the server answers as (`Server:`, `/stats`'s `step`): the crate name.
    name: String,
    /// `None`: servers are killed at once when a check ends (tests); `Some`: `SIGTERM`, and
    /// this long to exit before `SIGKILL` (the grader).
    stop_grace: Option<Duration>,
    /// Variables added to the server's environment.
    env: Vec<(String, String)>,
    /// Where the servers' panics go when they are dropped (the grader's hints).
    panic_sink: Option<Arc<Mutex<Vec<String>>>>,
}

impl Target {
    /// A step's binary, started with `--host 127.0.0.1 --port 0` and `args`, which answers as
    /// its file name (the crate name).
    pub fn binary(bin: &str, args: &[&str]) -> Target {
        let name = Path::new(bin).file_name().map_or_else(
            || bin.to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        Target {
            program: bin.to_string(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            placeholder: false,
            port_zero: true,
            name,
            stop_grace: None,
            env: Vec::new(),
            panic_sink: None,
        }
    }

    /// Any command (`argv[0]` and its arguments) that serves the contract, answering as
    /// `name`. Where an argument holds `{port}`, each start fills it with a free port and
    /// waits for that port to accept; otherwise the command must print the contract's
    /// `listening on` line.
    ///
    /// # Errors
    ///
    /// When `argv` is empty.
    pub fn command(argv: &[String], name: &str) -> Result<Target, String> {
        let (program, args) = argv.split_first().ok_or("no command to start")?;
        Ok(Target {
            program: program.clone(),
            args: args.to_vec(),
            placeholder: args.iter().any(|arg| arg.contains(PORT)),
            port_zero: false,
            name: name.to_string(),
            stop_grace: None,
            env: Vec::new(),
            panic_sink: None,
        })
    }

    /// Servers started from now on are stopped with `SIGTERM` and get `grace` to exit before
    /// `SIGKILL` reaches their process group and everything they started.
    pub fn with_stop_grace(mut self, grace: Duration) -> Target {
        self.stop_grace = Some(grace);
        self
    }

    /// The panics that servers started from now on print (a `todo!()` reached, say) are
    /// added to `sink` when each is stopped.
    pub fn with_panic_sink(mut self, sink: Arc<Mutex<Vec<String>>>) -> Target {
        self.panic_sink = Some(sink);
        self
    }

    /// Adds variables to the environment of every server started from now on.
    pub fn with_env(mut self, env: &[(&str, &str)]) -> Target {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The name the server must answer as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line, as a user would type it (with `{port}` unfilled).
    pub fn display(&self) -> String {
        let mut words = vec![self.program.clone()];
        if self.port_zero {
            words.extend(["--host", "127.0.0.1", "--port", "0"].map(String::from));
        }
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }

    /// Starts a server with `more` options added; see [`Target::try_start`].
    ///
    /// # Panics
    ///
    /// When it does not start (a failed check, with the server's stderr in the message).
    pub fn start(&self, more: &[&str]) -> Server {
        self.try_start(more)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts a server with `more` options added after the command's own, and waits until it
    /// is ready.
    ///
    /// # Errors
    ///
    /// What went wrong, with what the server printed on stderr.
    pub fn try_start(&self, more: &[&str]) -> Result<Server, String> {
        self.try_start_limited(more, None)
    }

    /// Like [`Target::try_start`], the server limited to `open_files` descriptors (`ulimit
    /// -n`, soft and hard, so that it cannot raise the limit itself).
    ///
    /// # Errors
    ///
    /// As [`Target::try_start`].
    pub fn try_start_limited(
        &self,
        more: &[&str],
        open_files: Option<u64>,
    ) -> Result<Server, String> {
        // A port that was free when we asked can be taken before the server binds it: an
        // outgoing connection of another test may get it as its local port. A server that
        // then says so (`Address already in use`, in its words or in perror's) is started
        // again on another port, twice at most.
        let mut attempts = 0;
        let mut server = loop {
            let port = if self.placeholder {
                Some(free_port()?)
            } else {
                None
            };
            let mut command = self.command_line(port, more);
            if let Some(limit) = open_files {
                // SAFETY: between fork and exec only async-signal-safe calls are allowed;
                // setrlimit is one, and the closure touches no lock or allocation.
                unsafe {
                    command.pre_exec(move || {
                        nix::sys::resource::setrlimit(
                            nix::sys::resource::Resource::RLIMIT_NOFILE,
                            limit,
                            limit,
                        )
                        .map_err(std::io::Error::from)
                    });
                }
            }
            attempts += 1;
            match Server::spawn(command, self.name.clone(), port) {
                Err(why)
                    if self.placeholder
                        && attempts < 3
                        && why.contains("Address already in use") =>
                {
                    continue;
                }
                started => break started?,
            }
        };
        if let Some(grace) = self.stop_grace {
            server.stop_gracefully(grace);
        }
        if let Some(sink) = &self.panic_sink {
            server.report_panics_to(Arc::clone(sink));
        }
        Ok(server)
    }

    /// Runs the command with `more` options, expecting it to exit by itself within `timeout`
    /// (a bad option, a busy port); its exit status and stderr lines. `port`: the port to
    /// ask for (filled into `{port}`, or `--host 127.0.0.1 --port PORT` for a binary),
    /// else a free one.
    ///
    /// # Panics
    ///
    /// When it cannot start, or is still running after `timeout` (it is killed).
    pub fn run_to_exit(
        &self,
        port: Option<u16>,
        more: &[&str],
        timeout: Duration,
    ) -> (ExitStatus, Vec<String>) {
        let mut command = if self.port_zero {
            let mut command = Command::new(&self.program);
            command.args(&self.args);
            if let Some(port) = port {
                command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            }
            command.args(more);
            command
        } else {
            let port = match port {
                Some(port) => port,
                None => free_port().unwrap_or_else(|error| panic!("{error}")),
            };
            self.command_line(Some(port), more)
        };
        let shown = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {shown}: {error}"));
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
                panic!("{shown} did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        };
        // Let the drain thread read the last lines after the exit: it ends at the end of the
        // pipe, unless something the command started still holds it.
        let read_until = Instant::now() + Duration::from_secs(2);
        while drained.as_ref().is_some_and(|thread| !thread.is_finished())
            && Instant::now() < read_until
        {
            thread::sleep(Duration::from_millis(5));
        }
        let lines = stderr.lock().map(|lines| lines.clone()).unwrap_or_default();
        (status, lines)
    }

    /// The command with `{port}` filled and `more` added.
    fn command_line(&self, port: Option<u16>, more: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        if self.port_zero {
            command.args(["--host", "127.0.0.1", "--port", "0"]);
        }
        let port = port.map(|port| port.to_string()).unwrap_or_default();
        command
            .args(self.args.iter().map(|arg| arg.replace(PORT, &port)))
            .args(more)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }
}

/// A port that was free a moment ago (the kernel's pick for port 0; a race with another
/// program binding it meanwhile is possible but rare).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|error| format!("cannot find a free port: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::net::TcpStream;
    use std::os::unix::fs::PermissionsExt;

    /// A server that loses its port to someone else between our pick and its bind says so and
    /// exits: it is started again on another port, and the check goes on.
    #[test]
    fn a_port_taken_before_the_server_binds_it_is_picked_again() {
        if !crate::tools::available(
            "python3",
            "a_port_taken_before_the_server_binds_it_is_picked_again",
        ) {
            return;
        }
        let dir = std::env::temp_dir().join(format!("testkit-port-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        let (script, first) = (dir.join("server.sh"), dir.join("first-start"));
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 if [ ! -e {first:?} ]; then\n\
                 \x20 touch {first:?}\n\
                 \x20 echo \"error: cannot listen on 127.0.0.1:$1: Address already in use\" >&2\n\
                 \x20 exit 1\n\
                 fi\n\
                 exec python3 -m http.server \"$1\" --bind 127.0.0.1\n"
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {script:?}: {e}"));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {script:?}: {e}"));
        let argv = [script.display().to_string(), PORT.to_string()];
        let target = Target::command(&argv, "any").unwrap_or_else(|e| panic!("{e}"));
        let started = target.try_start(&[]);
        let _ = fs::remove_dir_all(&dir);
        let server = started.unwrap_or_else(|e| panic!("not started again: {e}"));
        assert!(
            TcpStream::connect(server.addr()).is_ok(),
            "the second start does not accept on {}",
            server.addr()
        );
    }
}
