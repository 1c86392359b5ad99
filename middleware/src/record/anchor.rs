//! How a service reaches what its layer shares without writing a cache
//! line that other cores write.
//!
//! axum clones a route's service for every request (`Route::oneshot_inner`)
//! and drops the clone once it has been called. Were the service's state an
//! `Arc`, each request would add to and take from one reference count, a
//! line that bounces between all the cores serving the route. So a service
//! holds one of several *anchors* of its state, one per shard: a clone
//! takes the anchor of its own thread's shard, whose count only the threads
//! on that shard write, and the state itself is only read.
//!
//! The anchors have to live as long as any service holds one, and every
//! service must reach all of them, so the layer's [`Routes`](super::Routes) hold them
//! (`Routes` → anchors → state → `Shared` → `Routes`, a cycle) and let them
//! go once no service holds any: when the service the layer made is
//! dropped (axum drops them with the router), and at every drain of the
//! flusher (a clone that outlived it).

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use crossbeam_utils::CachePadded;

use super::shard::{shard_count, shard_of_this_thread};
use super::shared::Shared;
use super::stats::{RouteStats, ShardRef};

/// What every clone of one service made by the layer reads.
#[derive(Debug)]
pub(crate) struct ServiceState {
    pub(crate) shared: Arc<Shared>,
    /// The stats of the route this service wraps. axum's `Router::layer`
    /// makes one service per route (clones share this), so the first
    /// request's template is almost always every request's template; a
    /// different one falls back to the layer's map.
    route: OnceLock<(Option<Box<str>>, Recorded)>,
    /// One per shard; held by the layer's [`Routes`](super::Routes).
    anchors: OnceLock<Box<[Weak<CachePadded<Anchor>>]>>,
}

/// A route's stats, or `None` if the layer does not record the route.
type Recorded = Option<Arc<RouteStats>>;

/// One shard's way to a service's state. Aligned to 128 bytes, so the
/// pointer to the state, read by every core, is not on the line of the
/// reference count, written by this shard's threads.
pub(crate) struct Anchor {
    state: Arc<CachePadded<ServiceState>>,
}

impl fmt::Debug for Anchor {
    /// Not the state: it leads back to the [`Routes`](super::Routes) holding this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anchor").finish_non_exhaustive()
    }
}

/// A service's hold on its state: an anchor of this thread's shard.
#[derive(Debug)]
pub(crate) struct Held {
    /// `None` only while it is dropped.
    anchor: Option<Arc<CachePadded<Anchor>>>,
    /// Made by the layer, not cloned: dropping it (with the router) lets go
    /// of the anchors nobody holds any more, now rather than at the next
    /// drain, so that the sink's last handle can go with it.
    made_by_layer: bool,
}

impl Held {
    /// The state of a new service of the layer that shares `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Held {
        let routes = shared.routes.clone();
        let state = Arc::new(CachePadded::new(ServiceState {
            shared,
            route: OnceLock::new(),
            anchors: OnceLock::new(),
        }));
        let anchors: Vec<Arc<CachePadded<Anchor>>> = (0..shard_count())
            .map(|_| {
                Arc::new(CachePadded::new(Anchor {
                    state: state.clone(),
                }))
            })
            .collect();
        let _ = state
            .anchors
            .set(anchors.iter().map(Arc::downgrade).collect());
        // Any anchor: the layer's own service is cloned, not called, and
        // the thread building the router need not take a shard.
        let anchor = anchors[0].clone();
        routes.keep(key(&state), anchors.into_iter().map(|a| a as _).collect());
        Held {
            anchor: Some(anchor),
            made_by_layer: true,
        }
    }

    fn anchor(&self) -> &Arc<CachePadded<Anchor>> {
        self.anchor.as_ref().expect("taken only by drop")
    }

    /// What the service reads.
    pub(crate) fn state(&self) -> &ServiceState {
        &self.anchor().state
    }
}

/// How [`Routes`](super::Routes) knows a service's anchors: the address of
/// its state, unique while they hold it.
fn key(state: &Arc<CachePadded<ServiceState>>) -> usize {
    Arc::as_ptr(state) as usize
}

