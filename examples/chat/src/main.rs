//! # A chat server: a reader thread per client, one thread that owns the state
//!
//! A side road from the seven steps, for the chapter "Channels and one event-handler thread"
//! (docs/channels.md). Clients connect with `nc` and type lines; every line goes to every
//! other client. The server runs **n + 2 threads** for n clients:
//!
//! - the main thread accepts connections;
//! - one *reader* thread per client blocks in `read` on that client's socket, and turns each
//!   line it reads into an [`Event`];
//! - one *hub* thread owns every client's writing half and handles the events one at a time,
//!   in the order they arrive on an `mpsc` channel.
//!
//! The channel is the point. Many threads produce events, one consumes them, so the list of
//! clients is owned by one thread and needs no lock: nobody else can touch it. Step 04's pool
//! is the mirror image (one producer, many consumers sharing the receiver behind a lock), and
//! step 05's event loop is this hub without the reader threads: it learns from the kernel,
//! not from n threads, which socket has something to say.
//!
//! The hub's weak spot is the event loop's: whatever it waits for, everyone waits for. A
//! client that stops reading fills its socket buffer, and the hub's next `write` to it would
//! block every other conversation; so writes have a timeout, and a client that cannot take a
//! line within it is dropped.
//!
//! Try it (one terminal each):
//!
//! ```text
//! cargo run -p chat
//! nc 127.0.0.1 8099      # two or three of these; type a line in one
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use clap::Parser;
use common::args::{fail, parse};

/// The longest line a client may send; a longer one ends its connection.
const MAX_LINE: u64 = 1024;

/// How long the hub waits for a client to take a line before it gives up on that client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A chat server: a reader thread per client, one hub thread fed by a channel.
#[derive(Parser, Debug)]
#[command(name = "chat", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    host: String,

    /// Port to listen on; 0 lets the kernel pick a free one (the start-up line says which).
    #[arg(long, default_value_t = 8099)]
    port: u16,
}

/// Clients are numbered from 1 in the order they connect.
type ClientId = u64;

/// What happened, as the hub learns it: everything that changes the chat is one of these.
enum Event {
    /// A client connected; the hub keeps `writer`, the sending half of its socket.
    Joined { id: ClientId, writer: TcpStream },
    /// A client sent a line.
    Said { id: ClientId, line: String },
    /// A client's connection ended (it closed, failed, or sent too long a line).
    Left { id: ClientId },
}

fn main() {
    let args: Args = parse();
    let address = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&address)
        .unwrap_or_else(|error| fail(format_args!("cannot listen on {address}: {error}")));
    let local = listener
        .local_addr()
        .unwrap_or_else(|error| fail(format_args!("cannot read the bound address: {error}")));
    println!("listening on {local}");
    if let Err(error) = io::stdout().flush() {
        fail(format_args!("cannot print the start-up line: {error}"));
    }

    let (events, inbox) = mpsc::channel();
    let hub = thread::Builder::new()
        .name("hub".into())
        .spawn(move || Hub::default().run(inbox));
    if let Err(error) = hub {
        fail(format_args!("cannot start the hub thread: {error}"));
    }

    let mut next_id: ClientId = 0;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        next_id += 1;
        if let Err(error) = welcome(next_id, stream, &events) {
            eprintln!("client #{next_id} not served: {error}");
        }
    }
}

/// Hands a new client to the hub and starts its reader thread.
///
/// `Joined` is sent before the reader starts, so the hub always knows a client before any
/// line of it arrives: one channel keeps the order in which events were sent.
fn welcome(id: ClientId, stream: TcpStream, events: &Sender<Event>) -> io::Result<()> {
    let writer = stream.try_clone()?;
    writer.set_write_timeout(Some(WRITE_TIMEOUT))?;
    if events.send(Event::Joined { id, writer }).is_err() {
        return Err(io::Error::other("the hub has stopped"));
    }
    let reader_events = events.clone();
    let spawned = thread::Builder::new()
        .name(format!("reader-{id}"))
        .spawn(move || read_lines(id, stream, &reader_events));
    if let Err(error) = spawned {
        // The hub must not keep a client nobody reads from.
        let _ = events.send(Event::Left { id });
        return Err(error);
    }
    Ok(())
}

/// One reader thread: blocks in `read` until its client sends a line, and passes each line
/// on to the hub. Ends when the client leaves.
fn read_lines(id: ClientId, stream: TcpStream, events: &Sender<Event>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // `take` bounds the line: a client cannot make us buffer without end.
        match (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(_) if line.last() != Some(&b'\n') => break, // too long, or cut off by a close
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        if events.send(Event::Said { id, line: text }).is_err() {
            return;
        }
    }
    let _ = events.send(Event::Left { id });
}

/// The hub's state: every connected client's writing half, by id. Only the hub thread ever
/// sees it, so it needs no lock.
#[derive(Default)]
struct Hub {
    clients: BTreeMap<ClientId, TcpStream>,
}

impl Hub {
    /// Handles events one at a time, in arrival order, until every sender is gone.
    fn run(mut self, inbox: Receiver<Event>) {
        while let Ok(event) = inbox.recv() {
            match event {
                Event::Joined { id, writer } => {
                    self.clients.insert(id, writer);
                    let others = self.clients.len() - 1;
                    self.send(
                        id,
                        &format!("welcome, you are #{id}; {others} other(s) here"),
                    );
                    self.broadcast(id, &format!("#{id} joined"));
                }
                Event::Said { id, line } => self.broadcast(id, &format!("#{id}: {line}")),
                Event::Left { id } => {
                    // Already gone if the hub dropped it (see `send`); tell the others now.
                    self.clients.remove(&id);
                    self.broadcast(id, &format!("#{id} left"));
                }
            }
        }
    }

    /// Sends `line` to every client but `from`.
    fn broadcast(&mut self, from: ClientId, line: &str) {
        let ids: Vec<ClientId> = self
            .clients
            .keys()
            .copied()
            .filter(|&id| id != from)
            .collect();
        for id in ids {
            self.send(id, line);
        }
    }

    /// Sends `line` to one client. A client that cannot take it within the write timeout is
    /// dropped: the hub serves everyone, so it must not wait long for anyone.
    fn send(&mut self, to: ClientId, line: &str) {
        let Some(stream) = self.clients.get_mut(&to) else {
            return;
        };
        if let Err(error) = writeln!(stream, "{line}") {
            eprintln!("dropping #{to}: {error}");
            if let Some(stream) = self.clients.remove(&to) {
                // Ends the reader's `read` too, so its thread sends `Left` and ends.
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
