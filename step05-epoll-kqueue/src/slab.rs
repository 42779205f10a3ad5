//! Connections stored by number: the number is the token the poller hands back with events.
//!
//! A `Vec` of slots and a list of the free ones. Finding a connection from an event is an index,
//! not a hash lookup, and a closed connection's slot is reused by the next one (last freed,
//! first reused: its memory is the most likely to still be in the CPU cache).

/// A `Vec<Option<T>>` that remembers its free slots.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn new() -> Slab<T> {
        Slab::default()
    }

    /// How many slots are taken.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key the next [`Slab::insert`] will use.
    pub fn vacant_key(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }

    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(value);
                key
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slots.get_mut(key).and_then(Option::as_mut)
    }

    /// Takes the value out of slot `key`, freeing the slot.
    pub fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.slots.get_mut(key)?.take()?;
        self.free.push(key);
        self.len -= 1;
        Some(value)
    }

    /// The keys of the taken slots.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(key, slot)| slot.as_ref().map(|_| key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_freed_slots() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!((a, b, slab.len()), (0, 1, 2));
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.vacant_key(), a);
        assert_eq!(slab.insert("c"), a);
        assert_eq!(slab.get_mut(a).map(|v| *v), Some("c"));
        assert_eq!(slab.get_mut(7), None);
        assert_eq!(slab.keys().collect::<Vec<_>>(), [0, 1]);
    }
}
