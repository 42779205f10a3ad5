//! One cost at a time: what it takes to start a process, start a thread, and hand work from
//! one thread to another, the operations the models of steps 01 to 04 repeat per connection,
//! in the primitives and in step 03's queue and step 04's pool.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};
use step03_queue_autoscale::{Popped, Queue, Role, ScalingPolicy};
use step04_threadpool::ThreadPool;
use step05_epoll_kqueue::{Interest, Poller, Token};

/// Step 01's price per connection: a new process, its exit, and reaping it.
fn process(c: &mut Criterion) {
    c.bench_function("process: fork + _exit + waitpid", |b| {
        b.iter(|| {
            // SAFETY: the child calls only _exit, which is async-signal-safe, so it is sound
            // even though this benchmark process has other threads.
            match unsafe { fork() } {
                // SAFETY: _exit ends the child at once and never returns.
                Ok(ForkResult::Child) => unsafe { libc::_exit(0) },
                Ok(ForkResult::Parent { child }) => black_box(waitpid(child, None)).is_ok(),
                Err(_) => false,
            }
        });
    });
}

/// Step 02's price per connection: a new thread and joining it.
fn thread_start(c: &mut Criterion) {
    c.bench_function("thread: spawn + join", |b| {
        b.iter(|| thread::spawn(|| black_box(1)).join().is_ok());
    });
}

/// A job handed to another thread over a channel and its answer coming back: the round trip
/// behind a thread pool (step 04).
fn channel_round_trip(c: &mut Criterion) {
    let (to_worker, requests) = mpsc::channel::<u64>();
    let (to_caller, answers) = mpsc::channel::<u64>();
    let worker = thread::spawn(move || {
        for request in requests {
            if to_caller.send(request + 1).is_err() {
                break;
            }
        }
    });
    c.bench_function("mpsc: send + recv round trip", |b| {
        b.iter(|| {
            let _ = to_worker.send(black_box(1));
            answers.recv().ok()
        });
    });
    drop(to_worker);
    let _ = worker.join();
}

/// A Mutex + Condvar ping-pong between two threads: how a queue wakes a sleeping worker and
/// the worker wakes the producer back (step 03).
fn condvar_wake_up(c: &mut Criterion) {
    // The turn: false = the bench thread's move, true = the partner's. `None` ends the partner.
    let shared = Arc::new((Mutex::new(Some(false)), Condvar::new()));
    let partner = {
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            let (turn, changed) = &*shared;
            let Ok(mut state) = turn.lock() else { return };
            loop {
                match *state {
                    None => return,
                    Some(true) => {
                        *state = Some(false);
                        changed.notify_one();
                    }
                    Some(false) => {}
                }
                state = match changed.wait(state) {
                    Ok(state) => state,
                    Err(_) => return,
                };
            }
        })
    };
    c.bench_function("condvar: wake a thread and be woken back", |b| {
        let (turn, changed) = &*shared;
        b.iter(|| {
            let Ok(mut state) = turn.lock() else { return };
            *state = Some(true);
            changed.notify_one();
            while *state == Some(true) {
                state = match changed.wait(state) {
                    Ok(state) => state,
                    Err(_) => return,
                };
            }
        });
    });
    if let Ok(mut state) = shared.0.lock() {
        *state = None;
        shared.1.notify_all();
    }
    let _ = partner.join();
}

/// Step 03's handoff: the acceptor pushes, a waiting worker pops. Measured there and back
/// (a second queue carries the item home), with scaling off so that only the handoff counts.
fn queue_handoff(c: &mut Criterion) {
    let fixed = ScalingPolicy {
        min_workers: 1,
        max_workers: 1,
        ..ScalingPolicy::default()
    };
    let (Ok(to_worker), Ok(to_caller)) = (Queue::new(fixed.clone()), Queue::new(fixed)) else {
        return;
    };
    let (to_worker, to_caller) = (Arc::new(to_worker), Arc::new(to_caller));
    let worker = {
        let (to_worker, to_caller) = (Arc::clone(&to_worker), Arc::clone(&to_caller));
        thread::spawn(move || {
            while let Popped::Item(item) = to_worker.pop_blocking(Role::Permanent) {
                if to_caller.push_blocking(item).is_err() {
                    break;
                }
            }
        })
    };
    c.bench_function("queue: push + pop handoff, there and back", |b| {
        b.iter(|| {
            let _ = to_worker.push_blocking(black_box(1u64));
            matches!(to_caller.pop_blocking(Role::Permanent), Popped::Item(_))
        });
    });
    to_worker.close();
    to_caller.close();
    let _ = worker.join();
}

/// Step 04's dispatch: an empty job handed to the pool, and word back that it ran.
fn pool_round_trip(c: &mut Criterion) {
    let Ok(pool) = ThreadPool::new(1) else { return };
    let (done, finished) = mpsc::channel::<()>();
    c.bench_function("pool: execute an empty job and hear back", |b| {
        b.iter(|| {
            let done = done.clone();
            pool.execute(move || {
                let _ = done.send(());
            });
            finished.recv().is_ok()
        });
    });
}

/// Step 05's wait: a byte arrives on one registered socket, the poller reports it, the loop
/// reads it. The poller is edge-triggered, so each round makes a new edge (the write) and
/// consumes it (the read): write + wait + read, the smallest unit of an event loop's work.
fn poller_wake_up(c: &mut Criterion) {
    let (Ok((mut writer, mut reader)), Ok(mut poller)) = (UnixStream::pair(), Poller::new()) else {
        return;
    };
    if reader.set_nonblocking(true).is_err()
        || poller
            .register(&reader, Token(1), Interest::READABLE)
            .is_err()
    {
        return;
    }
    let mut events = Vec::new();
    let mut byte = [0u8; 1];
    c.bench_function(
        "poller: one socket becomes ready (write + wait + read)",
        |b| {
            b.iter(|| {
                let _ = writer.write_all(b"x");
                let _ = poller.wait(&mut events, Some(Duration::from_secs(1)));
                let _ = reader.read(&mut byte);
                events.len()
            });
        },
    );
}

criterion_group!(
    benches,
    process,
    thread_start,
    channel_round_trip,
    condvar_wake_up,
    queue_handoff,
    pool_round_trip,
    poller_wake_up
);
criterion_main!(benches);
