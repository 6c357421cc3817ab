// SPDX-License-Identifier: MPL-2.0
//! The one output stream of the element: every record and marker that
//! leaves on `summary_src`, in its final order, as typed items. Free of
//! GStreamer types (markers are the element's own type `M`).
//!
//! Rules:
//! 1. Producers inside the core put items here as soon as their place in
//!    the order is known: the dispatcher puts each caption (and the alert
//!    decided for it, right after it) and each marker when every earlier
//!    chunk has its record; the summary engine puts each window summary
//!    when it is made (always after the captions of its window, which were
//!    put before the window could close), then the final summary, then
//!    [`Item::Eos`]. Nothing round-trips through the `summary_src` task.
//! 2. The `summary_src` task *blocks* in [`Outbox::next`] until an item
//!    exists or the stream stops (flush, shutdown): no polling, no timeouts.
//! 3. [`Item::Eos`] is put exactly once per segment, after every other item
//!    of it; after it the outbox takes nothing until a flush.
//! 4. Flush ([`Outbox::stop`] … [`Outbox::restart`]) discards what was not
//!    taken and wakes the waiting task; items put while stopped are
//!    discarded (they belong to the flushed segment).
//! 5. Bound: the captions put here and not taken yet count as pending for
//!    the dispatcher's non-live back-pressure ([`Outbox::captions_waiting`]),
//!    so for non-live input at most `max-pending-chunks` captions (plus
//!    their alerts, the window summaries and markers between them) wait
//!    here. Live input never waits on the output side: a `summary_src` sink
//!    slower than the stream lets captions accumulate here, one small
//!    record per chunk (documented in docs/design.md).
//! 6. Once the output side fails for good ([`Outbox::close`], a flow error
//!    downstream), items are discarded and counted, and nothing waits for
//!    room any more.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::record::{CaptionRecord, IncidentRecord, SummaryRecord};
use crate::summary::Alert;

/// One thing that leaves on `summary_src`.
#[derive(Debug)]
pub enum Item<M> {
    /// A chunk's record: its caption or its error.
    Caption(Box<CaptionRecord>),
    /// The alert decided for the caption just before it.
    Alert(Box<Alert>),
    /// A window summary (`summary_index` set) or the final summary.
    Summary(Box<SummaryRecord>),
    /// The element's marker (a segment, a GAP), between the records put
    /// before and after it.
    Marker(M),
    /// Everything of the segment is out.
    Eos,
    /// An `incident-start` or `incident-end` record
    /// ([`crate::summary::incidents`]), after the chunk that decided it.
    Incident(Box<IncidentRecord>),
}

/// Where the summary engine puts its records (implemented by [`Outbox`]).
pub trait SummaryOut: Send + Sync {
    fn summary(&self, r: SummaryRecord);
    /// After the final summary (or at once when nothing was summarized).
    fn eos(&self);
}

/// Where the incident stage puts its records (implemented by [`Outbox`]).
pub trait IncidentOut: Send + Sync {
    fn incident(&self, r: IncidentRecord);
}

struct Inner<M> {
    items: VecDeque<Item<M>>,
    /// Captions in `items`.
    captions: usize,
    stopped: bool,
    closed: bool,
    eos_put: bool,
}

impl<M> Inner<M> {
    /// The first item, keeping the caption count.
    fn pop(&mut self) -> Option<Item<M>> {
        let item = self.items.pop_front()?;
        if matches!(item, Item::Caption(_)) {
            self.captions -= 1;
        }
        Some(item)
    }
}

pub struct Outbox<M> {
    inner: Mutex<Inner<M>>,
    ready: Condvar,
    /// Items discarded because the output side had failed (rule 6).
    pub discarded: AtomicU64,
}

impl<M> Default for Outbox<M> {
    fn default() -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                captions: 0,
                stopped: false,
                closed: false,
                eos_put: false,
            }),
            ready: Condvar::new(),
            discarded: AtomicU64::new(0),
        }
    }
}

