//! The chat server of docs/channels.md, started for real: three clients connect, a line from
//! one reaches the other two (and not its sender), the server runs n + 2 threads for n
//! clients, and a client that leaves is announced.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{procfs, tools, wait_for};

/// The chat binary on a free loopback port; killed (by pid) and reaped when dropped.
struct ChatServer {
    child: Child,
    addr: SocketAddr,
}

impl ChatServer {
    fn start() -> ChatServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the chat binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("a start-up line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start-up line {first:?}"));
        ChatServer { child, addr }
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `nc`-like client.
struct Client {
    lines: BufReader<TcpStream>,
    name: &'static str,
}

impl Client {
    fn connect(server: &ChatServer, name: &'static str) -> Client {
        let stream = TcpStream::connect(server.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        let mut client = Client {
            lines: BufReader::new(stream),
            name,
        };
        client.expect(|line| line.starts_with("welcome, you are #"));
        client
    }

    fn say(&mut self, line: &str) {
        let stream = self.lines.get_mut();
        stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send a line");
    }

    /// Reads lines until one satisfies `wanted` (within 5 s); the lines read, that one last.
    fn expect(&mut self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    let line = line.trim_end().to_string();
                    let found = wanted(&line);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => {} // the read timeout: look at the clock, read again
            }
        }
        panic!(
            "{} never got the line it waited for; it got {seen:?}",
            self.name
        );
    }
}

#[test]
fn a_line_from_one_client_reaches_the_others_through_the_hub() {
    let server = ChatServer::start();
    let mut alice = Client::connect(&server, "alice");
    let mut bob = Client::connect(&server, "bob");
    let mut carol = Client::connect(&server, "carol");
    // Everyone has heard of everyone who came later: the hub has all three.
    alice.expect(|line| line == "#3 joined");
    bob.expect(|line| line == "#3 joined");

    alice.say("hello from alice");
    let heard_by_bob = bob.expect(|line| line == "#1: hello from alice");
    let heard_by_carol = carol.expect(|line| line == "#1: hello from alice");
    assert_eq!(heard_by_bob.last(), heard_by_carol.last());

    // The sender does not get its own line back: the next thing alice hears is bob's.
    bob.say("hi alice");
    let heard_by_alice = alice.expect(|line| line.starts_with('#') && line.contains(": "));
    assert_eq!(
        heard_by_alice.last().map(String::as_str),
        Some("#2: hi alice")
    );

    // n + 2 threads: a reader per client, the hub and the main thread. (Polled: the main
    // thread starts a reader just after the hub hears of its client.)
    if tools::has_procfs("a_line_from_one_client_reaches_the_others_through_the_hub: threads") {
        let threads = || procfs::thread_count(server.child.id());
        let five = wait_for(Duration::from_secs(2), || {
            (threads() == Some(3 + 2)).then_some(())
        });
        assert!(
            five.is_some(),
            "{:?} threads: 3 readers, the hub, the main thread",
            threads()
        );
    }

    drop(carol);
    alice.expect(|line| line == "#3 left");
    bob.expect(|line| line == "#3 left");
}
