//! The accept loop that the test upstream ([`crate::upstream`]) and the recorder
//! ([`crate::recorder`]) share: a loopback port, a thread per connection, and a kill that cuts
//! every open connection as a crashed server's would be.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::upstream::reset;

/// Accepts on a free loopback port until killed.
pub(crate) struct Acceptor {
    addr: SocketAddr,
    /// Set by [`Acceptor::kill`]; connection handlers that loop check it too.
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// A clone of every connection accepted, to cut them all at the kill (so a handler's
    /// own drop does not close its connection: it shuts it down).
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// The accepting thread, joined at the kill: after that the port refuses connections.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Acceptor {
    /// Listens on a free loopback port and gives every connection, with its number (0 for the
    /// first), to `serve` on a thread of its own. `stop` is the kill switch the handlers see.
    ///
    /// # Panics
    ///
    /// When it cannot listen (`name` says who could not).
    pub(crate) fn start(
        name: &str,
        stop: Arc<AtomicBool>,
        serve: impl Fn(TcpStream, usize) + Send + Sync + 'static,
    ) -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("{name}: cannot listen: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        // Polled, so that the accepting thread notices `stop` and closes the listener.
        let _ = listener.set_nonblocking(true);
        let (accepted, open) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let serve = Arc::new(serve);
        let thread = {
            let (stop, accepted, open) =
                (Arc::clone(&stop), Arc::clone(&accepted), Arc::clone(&open));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            if let (Ok(mut open), Ok(clone)) = (open.lock(), stream.try_clone()) {
                                open.push(clone);
                            }
                            let number = accepted.fetch_add(1, Ordering::SeqCst);
                            let serve = Arc::clone(&serve);
                            thread::spawn(move || serve(stream, number));
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Acceptor {
            addr,
            stop,
            accepted,
            open,
            thread: Mutex::new(Some(thread)),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops as a crashed server does: the port refuses connections from now on, and every
    /// open connection is reset.
    pub(crate) fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut open) = self.open.lock() {
            for stream in open.drain(..) {
                reset(&stream);
            }
        }
        let thread = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
