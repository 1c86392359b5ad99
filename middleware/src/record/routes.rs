//! Every route's [`RouteStats`], found by route template, built once per
//! template, and drained together by the sink's flusher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use super::stats::{Merged, RouteStats};
use crate::naming::Naming;
use crate::sink::{Control, PacketWriter, Source};

/// The routes of one layer. A [`Source`] of the sink: the flusher drains it
/// once per window, on `flush()` and at shutdown.
#[derive(Debug)]
pub(crate) struct Routes {
    naming: Naming,
    timer_cap: usize,
    control: Arc<Control>,
    unmatched: Arc<RouteStats>,
    by_template: RwLock<HashMap<Box<str>, Arc<RouteStats>>>,
    /// The flusher's scratch, kept between windows.
    merged: Mutex<Merged>,
}

impl Routes {
    pub(crate) fn new(naming: Naming, timer_cap: usize, control: Arc<Control>) -> Self {
        Routes {
            unmatched: Arc::new(RouteStats::new(
                naming.names(None),
                timer_cap,
                control.clone(),
            )),
            naming,
            timer_cap,
            control,
            by_template: RwLock::default(),
            merged: Mutex::default(),
        }
    }

    /// The stats of the route matching `template`, or of the unmatched
    /// requests. Built on a template's first request.
    pub(crate) fn get(&self, template: Option<&str>) -> Arc<RouteStats> {
        let Some(template) = template else {
            return self.unmatched.clone();
        };
        // A poisoned lock only means another thread panicked mid-insert of a
        // complete value; the map is still consistent.
        if let Some(stats) = self
            .by_template
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(template)
        {
            return stats.clone();
        }
        let stats = Arc::new(RouteStats::new(
            self.naming.names(Some(template)),
            self.timer_cap,
            self.control.clone(),
        ));
        self.by_template
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(template.into())
            .or_insert(stats)
            .clone()
    }

    fn all(&self) -> Vec<Arc<RouteStats>> {
        let by_template = self.by_template.read().unwrap_or_else(|e| e.into_inner());
        std::iter::once(&self.unmatched)
            .chain(by_template.values())
            .cloned()
            .collect()
    }
}

impl Source for Routes {
    fn drain(&self, out: &mut PacketWriter) {
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        // The map's lock is not held while draining: a new route's first
        // request never waits for a flush.
        for stats in self.all() {
            stats.drain(out, &mut merged);
        }
    }

    fn in_use(&self) -> bool {
        // `all()` holds one more reference to each; a recorder one more still.
        self.all().iter().any(|stats| Arc::strong_count(stats) > 2)
    }
}
