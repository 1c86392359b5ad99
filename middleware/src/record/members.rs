//! A window's distinct users, stored compactly.

use std::fmt;
use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};
use hashbrown::DefaultHashBuilder;

/// The distinct members of one window's set of users: every member's bytes
/// once, end to end in one buffer, and a hash table of where each one is.
///
/// A member takes its own length plus about 10 bytes, where a `HashSet` of
/// inline tokens takes the longest key's room (64 bytes) in every slot: at
/// the early-drain size and a lagging flusher that is tens of kilobytes
/// against hundreds, per set. Both buffers keep their capacity when cleared,
/// so a window that has grown inserts without allocating.
///
/// The hash is foldhash with a per-process random seed: user ids come from
/// clients, and a fixed hash would let one send ids that all collide.
#[derive(Default)]
pub(crate) struct Members {
    table: HashTable<Span>,
    bytes: String,
    hasher: DefaultHashBuilder,
}

/// Where one member is in `Members::bytes`.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(self, bytes: &str) -> &str {
        let start = self.start as usize;
        &bytes[start..start + self.len as usize]
    }
}

impl Members {
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub(crate) fn contains(&self, member: &str) -> bool {
        let hash = self.hasher.hash_one(member);
        self.table
            .find(hash, |span| span.of(&self.bytes) == member)
            .is_some()
    }

    /// Adds `member`: `true` when it is new to the window.
    pub(crate) fn insert(&mut self, member: &str) -> bool {
        let Members {
            table,
            bytes,
            hasher,
        } = self;
        let hash = hasher.hash_one(member);
        match table.entry(
            hash,
            |span| span.of(bytes) == member,
            |span| hasher.hash_one(span.of(bytes)),
        ) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                // Members are at most `MAX_PLAIN_USER_KEY` bytes and a window
                // holds at most `MAX_MEMBERS` of them: far below `u32::MAX`.
                slot.insert(Span {
                    start: bytes.len() as u32,
                    len: member.len() as u32,
                });
                bytes.push_str(member);
                true
            }
        }
    }

    /// Every member, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.table.iter().map(|span| span.of(&self.bytes))
    }

    /// Empties the set and keeps its buffers.
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.bytes.clear();
    }
}

impl fmt::Debug for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_distinct_and_read_back_whole() {
        let mut members = Members::default();
        assert!(members.is_empty());
        assert!(members.insert("alice"));
        assert!(!members.is_empty());
        assert!(members.insert("bob"));
        assert!(!members.insert("alice"), "already there");
        assert!(members.insert("al"), "a prefix is another member");
        assert!(members.insert(""), "so is the empty string");
        assert_eq!(members.len(), 4);
        assert!(members.contains("bob"));
        assert!(!members.contains("b"));
        let mut all: Vec<&str> = members.iter().collect();
        all.sort();
        assert_eq!(all, ["", "al", "alice", "bob"]);
        assert_eq!(format!("{members:?}").len(), format!("{all:?}").len());
    }

    #[test]
    fn a_cleared_set_starts_afresh_without_allocating_again() {
        let mut members = Members::default();
        // Enough to make the table grow (and rehash) several times.
        for i in 0..5_000 {
            assert!(members.insert(&format!("user-{i}")));
        }
        for i in 0..5_000 {
            assert!(members.contains(&format!("user-{i}")), "{i}");
        }
        assert_eq!(members.len(), 5_000);
        let (table, bytes) = (members.table.capacity(), members.bytes.capacity());
        members.clear();
        assert_eq!(members.len(), 0);
        assert!(!members.contains("user-1"));
        assert_eq!(members.iter().count(), 0);
        for i in 0..5_000 {
            assert!(members.insert(&format!("u{i}")));
        }
        assert_eq!(members.len(), 5_000);
        assert_eq!(members.table.capacity(), table);
        assert_eq!(members.bytes.capacity(), bytes);
        let mut all: Vec<String> = members.iter().map(str::to_owned).collect();
        all.sort();
        let mut want: Vec<String> = (0..5_000).map(|i| format!("u{i}")).collect();
        want.sort();
        assert_eq!(all, want);
    }
}
