//! The loop's timers: a min-heap of deadlines, at most one per connection.
//!
//! Everything that takes time in this step is a deadline here instead of a sleep: a `/sleep`
//! or `--delay-ms` answer that is due, a request head that must be complete (header timeout),
//! a keep-alive connection that may idle no longer, a client that stopped reading what we
//! write, the end of a lingering close. The nearest deadline is the longest the loop may wait
//! for readiness ([`Timers::next_due`]), so it wakes in time without ever sleeping.
//!
//! A binary heap keeps the nearest deadline on top: adding or removing one costs `O(log n)`
//! with `n` timers, finding the nearest costs nothing. This heap also remembers where each
//! connection's entry sits (`position`), so that an entry can be moved or removed when the
//! connection's deadline changes or it closes, instead of piling up as stale entries.
//!
//! One trick keeps the heap out of the hot path: [`Timers::wake_by`] only ever moves an entry
//! *earlier*. When a deadline moves later (a keep-alive connection served another request and
//! may idle five more seconds), the old, earlier entry stays, fires early, and the connection
//! finds its real deadline has not come and asks again. A busy keep-alive connection thus costs
//! one heap operation per idle timeout, not two per request. (nginx fights the same churn in its
//! timer tree differently: it leaves a timer alone when the new deadline is within 300 ms of
//! the old one.)

use std::time::Instant;

use crate::poller::Token;

/// Marks a connection with no entry in [`Timers::position`].
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    due: Instant,
    token: Token,
}

/// At most one deadline per token. Tokens are connection slot numbers: small, dense integers.
#[derive(Debug, Default)]
pub struct Timers {
    /// A binary min-heap on `due`: `heap[i]` is due no later than `heap[2i + 1]` and `heap[2i + 2]`.
    heap: Vec<Entry>,
    /// `position[token]`: where that token's entry is in `heap`, or [`NONE`].
    position: Vec<u32>,
}

impl Timers {
    pub fn new() -> Timers {
        Timers::default()
    }

    /// How many timers are set.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The nearest deadline, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.first().map(|entry| entry.due)
    }

    /// Makes sure `token` is woken no later than `due`. An entry that is already due earlier
    /// stays as it is (see the module documentation): the woken connection checks its real
    /// deadline.
    pub fn wake_by(&mut self, token: Token, due: Instant) {
        match self.index_of(token) {
            Some(index) if self.heap[index].due <= due => {}
            Some(index) => {
                self.heap[index].due = due;
                self.sift_up(index);
            }
            None => {
                if self.position.len() <= token.0 {
                    self.position.resize(token.0 + 1, NONE);
                }
                self.heap.push(Entry { due, token });
                let last = self.heap.len() - 1;
                self.place(last);
                self.sift_up(last);
            }
        }
    }

    /// Removes `token`'s timer, if it has one.
    pub fn cancel(&mut self, token: Token) {
        if let Some(index) = self.index_of(token) {
            self.remove_at(index);
        }
    }

    /// Removes and returns a token whose deadline is `now` or earlier.
    pub fn pop_due(&mut self, now: Instant) -> Option<Token> {
        let first = *self.heap.first()?;
        if first.due > now {
            return None;
        }
        self.remove_at(0);
        Some(first.token)
    }

    fn index_of(&self, token: Token) -> Option<usize> {
        match self.position.get(token.0) {
            Some(&index) if index != NONE => Some(index as usize),
            _ => None,
        }
    }

    fn remove_at(&mut self, index: usize) {
        let removed = self.heap.swap_remove(index);
        self.position[removed.token.0] = NONE;
        if index < self.heap.len() {
            // The last entry took the hole; it may belong higher or lower.
            self.place(index);
            self.sift_up(index);
            self.sift_down(index);
        }
    }

    /// Records where `heap[index]` is.
    fn place(&mut self, index: usize) {
        self.position[self.heap[index].token.0] = index as u32;
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place(a);
        self.place(b);
    }

    // EXERCISE: timer-heap - restore the heap order after an entry moved
    fn sift_up(&mut self, mut index: usize) {
        while index > 0 {
            let parent = (index - 1) / 2;
            if self.heap[parent].due <= self.heap[index].due {
                break;
            }
            self.swap(parent, index);
            index = parent;
        }
    }

    fn sift_down(&mut self, mut index: usize) {
        loop {
            let left = 2 * index + 1;
            let right = left + 1;
            let mut smallest = index;
            if left < self.heap.len() && self.heap[left].due < self.heap[smallest].due {
                smallest = left;
            }
            if right < self.heap.len() && self.heap[right].due < self.heap[smallest].due {
                smallest = right;
            }
            if smallest == index {
                return;
            }
            self.swap(index, smallest);
            index = smallest;
        }
    }
    // EXERCISE END
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn drain(timers: &mut Timers, now: Instant) -> Vec<usize> {
        std::iter::from_fn(|| timers.pop_due(now))
            .map(|t| t.0)
            .collect()
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let base = Instant::now();
        let mut timers = Timers::new();
        for (token, ms) in [(3, 30), (1, 10), (4, 40), (0, 5), (2, 20)] {
            timers.wake_by(Token(token), at(base, ms));
        }
        assert_eq!(timers.len(), 5);
        assert_eq!(timers.next_due(), Some(at(base, 5)));
        assert_eq!(drain(&mut timers, at(base, 20)), [0, 1, 2]);
        assert_eq!(drain(&mut timers, at(base, 100)), [3, 4]);
        assert!(timers.is_empty() && timers.next_due().is_none());
    }

    #[test]
    fn wake_by_only_moves_a_timer_earlier() {
        let base = Instant::now();
        let mut timers = Timers::new();
        timers.wake_by(Token(1), at(base, 50));
        timers.wake_by(Token(1), at(base, 500));
        assert_eq!((timers.len(), timers.next_due()), (1, Some(at(base, 50))));
        timers.wake_by(Token(1), at(base, 10));
        assert_eq!((timers.len(), timers.next_due()), (1, Some(at(base, 10))));
    }

    #[test]
    fn cancel_removes_from_anywhere_in_the_heap() {
        let base = Instant::now();
        let mut timers = Timers::new();
        for token in 0..50 {
            timers.wake_by(Token(token), at(base, (token as u64 * 37) % 101));
        }
        for token in (0..50).step_by(3) {
            timers.cancel(Token(token));
        }
        timers.cancel(Token(1000));
        let popped = drain(&mut timers, at(base, 1000));
        let mut expected: Vec<usize> = (0..50).filter(|t| t % 3 != 0).collect();
        expected.sort_by_key(|t| (*t as u64 * 37) % 101);
        let due = |t: &usize| (*t as u64 * 37) % 101;
        assert_eq!(
            popped.iter().map(due).collect::<Vec<_>>(),
            expected.iter().map(due).collect::<Vec<_>>()
        );
        assert_eq!(popped.len(), expected.len());
        // A popped or cancelled token can be set again.
        timers.wake_by(Token(0), at(base, 1));
        assert_eq!(drain(&mut timers, at(base, 1)), [0]);
    }
}
