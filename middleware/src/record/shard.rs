//! Which shard of a route a thread writes to: one index per thread, for
//! its life, the least used when it starts, given back when it ends.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::LazyLock;

/// The most shards a route has, whatever the number of cores.
const MAX_SHARDS: usize = 16;

/// Shards per route: one per core (a power of two, at most
/// [`MAX_SHARDS`]). A thread keeps its shard for life, so tokio's workers,
/// one per core, seldom share a lock or a cache line.
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .next_power_of_two()
        .min(MAX_SHARDS)
});

/// Threads alive per shard index. A new thread takes the index fewest live
/// threads have, so threads started together (tokio's workers) get one
/// each, and a thread that ends (one of a blocking pool) gives its index
/// back rather than pushing later threads onto used ones.
#[derive(Debug)]
struct ThreadsOn([AtomicUsize; MAX_SHARDS]);

impl ThreadsOn {
    const fn new() -> Self {
        ThreadsOn([const { AtomicUsize::new(0) }; MAX_SHARDS])
    }

    /// The least used of the first `shards` indices, now used once more.
    /// Two threads starting at once may pick the same one: they share a
    /// shard, nothing worse.
    fn take(&self, shards: usize) -> usize {
        let least = (0..shards)
            .min_by_key(|&i| self.0[i].load(Relaxed))
            .unwrap_or(0);
        self.0[least].fetch_add(1, Relaxed);
        least
    }

    fn give_back(&self, index: usize) {
        self.0[index].fetch_sub(1, Relaxed);
    }
}

static THREADS_ON: ThreadsOn = ThreadsOn::new();

/// This thread's shard index, given back when the thread ends.
struct ThreadShard {
    on: &'static ThreadsOn,
    index: usize,
}

impl ThreadShard {
    fn take(on: &'static ThreadsOn) -> ThreadShard {
        ThreadShard {
            on,
            index: on.take(*SHARDS),
        }
    }
}

impl Drop for ThreadShard {
    fn drop(&mut self) {
        self.on.give_back(self.index);
    }
}

/// The shard index of the calling thread, below [`shard_count`].
pub(crate) fn shard_of_this_thread() -> usize {
    thread_local! {
        static SHARD: ThreadShard = ThreadShard::take(&THREADS_ON);
    }
    // Once the thread's locals are gone (a request dropped by another
    // thread-local's destructor), any shard is right.
    SHARD.try_with(|shard| shard.index).unwrap_or(0)
}

/// Shards per route on this machine.
pub(crate) fn shard_count() -> usize {
    *SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_per_core_up_to_16_a_power_of_two() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = shard_count();
        assert!(shards.is_power_of_two(), "{shards}");
        assert!(
            shards >= cores.min(MAX_SHARDS),
            "{shards} for {cores} cores"
        );
        assert!(shards <= MAX_SHARDS, "{shards}");
    }

    #[test]
    fn a_new_thread_takes_the_least_used_shard_and_an_ended_one_gives_it_back() {
        let on = ThreadsOn::new();
        assert_eq!(on.take(2), 0);
        assert_eq!(on.take(2), 1);
        assert_eq!(on.take(2), 0);
        on.give_back(0);
        assert_eq!(on.take(2), 0, "the index given back");
        assert_eq!(on.take(1), 0, "only among the first `shards`");

        static ON: ThreadsOn = ThreadsOn::new();
        let thread = ThreadShard::take(&ON);
        let first = thread.index;
        drop(thread);
        assert_eq!(
            ThreadShard::take(&ON).index,
            first,
            "an ended thread's index"
        );
    }
}
