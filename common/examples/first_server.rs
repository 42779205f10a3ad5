//! The course's first `server.c`, in Rust: the smallest server that a browser can talk to.
//! Chapter 00 (docs/00-socket-server.md) walks through it, including what it gets wrong on
//! purpose: it answers one client at a time, and it takes one `read` for a whole request.
//!
//! ```text
//! cargo run -p common --example first_server
//! curl -i http://127.0.0.1:8090/
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/plain\r\n\
Content-Length: 20\r\n\
Connection: close\r\n\
\r\n\
My first web server!";

fn main() {
    // socket() + bind() + listen(): std's `bind` does all three (with a backlog of 128).
    let listener = match TcpListener::bind("127.0.0.1:8090") {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on 127.0.0.1:8090: {error}");
            std::process::exit(1);
        }
    };
    println!("listening on http://127.0.0.1:8090");
    loop {
        // accept(): take the next connection whose handshake the kernel has finished, waiting
        // if there is none. One failed accept is one lost client, not a reason to stop.
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(error) = answer(stream) {
                    eprintln!("connection failed: {error}");
                }
            }
            Err(error) => eprintln!("accept failed: {error}"),
        }
    }
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    // read(): whatever has arrived so far, up to 30 000 bytes. The course's flaw, kept here on
    // purpose: that is not necessarily the whole request (chapter 00 says why).
    let mut buffer = [0u8; 30_000];
    let read = stream.read(&mut buffer)?;
    let request = String::from_utf8_lossy(&buffer[..read]);
    println!("{}", request.lines().next().unwrap_or("(empty request)"));
    // write(): the answer. close(): when `stream` goes out of scope at the end of this function.
    stream.write_all(ANSWER)
}
