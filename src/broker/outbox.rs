// SPDX-License-Identifier: MPL-2.0
//! The broker sink's bounded queue: records wait here from the moment the
//! sink's `render` hands them over until the broker acknowledged them.
//!
//! ## Rules
//! 1. A record stays in the outbox until the broker acknowledged it
//!    ([`Outbox::ack`]); records leave in the order they came, whatever
//!    order the acknowledgements come in.
//! 2. At most `capacity` records are held (queued and in flight together).
//! 3. When a record arrives at a full outbox the [`Overflow`] policy decides,
//!    and every record it discards is counted in [`Stats::dropped`]:
//!    `drop-oldest` discards the oldest record not yet handed to the client
//!    (the newest when every held record is in flight), `drop-newest`
//!    discards the arriving one, `block` makes the caller wait for room
//!    (until [`Outbox::close`]; then the record is discarded and counted).
//! 4. At most `window` records are in flight (handed to the client and not
//!    acknowledged); [`Outbox::next_to_send`] hands the oldest queued one.
//! 5. After a reconnection the client calls [`Outbox::rewind`]: every record
//!    in flight is handed again from the oldest, in order, and counted in
//!    [`Stats::resent`] (the broker may have stored it already: delivery is
//!    at least once, duplicates are possible only for these records).
//! 6. A record the broker rejected for good ([`Outbox::fail`]) leaves the
//!    outbox and is counted in [`Stats::failed`].
//! 7. [`Outbox::wait_drained`] returns when nothing is held, when the
//!    outbox is closed, or at its deadline; it says whether it is empty.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What to do when a record arrives at a full outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Discard the oldest record that was not yet sent (the default: a
    /// monitoring consumer wants the newest state).
    #[default]
    DropOldest,
    /// Discard the arriving record.
    DropNewest,
    /// Wait for room (stalls `summary_src`'s task, never the video).
    Block,
}

/// One record to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Increasing per outbox, from 0.
    pub seq: u64,
    pub topic: String,
    /// The stream-id (Kafka's key).
    pub key: String,
    pub payload: Vec<u8>,
}

/// Counters, all since the outbox was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records accepted by [`Outbox::push`] (dropped ones included).
    pub received: u64,
    /// Acknowledged by the broker.
    pub delivered: u64,
    /// Discarded by the overflow policy (or by `close` while blocked).
    pub dropped: u64,
    /// Rejected for good by the broker.
    pub failed: u64,
    /// Handed again after a reconnection (possible duplicates).
    pub resent: u64,
    /// Held now (queued and in flight).
    pub held: u64,
    /// The most held at once.
    pub high_water: u64,
}

/// What [`Outbox::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest unsent record was discarded.
    DroppedOldest,
    /// The arriving record was discarded.
    DroppedNew,
}

#[derive(Debug)]
struct Entry {
    msg: Message,
    acked: bool,
}

#[derive(Debug)]
struct Inner {
    q: VecDeque<Entry>,
    /// Entries `q[..sent]` were handed to the client.
    sent: usize,
    next_seq: u64,
    closed: bool,
    stats: Stats,
}

/// See the module doc.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    window: usize,
    overflow: Overflow,
    inner: Mutex<Inner>,
    cond: Condvar,
}

impl Outbox {
    /// `capacity` and `window` are at least 1.
    pub fn new(capacity: usize, window: usize, overflow: Overflow) -> Self {
        Outbox {
            capacity: capacity.max(1),
            window: window.max(1),
            overflow,
            inner: Mutex::new(Inner {
                q: VecDeque::new(),
                sent: 0,
                next_seq: 0,
                closed: false,
                stats: Stats::default(),
            }),
            cond: Condvar::new(),
        }
    }

