//! The seam step 06 builds on, used as a library: a [`BlockingRunner`] that runs blocking work
//! on other threads and wakes the loop through a descriptor when it is done. With it,
//! `/sleep` under `blocking_sleep` no longer stalls the loop: ten requests of 500 ms take about
//! half a second, where the inline runner of `--blocking-sleep` takes five.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use common::{Response, Signals, Site};
use step05_epoll_kqueue::{BlockingRunner, EventLoop, LoopConfig, LoopStats, Ticket, Work};
use testkit::load::concurrent_gets;

/// Runs each piece of work on a thread of its own (step 06 uses a pool) and reports it done
/// through a channel plus one byte on a socket pair, the loop's wake-up descriptor.
struct ThreadRunner {
    done_tx: Sender<(Ticket, Response)>,
    done_rx: Receiver<(Ticket, Response)>,
    wake_read: UnixStream,
    wake_write: UnixStream,
}

impl ThreadRunner {
    fn new() -> ThreadRunner {
        let (wake_read, wake_write) = UnixStream::pair().expect("socket pair");
        wake_read.set_nonblocking(true).expect("non-blocking");
        wake_write.set_nonblocking(true).expect("non-blocking");
        let (done_tx, done_rx) = mpsc::channel();
        ThreadRunner {
            done_tx,
            done_rx,
            wake_read,
            wake_write,
        }
    }
}

impl BlockingRunner for ThreadRunner {
    fn run(&mut self, ticket: Ticket, work: Work) -> Option<Response> {
        let done = self.done_tx.clone();
        let mut wake = self.wake_write.try_clone().expect("wake-up socket");
        thread::spawn(move || {
            let response = work();
            let _ = done.send((ticket, response));
            // A full socket is fine: the loop is due to wake up anyway.
            let _ = wake.write(b"!");
        });
        None
    }

    fn wake_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.wake_read.as_fd())
    }

    fn finished(&mut self, done: &mut Vec<(Ticket, Response)>) {
        let mut sink = [0u8; 64];
        while (&self.wake_read).read(&mut sink).is_ok_and(|read| read > 0) {}
        done.extend(self.done_rx.try_iter());
    }
}

/// Asks the loop to shut down when dropped, so that a failed assertion ends the test instead of
/// leaving the loop's thread running.
struct ShutdownOnDrop(Signals);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.request_shutdown();
    }
}

#[test]
fn blocking_work_on_other_threads_does_not_stall_the_loop() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("address");
    let signals = Signals::install(&[]).expect("signal handlers");
    let stats = Arc::new(LoopStats::default());
    let site = Site::new("step05-epoll-kqueue", Duration::ZERO);
    let config = LoopConfig {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(5),
        grace: Duration::from_secs(5),
        max_connections: 100,
        log: false,
        blocking_sleep: true,
        exclusive_accept: true,
    };
    thread::scope(|scope| {
        let server = scope.spawn(|| {
            let runner = Box::new(ThreadRunner::new());
            EventLoop::new(&site, config, signals, Arc::clone(&stats), runner)?.run(listener)
        });
        let shutdown = ShutdownOnDrop(signals);

        let burst = concurrent_gets(addr, "/sleep?ms=500", 10);
        assert_eq!(burst.count_status(200), 10, "{:?}", burst.failures());
        assert!(
            burst
                .responses
                .iter()
                .flatten()
                .all(|response| response.text() == "slept 500 ms\n")
        );
        assert!(
            burst.wall < Duration::from_millis(1500),
            "took {:?}",
            burst.wall
        );
        assert_eq!(stats.accepted(), 10);

        drop(shutdown);
        let result = server.join().expect("loop thread");
        assert!(result.is_ok(), "{result:?}");
    });
}