/// The element of `shards` (one per shard) for this thread.
fn here<T>(shards: &[T]) -> &T {
    &shards[shard_of_this_thread()]
}

impl Clone for Held {
    /// This thread's shard's anchor. Its own anchor if the others are gone:
    /// the flusher let them go while no service seemed to hold any, which
    /// a clone of a clone made on another core at that very moment can
    /// hide; it then still works, through one shared count.
    fn clone(&self) -> Self {
        let anchor = self.anchor();
        let mine = anchor
            .state
            .anchors
            .get()
            .and_then(|anchors| here(anchors).upgrade())
            .unwrap_or_else(|| anchor.clone());
        Held {
            anchor: Some(mine),
            made_by_layer: false,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.made_by_layer {
            return;
        }
        if let Some(anchor) = self.anchor.take() {
            let routes = anchor.state.shared.routes.clone();
            let key = key(&anchor.state);
            drop(anchor);
            // Dropped here, out of the lock: the last `Shared` may go with
            // them, and with it the sink's last handle, which flushes.
            drop(routes.take_if_unused(key));
        }
    }
}

impl ServiceState {
    /// The shard of the route of `template` (`None`: unmatched) this
    /// request is recorded in, entered on this thread; `None` if the layer
    /// does not record the route.
    pub(crate) fn enter(&self, template: Option<&str>) -> Option<ShardRef> {
        if let Some((cached, stats)) = self.route.get() {
            if cached.as_deref() == template {
                return stats.as_ref().map(|stats| stats.enter());
            }
        }
        let stats = self.shared.routes.route(template);
        let shard = stats.as_ref().map(|stats| stats.enter());
        let _ = self.route.set((template.map(Into::into), stats));
        shard
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::naming::{Naming, NamingMode};
    use crate::record::Routes;
    use crate::Statsd;

    use crate::sink::testing::quiet_statsd as statsd;

    /// What a layer shares, its routes drained by `statsd`'s flusher.
    fn shared(statsd: &Statsd) -> Arc<Shared> {
        let sink = statsd.sink().clone();
        let naming = Naming::new("p", NamingMode::Hierarchical, &[], None);
        let routes = Arc::new(Routes::new(naming, 0, sink.control().clone(), None));
        sink.register(routes.clone());
        Arc::new(Shared {
            routes,
            user: None,
            tags: None,
            select: None,
            grpc: false,
            reads_parts: false,
            _sink: sink,
        })
    }

    fn at(held: &Held) -> usize {
        Arc::as_ptr(held.anchor()).cast::<()>() as usize
    }

    #[test]
    fn clones_hold_their_own_threads_anchor_and_the_layer_lets_go_when_none_is_held() {
        let statsd = statsd();
        let shared = shared(&statsd);
        let routes = shared.routes.clone();
        let held = Held::new(shared);
        let group: Vec<usize> = routes.services()[&key(&held.anchor().state)]
            .iter()
            .map(|anchor| Arc::as_ptr(anchor).cast::<()>() as usize)
            .collect();
        assert_eq!(group.len(), shard_count());
        assert!(group.contains(&at(&held)));

        // A clone on each of at least twice as many threads as shards, all
        // alive at once, each thread taking the least-used shard after the
        // one before; more (up to 256) until two hold different anchors,
        // since other tests' threads hold shards too.
        let mut clones = Vec::new();
        let taken_while_held = std::thread::scope(|scope| {
            // Each thread waits for its sender to go: at the end, or when
            // this panics, so that a failure never leaves a thread waiting.
            let mut alive = Vec::new();
            while clones.len() < 256
                && (clones.len() < 2 * shard_count()
                    || (shard_count() > 1 && clones.iter().all(|at| *at == clones[0])))
            {
                let (tx, rx) = mpsc::channel();
                let (release, wait) = mpsc::channel::<()>();
                let held = &held;
                scope.spawn(move || {
                    let clone = held.clone();
                    tx.send(at(&clone)).unwrap();
                    let _ = wait.recv();
                });
                alive.push(release);
                clones.push(rx.recv().unwrap());
            }
            routes.take_unused().len()
        });
        assert_eq!(taken_while_held, 0, "held by services");
        assert!(clones.iter().all(|at| group.contains(at)), "{clones:?}");
        clones.sort_unstable();
        clones.dedup();
        if shard_count() > 1 {
            assert!(clones.len() > 1, "one anchor for every thread: {clones:?}");
        }

        assert!(routes.take_unused().is_empty(), "the layer's own service");
        // Its `Debug` stops at the anchor, which leads back to `routes`.
        let debug = format!("{held:?}");
        assert!(debug.contains("Anchor { .. }"), "{debug}");
        drop(held);
        assert!(routes.services().is_empty(), "let go with the last service");
    }

    /// What used to be written by every request on every core: the count
    /// of the state all clones share, of the service's own anchor, and of
    /// the route's stats. A request on a thread of another shard than the
    /// one that made the service leaves them as they were.
    #[test]
    fn a_request_on_another_core_writes_no_count_that_the_layers_service_holds() {
        if shard_count() == 1 {
            return;
        }
        let statsd = statsd();
        let shared = shared(&statsd);
        let routes = shared.routes.clone();
        let held = Held::new(shared);
        // The layer's own service holds the first anchor.
        let origin = 0;
        let stats = routes.get(Some("/a"));
        drop(held.state().enter(Some("/a")));
        let counts = |held: &Held| {
            (
                Arc::strong_count(held.anchor()),
                Arc::strong_count(&held.anchor().state),
                Arc::strong_count(&stats),
            )
        };
        let before = counts(&held);
        // Threads started one after the other until one is on another shard
        // than the first; all stay alive until then, so each makes the first
        // shard more used. Other tests' threads take and give back shards
        // meanwhile, so a few more than `shard_count()` may be needed.
        let done = std::thread::scope(|scope| {
            let mut waiting = Vec::new();
            for _ in 0..256 {
                let (tx, rx) = mpsc::channel();
                let (held, counts) = (&held, &counts);
                let (release, wait) = mpsc::channel::<()>();
                scope.spawn(move || {
                    if shard_of_this_thread() == origin {
                        tx.send(None).unwrap();
                        let _ = wait.recv();
                        return;
                    }
                    let clone = held.clone();
                    let entered = clone.state().enter(Some("/a"));
                    let during = counts(held);
                    drop(entered);
                    drop(clone);
                    tx.send(Some(during)).unwrap();
                });
                waiting.push(release);
                if let Some(during) = rx.recv().unwrap() {
                    return Some(during);
                }
            }
            None
        });
        let during = done.expect("a thread on another shard");
        assert_eq!(during, before, "(anchor, state, route stats) counts");
        assert_eq!(counts(&held), before);
    }

    #[test]
    fn a_clone_that_outlives_the_layers_service_is_let_go_by_the_flusher() {
        let statsd = statsd();
        let shared = shared(&statsd);
        let routes = shared.routes.clone();
        let held = Held::new(shared);
        let clone = held.clone();
        drop(held);
        assert_eq!(routes.services().len(), 1, "the clone holds its anchors");
        drop(clone);
        assert_eq!(routes.services().len(), 1, "until a drain");
        statsd.flush().unwrap();
        assert!(routes.services().is_empty());
        drop(routes);
        statsd.flush().unwrap();
        assert_eq!(statsd.sink().sources(), 0, "then the routes retire");
    }

    #[test]
    fn a_service_keeps_its_routes_stats_and_finds_any_other() {
        let statsd = statsd();
        let shared = shared(&statsd);
        let routes = shared.routes.clone();
        let held = Held::new(shared.clone());
        let other = Held::new(shared);
        assert_eq!(routes.services().len(), 2, "each service's anchors");
        drop(other);
        assert_eq!(routes.services().len(), 1);
        let state = held.state();
        let shard_of = |template| routes.get(template).enter();
        for template in [Some("/a"), Some("/a"), Some("/b"), None, Some("/a")] {
            let entered = state.enter(template).unwrap();
            assert!(Arc::ptr_eq(&entered, &shard_of(template)), "{template:?}");
        }
    }
}