    /// Adds a record (rules 2, 3).
    pub fn push(&self, topic: String, key: String, payload: Vec<u8>) -> Pushed {
        let mut g = self.inner.lock();
        g.stats.received += 1;
        let mut result = Pushed::Queued;
        if g.q.len() >= self.capacity {
            match self.overflow {
                Overflow::DropNewest => {
                    g.stats.dropped += 1;
                    return Pushed::DroppedNew;
                }
                Overflow::DropOldest => {
                    let i = g.sent;
                    if i < g.q.len() {
                        g.q.remove(i);
                        result = Pushed::DroppedOldest;
                    } else {
                        g.stats.dropped += 1;
                        return Pushed::DroppedNew;
                    }
                    g.stats.dropped += 1;
                }
                Overflow::Block => {
                    while g.q.len() >= self.capacity && !g.closed {
                        self.cond.wait(&mut g);
                    }
                    if g.closed {
                        g.stats.dropped += 1;
                        return Pushed::DroppedNew;
                    }
                }
            }
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        g.q.push_back(Entry {
            msg: Message {
                seq,
                topic,
                key,
                payload,
            },
            acked: false,
        });
        Self::update_held(&mut g);
        self.cond.notify_all();
        result
    }

    fn update_held(g: &mut Inner) {
        g.stats.held = g.q.len() as u64;
        g.stats.high_water = g.stats.high_water.max(g.stats.held);
    }

    /// The oldest record not yet handed to the client, when fewer than
    /// `window` are in flight (rule 4); waits up to `timeout` for one.
    pub fn next_to_send(&self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut g = self.inner.lock();
        loop {
            if g.closed {
                return None;
            }
            // Acknowledged records behind an unacknowledged one (after a
            // rewind) are not handed again.
            while g.sent < g.q.len() && g.q[g.sent].acked {
                g.sent += 1;
            }
            if g.sent < g.q.len() && g.sent < self.window {
                let m = g.q[g.sent].msg.clone();
                g.sent += 1;
                return Some(m);
            }
            if self.cond.wait_until(&mut g, deadline).timed_out() {
                return None;
            }
        }
    }

    /// The broker acknowledged `seq` (rule 1).
    pub fn ack(&self, seq: u64) {
        self.finish(seq, false);
    }

    /// The broker rejected `seq` for good (rule 6).
    pub fn fail(&self, seq: u64) {
        self.finish(seq, true);
    }

    fn finish(&self, seq: u64, failed: bool) {
        let mut g = self.inner.lock();
        let sent = g.sent;
        let Some(e) = g.q.iter_mut().take(sent).find(|e| e.msg.seq == seq) else {
            return;
        };
        if e.acked {
            return;
        }
        e.acked = true;
        if failed {
            g.stats.failed += 1;
        } else {
            g.stats.delivered += 1;
        }
        while g.q.front().is_some_and(|e| e.acked) {
            g.q.pop_front();
            g.sent -= 1;
        }
        Self::update_held(&mut g);
        self.cond.notify_all();
    }

    /// After a reconnection: every unacknowledged record in flight is handed
    /// again, from the oldest (rule 5). Returns how many.
    pub fn rewind(&self) -> usize {
        let mut g = self.inner.lock();
        let n = g.q.iter().take(g.sent).filter(|e| !e.acked).count();
        g.stats.resent += n as u64;
        g.sent = 0;
        self.cond.notify_all();
        n
    }

    /// The client could not take `seq`, the last record handed: it is
    /// handed again next time (not counted as resent).
    pub fn rewind_one(&self, seq: u64) {
        let mut g = self.inner.lock();
        if g.sent > 0 && g.q[g.sent - 1].msg.seq == seq {
            g.sent -= 1;
        }
    }

    /// Waits until nothing is held, the outbox is closed, or `deadline`
    /// (rule 7). True when empty.
    pub fn wait_drained(&self, deadline: Instant) -> bool {
        let mut g = self.inner.lock();
        while !g.q.is_empty() && !g.closed {
            if self.cond.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        g.q.is_empty()
    }

    /// Wakes every waiter; [`Outbox::next_to_send`] returns `None` from now
    /// on and blocked pushes give up. Held records stay (and are counted in
    /// `held`).
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.cond.notify_all();
    }

    /// Opens a closed outbox again (a sink restarting in the same process).
    pub fn reopen(&self) {
        self.inner.lock().closed = false;
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn push(o: &Outbox, n: u8) -> Pushed {
        o.push("t".into(), "k".into(), vec![n])
    }

    fn take(o: &Outbox) -> Option<Message> {
        o.next_to_send(Duration::ZERO)
    }

    #[test]
    fn rule1_leaves_in_order_whatever_the_ack_order() {
        let o = Outbox::new(10, 10, Overflow::DropOldest);
        for i in 0..3 {
            push(&o, i);
        }
        let a = take(&o).unwrap();
        let b = take(&o).unwrap();
        let c = take(&o).unwrap();
        assert_eq!((a.payload[0], b.payload[0], c.payload[0]), (0, 1, 2));
        o.ack(c.seq);
        o.ack(b.seq);
        assert_eq!(o.stats().held, 3, "head not acked yet");
        o.ack(a.seq);
        assert_eq!(o.stats().held, 0);
        assert_eq!(o.stats().delivered, 3);
    }

    #[test]
    fn rule2_holds_at_most_capacity() {
        let o = Outbox::new(3, 1, Overflow::DropOldest);
        for i in 0..10 {
            push(&o, i);
        }
        let s = o.stats();
        assert_eq!(s.held, 3);
        assert_eq!(s.high_water, 3);
        assert_eq!(s.received, 10);
    }

    #[test]
    fn rule3_drop_oldest_spares_records_in_flight() {
        let o = Outbox::new(3, 1, Overflow::DropOldest);
        for i in 0..3 {
            push(&o, i);
        }
        let first = take(&o).unwrap();
        assert_eq!(push(&o, 3), Pushed::DroppedOldest);
        assert_eq!(o.stats().dropped, 1);
        o.ack(first.seq);
        let rest: Vec<u8> = std::iter::from_fn(|| {
            let m = take(&o)?;
            o.ack(m.seq);
            Some(m.payload[0])
        })
        .collect();
        assert_eq!(rest, vec![2, 3], "record 1 (oldest unsent) was dropped");
    }

    #[test]
    fn rule3_drop_oldest_drops_the_new_one_when_all_are_in_flight() {
        let o = Outbox::new(2, 2, Overflow::DropOldest);
        push(&o, 0);
        push(&o, 1);
        take(&o).unwrap();
        take(&o).unwrap();
        assert_eq!(push(&o, 2), Pushed::DroppedNew);
        assert_eq!(o.stats().dropped, 1);
    }

    #[test]
    fn rule3_drop_newest() {
        let o = Outbox::new(2, 1, Overflow::DropNewest);
        push(&o, 0);
        push(&o, 1);
        assert_eq!(push(&o, 2), Pushed::DroppedNew);
        let m = take(&o).unwrap();
        assert_eq!(m.payload, vec![0]);
        assert_eq!(o.stats().dropped, 1);
    }

    #[test]
    fn rule3_block_waits_for_room_and_gives_up_on_close() {
        let o = Arc::new(Outbox::new(1, 1, Overflow::Block));
        push(&o, 0);
        let o2 = o.clone();
        let t = std::thread::spawn(move || push(&o2, 1));
        // The pusher is blocked until the head is acknowledged.
        let m = o.next_to_send(Duration::from_secs(60)).unwrap();
        o.ack(m.seq);
        assert_eq!(t.join().unwrap(), Pushed::Queued);
        let o3 = o.clone();
        let t = std::thread::spawn(move || push(&o3, 2));
        o.close();
        assert_eq!(t.join().unwrap(), Pushed::DroppedNew);
        assert_eq!(o.stats().dropped, 1);
    }

    #[test]
    fn rule4_window_limits_records_in_flight() {
        let o = Outbox::new(10, 2, Overflow::DropOldest);
        for i in 0..5 {
            push(&o, i);
        }
        let a = take(&o).unwrap();
        take(&o).unwrap();
        assert!(take(&o).is_none(), "window of 2 is full");
        o.ack(a.seq);
        assert_eq!(take(&o).unwrap().payload, vec![2]);
    }

    #[test]
    fn rule5_rewind_hands_unacked_records_again_in_order() {
        let o = Outbox::new(10, 10, Overflow::DropOldest);
        for i in 0..4 {
            push(&o, i);
        }
        let a = take(&o).unwrap();
        take(&o).unwrap();
        take(&o).unwrap();
        o.ack(a.seq);
        assert_eq!(o.rewind(), 2);
        let again: Vec<u8> = std::iter::from_fn(|| take(&o).map(|m| m.payload[0])).collect();
        assert_eq!(again, vec![1, 2, 3]);
        assert_eq!(o.stats().resent, 2);
    }

    #[test]
    fn rule6_failed_records_leave_and_are_counted() {
        let o = Outbox::new(10, 10, Overflow::DropOldest);
        push(&o, 0);
        let m = take(&o).unwrap();
        o.fail(m.seq);
        let s = o.stats();
        assert_eq!((s.failed, s.delivered, s.held), (1, 0, 0));
    }

    #[test]
    fn rule7_wait_drained() {
        let o = Arc::new(Outbox::new(10, 10, Overflow::DropOldest));
        assert!(o.wait_drained(Instant::now()));
        push(&o, 0);
        assert!(!o.wait_drained(Instant::now()), "deadline passed, one held");
        let o2 = o.clone();
        let t =
            std::thread::spawn(move || o2.wait_drained(Instant::now() + Duration::from_secs(600)));
        let m = o.next_to_send(Duration::from_secs(60)).unwrap();
        o.ack(m.seq);
        assert!(t.join().unwrap());
    }
}
