//! The scaling trace: one line `t_ms workers queue_len` per change in the number of workers.
//!
//! `t_ms` counts milliseconds from the server's start. The lines go to a file (`--trace FILE`)
//! or to stdout, where they sit between the access log lines and are told apart by having
//! exactly three numbers. `scripts/plot_trace.py` draws them.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::queue::ScaleEvent;

/// Where scaling events are written, and the instant they are timed from.
#[derive(Debug)]
pub struct Trace {
    started: Instant,
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    Off,
    Stdout,
    /// Behind a lock so that two threads' lines never interleave.
    File(Mutex<File>),
}

impl Trace {
    /// Records nothing.
    pub fn off() -> Trace {
        Trace::new(Sink::Off)
    }

    /// Writes the lines to stdout.
    pub fn stdout() -> Trace {
        Trace::new(Sink::Stdout)
    }

    /// Writes the lines to `path`, which is created or emptied.
    ///
    /// # Errors
    ///
    /// When the file cannot be created.
    pub fn to_file(path: &Path) -> io::Result<Trace> {
        Ok(Trace::new(Sink::File(Mutex::new(File::create(path)?))))
    }

    fn new(sink: Sink) -> Trace {
        Trace {
            started: Instant::now(),
            sink,
        }
    }

    /// Writes one line for `event`. Write errors are ignored: a server does not stop serving
    /// because its trace cannot be written.
    pub fn record(&self, event: &ScaleEvent) {
        let t_ms = event.at.saturating_duration_since(self.started).as_millis();
        let line = format!("{t_ms} {} {}\n", event.workers, event.queue_len);
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout => {
                let _ = io::stdout().lock().write_all(line.as_bytes());
            }
            Sink::File(file) => {
                // A panic cannot happen while this lock is held (it only guards one write), so
                // a poisoned lock still holds a usable file.
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = file.write_all(line.as_bytes());
            }
        }
    }
}