impl<M> Outbox<M> {
    /// Puts `item` last (rules 1, 3, 4, 6).
    pub fn put(&self, item: Item<M>) {
        let mut inner = self.inner.lock();
        if inner.stopped || inner.eos_put {
            return;
        }
        if inner.closed {
            self.discarded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match item {
            Item::Caption(_) => inner.captions += 1,
            Item::Eos => inner.eos_put = true,
            _ => {}
        }
        inner.items.push_back(item);
        self.ready.notify_all();
    }

    /// The next item; blocks until there is one. `None` once stopped
    /// (flush or shutdown) or closed (rule 2).
    pub fn next(&self) -> Option<Item<M>> {
        let mut inner = self.inner.lock();
        loop {
            if inner.stopped || inner.closed {
                return None;
            }
            if let Some(item) = inner.pop() {
                return Some(item);
            }
            self.ready.wait(&mut inner);
        }
    }

    /// The next item if there is one; never blocks.
    pub fn try_next(&self) -> Option<Item<M>> {
        let mut inner = self.inner.lock();
        if inner.stopped || inner.closed {
            return None;
        }
        inner.pop()
    }

    /// Captions put and not taken (rule 5); 0 once closed.
    pub fn captions_waiting(&self) -> usize {
        let inner = self.inner.lock();
        if inner.closed {
            0
        } else {
            inner.captions
        }
    }

    /// Flush start or shutdown: discards everything, wakes the taker.
    pub fn stop(&self) {
        let mut inner = self.inner.lock();
        inner.stopped = true;
        inner.items.clear();
        inner.captions = 0;
        inner.eos_put = false;
        self.ready.notify_all();
    }

    /// Flush stop: takes items again.
    pub fn restart(&self) {
        let mut inner = self.inner.lock();
        inner.stopped = false;
        inner.items.clear();
        inner.captions = 0;
        inner.eos_put = false;
    }

    /// The output side failed for good (rule 6).
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let n = inner.items.len() as u64;
        inner.items.clear();
        inner.captions = 0;
        self.discarded.fetch_add(n, Ordering::Relaxed);
        self.ready.notify_all();
    }

    /// Stopped or closed: the taker returns at once.
    pub fn is_stopped(&self) -> bool {
        let inner = self.inner.lock();
        inner.stopped || inner.closed
    }
}

impl<M: Send> SummaryOut for Outbox<M> {
    fn summary(&self, r: SummaryRecord) {
        self.put(Item::Summary(Box::new(r)));
    }
    fn eos(&self) {
        self.put(Item::Eos);
    }
}

impl<M: Send> IncidentOut for Outbox<M> {
    fn incident(&self, r: IncidentRecord) {
        self.put(Item::Incident(Box::new(r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn caption(i: u64) -> Item<()> {
        Item::Caption(Box::new(CaptionRecord {
            chunk_index: i,
            ..Default::default()
        }))
    }

    fn index(item: Option<Item<()>>) -> Option<u64> {
        match item {
            Some(Item::Caption(r)) => Some(r.chunk_index),
            _ => None,
        }
    }

    /// Rules 1 and 5: items leave in the order put; captions are counted
    /// until taken.
    #[test]
    fn items_leave_in_order_and_captions_are_counted() {
        let o = Outbox::default();
        o.put(caption(0));
        o.put(Item::Marker(()));
        o.put(caption(1));
        assert_eq!(o.captions_waiting(), 2);
        assert_eq!(index(o.next()), Some(0));
        assert!(matches!(o.next(), Some(Item::Marker(()))));
        assert_eq!(o.captions_waiting(), 1);
        assert_eq!(index(o.next()), Some(1));
        assert_eq!(o.captions_waiting(), 0);
    }

    /// Rule 2: the taker blocks until an item is put (from another thread,
    /// released by the test, not by time).
    #[test]
    fn the_taker_blocks_until_an_item_is_put() {
        let o = Arc::new(Outbox::<()>::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let taker = {
            let o = o.clone();
            std::thread::spawn(move || {
                tx.send(()).unwrap();
                index(o.next())
            })
        };
        rx.recv().unwrap();
        o.put(caption(7));
        assert_eq!(taker.join().unwrap(), Some(7));
    }

    /// Rule 3: one EOS, nothing after it until a flush.
    #[test]
    fn nothing_follows_eos() {
        let o = Outbox::<()>::default();
        o.put(caption(0));
        o.eos();
        o.put(caption(1));
        o.eos();
        assert_eq!(index(o.next()), Some(0));
        assert!(matches!(o.next(), Some(Item::Eos)));
        o.stop();
        o.restart();
        o.put(caption(2));
        assert_eq!(index(o.next()), Some(2));
    }

    /// Rule 4: a flush wakes the taker and discards what is left and what
    /// is put while stopped.
    #[test]
    fn a_flush_discards_and_wakes_the_taker() {
        let o = Arc::new(Outbox::<()>::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let taker = {
            let o = o.clone();
            std::thread::spawn(move || {
                tx.send(()).unwrap();
                o.next().is_none()
            })
        };
        rx.recv().unwrap();
        o.stop();
        assert!(taker.join().unwrap());
        o.put(caption(3));
        o.restart();
        o.put(caption(4));
        assert_eq!(o.captions_waiting(), 1);
        assert_eq!(index(o.next()), Some(4));
    }

    /// Rule 6: after a failure downstream nothing waits and nothing is kept.
    #[test]
    fn a_closed_outbox_counts_what_it_discards() {
        let o = Outbox::<()>::default();
        o.put(caption(0));
        o.close();
        o.put(caption(1));
        assert_eq!(o.captions_waiting(), 0);
        assert!(o.next().is_none());
        assert_eq!(o.discarded.load(Ordering::Relaxed), 2);
    }
}
