//! Which upstream of a group gets a request: the three strategies, as pure functions of the
//! group's state, so that tests can check their spread without a network.
//!
//! - **round robin**: each upstream in turn. Even when requests cost the same.
//! - **least connections**: the upstream with the fewest requests in flight. Better when some
//!   requests are slow: a busy upstream is passed over until it catches up. Each worker counts
//!   only its own requests (nginx without a shared `zone` does the same).
//! - **consistent hash**: the same key (a client address, a user id) always to the same
//!   upstream, for caches and sessions that live in the upstream. A plain `hash % n` would do
//!   that too, until `n` changes: then almost every key moves. On a *ring*, each upstream owns
//!   the arcs before its points, and a new upstream only takes over the arcs before its own
//!   points: about `1/(n+1)` of the keys move, all of them to the newcomer (`docs/07` measures
//!   it). A down upstream's keys go to the next point along the ring; the others stay put.

/// Points per upstream on the ring. More points, a more even share per upstream; nginx's
/// `hash ... consistent` uses 160 per unit of weight, as ketama did.
const POINTS_PER_UPSTREAM: usize = 160;

/// A 64-bit hash with a good spread of similar inputs (`"10.0.0.1"`, `"10.0.0.2"`): FNV-1a,
/// then the SplitMix64 finaliser, whose multiplications mix every input bit into every output
/// bit (FNV alone leaves the high bits of short keys correlated).
pub fn hash64(bytes: &[u8]) -> u64 {
    let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut z = fnv.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash ring of one group: every member's points, sorted.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, position of the member in the group).
    points: Vec<(u64, usize)>,
    members: usize,
}

impl Ring {
    // EXERCISE: hash-ring - every member's points, from its name alone, sorted round the ring
    /// A ring for members named `names` (their addresses). A member's points depend only on
    /// its name, not on the other members: that is what keeps keys in place when one is added.
    pub fn new(names: &[&str]) -> Ring {
        let mut points: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(position, name)| {
                (0..POINTS_PER_UPSTREAM)
                    .map(move |point| (hash64(format!("{name}#{point}").as_bytes()), position))
            })
            .collect();
        points.sort_unstable();
        Ring {
            points,
            members: names.len(),
        }
    }
    // EXERCISE END

    /// The members in the order a key meets them going round the ring from its hash: the
    /// first is its home, the next ones its fallbacks when the home is down.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(point, _)| point < key);
        let mut seen = vec![false; self.members];
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .filter_map(move |&(_, position)| {
                (!std::mem::replace(&mut seen[position], true)).then_some(position)
            })
    }
}

/// Round robin: the available members take turns. Turn `turn` goes to the
/// `turn % available`-th available member, so that a member that is down gives its turns to
/// all the others alike, not all to its neighbour (as "the first available from `turn` on"
/// would: with one of three down, its neighbour would get two requests in three). nginx's
/// round robin also skips a down peer without favouring the next one.
pub fn round_robin(
    members: usize,
    turn: usize,
    available: impl Fn(usize) -> bool + Copy,
) -> Option<usize> {
    rotation(members, turn, available).next()
}

// EXERCISE: least-conn - the fewest requests in flight among the available; ties in turn order
/// Least connections: the available member with the fewest requests in flight; among equals,
/// the first in round-robin order from turn `turn`, so that an idle group still spreads its
/// requests evenly.
pub fn least_conn(
    members: usize,
    turn: usize,
    in_flight: impl Fn(usize) -> usize,
    available: impl Fn(usize) -> bool + Copy,
) -> Option<usize> {
    rotation(members, turn, available).min_by_key(|&position| in_flight(position))
}
// EXERCISE END

/// The available members, starting with the `turn % available`-th one and wrapping around.
fn rotation(
    members: usize,
    turn: usize,
    available: impl Fn(usize) -> bool + Copy,
) -> impl Iterator<Item = usize> {
    let usable = move || (0..members).filter(move |&p| available(p));
    let start = match usable().count() {
        0 => 0,
        count => turn % count,
    };
    usable().skip(start).chain(usable().take(start))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn names(count: usize) -> Vec<String> {
        (1..=count).map(|i| format!("127.0.0.1:90{i:02}")).collect()
    }

    fn home(ring: &Ring, key: &str) -> Option<usize> {
        ring.walk(hash64(key.as_bytes())).next()
    }

    #[test]
    fn round_robin_takes_turns_and_skips_the_unavailable() {
        let picks: Vec<_> = (0..6)
            .filter_map(|turn| round_robin(3, turn, |_| true))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..4)
            .filter_map(|turn| round_robin(3, turn, |p| p != 1))
            .collect();
        // Member 1's turns are shared by 0 and 2, not all given to 2.
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(round_robin(3, 0, |_| false), None);
    }

    #[test]
    fn least_conn_prefers_the_idle() {
        let in_flight = [5, 0, 2];
        assert_eq!(least_conn(3, 0, |p| in_flight[p], |_| true), Some(1));
        assert_eq!(least_conn(3, 0, |p| in_flight[p], |p| p != 1), Some(2));
        // All equal: the turn decides.
        assert_eq!(least_conn(3, 2, |_| 0, |_| true), Some(2));
    }

    #[test]
    fn the_ring_spreads_keys_evenly_enough() {
        let names = names(3);
        let ring = Ring::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[home(&ring, &format!("10.0.{}.{}", i / 250, i % 250)).unwrap()] += 1;
        }
        for count in counts {
            assert!((7_000..13_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn adding_an_upstream_moves_few_keys_and_only_to_it() {
        let three = names(3);
        let four = names(4);
        let before = Ring::new(&three.iter().map(String::as_str).collect::<Vec<_>>());
        let after = Ring::new(&four.iter().map(String::as_str).collect::<Vec<_>>());
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut moved = 0;
        for key in &keys {
            let (old, new) = (home(&before, key), home(&after, key));
            if old != new {
                moved += 1;
                assert_eq!(new, Some(3), "{key} moved between old upstreams");
            }
        }
        // 1/4 expected; `hash % n` would move 3/4.
        assert!(
            (1_500..3_500).contains(&moved),
            "{moved} of 10000 keys moved"
        );
        let modulo_moved = keys
            .iter()
            .filter(|key| hash64(key.as_bytes()) % 3 != hash64(key.as_bytes()) % 4)
            .count();
        assert!(modulo_moved > 6_000, "{modulo_moved}");
    }

    #[test]
    fn a_down_upstreams_keys_go_elsewhere_and_the_rest_stay() {
        let names = names(3);
        let ring = Ring::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let mut moved_to: HashMap<usize, usize> = HashMap::new();
        for i in 0..3_000 {
            let key = hash64(format!("k{i}").as_bytes());
            let mut walk = ring.walk(key);
            let home = walk.next().unwrap();
            let with_1_down = ring.walk(key).find(|&p| p != 1).unwrap();
            if home == 1 {
                *moved_to.entry(with_1_down).or_default() += 1;
            } else {
                assert_eq!(home, with_1_down);
            }
            let all: Vec<_> = ring.walk(key).collect();
            assert_eq!(all.len(), 3, "every member once");
        }
        // Its keys are shared by the others, not all dumped on one.
        assert_eq!(moved_to.len(), 2, "{moved_to:?}");
    }
}
