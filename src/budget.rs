// SPDX-License-Identifier: MPL-2.0
//! One concurrency budget per endpoint in a process (`endpoint-concurrency`),
//! shared by every element that talks to that endpoint, with fair turns
//! between them. Plain Rust, free of GStreamer types.
//!
//! Rules:
//! 1. **Key.** A budget is found by its key: the endpoint's normalized base
//!    URLs (scheme and host lowercased, default port made explicit, no user
//!    info, query, fragment or trailing `/chat/completions`; a list sorted)
//!    plus the model ([`key`]). Elements whose keys are equal share one
//!    budget ([`lane`]); it lives while one of their lanes does.
//! 2. **Limit.** At most `limit` slots are granted at once. The limit of a
//!    shared budget is the smallest one asked for by the lanes that hold it
//!    now (each lane asks for `endpoint-concurrency` × its number of
//!    servers); it is recomputed when a lane joins or leaves.
//! 3. **Fair turns.** A lane (one element, one camera) asks for one slot per
//!    job it wants to start. When a slot is free it goes to the next lane in
//!    round-robin order (by lane number, after the lane served last) that
//!    has a request waiting, and within a lane to its oldest request. So
//!    lanes that always want more get the same number of slots, whatever
//!    the number of requests each has waiting: turns are per lane, not a
//!    FIFO of requests.
//! 4. **RAII.** A granted slot is a [`Permit`]; dropping it (after the
//!    answer, a cancel, a timeout or a panic unwinding the worker) frees the
//!    slot and hands it to the next turn at once.
//! 5. **Never the streaming thread.** [`Lane::acquire`] blocks its caller —
//!    a dispatcher worker thread (see [`crate::pool`]) — until a slot is
//!    granted or `stopped()` holds after a [`Lane::wake`]; a request given
//!    up is withdrawn, and a slot granted to it meanwhile goes on to the
//!    next turn.
//! 6. **Counts.** [`Lane::granted`] counts the slots a lane was granted;
//!    [`Budget::in_flight`] / [`Budget::waiting`] say what is used and
//!    asked for now.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

/// Default of `endpoint-concurrency`: requests in flight at once to one
/// server from the whole process. A single vLLM / NIM server batches
/// requests, and 8 keeps it busy without queueing tens of requests in it;
/// one element at the default `max-concurrency` (4) is not limited by it.
pub const DEFAULT_ENDPOINT_CONCURRENCY: u32 = 8;

/// The most `endpoint-concurrency` takes.
pub const MAX_ENDPOINT_CONCURRENCY: u32 = 1024;

/// Rule 1: the normalized form of one base URL (or chat-completions URL).
pub fn normalize(u: &url::Url) -> String {
    let scheme = u.scheme().to_ascii_lowercase();
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = u.port_or_known_default().unwrap_or(0);
    let path = u.path().trim_end_matches('/');
    let path = path.strip_suffix("/chat/completions").unwrap_or(path);
    let path = path.trim_end_matches('/');
    format!("{scheme}://{host}:{port}{path}")
}

/// Rule 1: the key of a list of servers and a model.
pub fn key<'a>(servers: impl IntoIterator<Item = &'a url::Url>, model: &str) -> String {
    let mut s: Vec<String> = servers.into_iter().map(normalize).collect();
    s.sort();
    s.dedup();
    format!("{} model={model}", s.join(","))
}

/// The scheduling state without locks (rules 2, 3, 6); the blocking wrapper
/// is [`Budget`].
#[derive(Debug, Default)]
pub struct Core {
    /// Each lane's limit (rule 2).
    limits: BTreeMap<u64, usize>,
    in_flight: usize,
    /// Waiting requests (tickets) per lane, oldest first.
    waiting: BTreeMap<u64, VecDeque<u64>>,
    /// Granted tickets not picked up yet.
    granted: HashSet<u64>,
    /// The lane served last (rule 3).
    last: Option<u64>,
    next_ticket: u64,
    /// Slots granted per lane (rule 6).
    grants: BTreeMap<u64, u64>,
}

impl Core {
    /// Rule 2.
    pub fn limit(&self) -> usize {
        self.limits.values().copied().min().unwrap_or(1).max(1)
    }

    pub fn join(&mut self, lane: u64, limit: usize) {
        self.limits.insert(lane, limit.max(1));
    }

    pub fn leave(&mut self, lane: u64) {
        self.limits.remove(&lane);
        if let Some(q) = self.waiting.remove(&lane) {
            for t in q {
                self.granted.remove(&t);
            }
        }
    }

    /// Queues a request of `lane`; returns its ticket.
    pub fn request(&mut self, lane: u64) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.waiting.entry(lane).or_default().push_back(t);
        t
    }

    /// Rule 3: hands free slots to waiting requests, one per lane in turn;
    /// returns the tickets granted.
    pub fn dispatch(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while self.in_flight < self.limit() {
            let next = match self.last {
                Some(l) => self
                    .waiting
                    .range(l + 1..)
                    .next()
                    .or_else(|| self.waiting.iter().next())
                    .map(|(k, _)| *k),
                None => self.waiting.keys().next().copied(),
            };
            let Some(lane) = next else { break };
            let q = self.waiting.get_mut(&lane).expect("lane is waiting");
            let t = q.pop_front().expect("waiting lanes are not empty");
            if q.is_empty() {
                self.waiting.remove(&lane);
            }
            self.in_flight += 1;
            self.granted.insert(t);
            self.last = Some(lane);
            *self.grants.entry(lane).or_default() += 1;
            out.push(t);
        }
        out
    }

    /// Picks up a granted ticket: true when it was granted (the slot is the
    /// caller's now).
    pub fn take(&mut self, ticket: u64) -> bool {
        self.granted.remove(&ticket)
    }

    /// Rule 5: withdraws a request; a slot already granted to it is freed.
    pub fn withdraw(&mut self, lane: u64, ticket: u64) {
        if self.granted.remove(&ticket) {
            self.release();
            return;
        }
        if let Some(q) = self.waiting.get_mut(&lane) {
            q.retain(|t| *t != ticket);
            if q.is_empty() {
                self.waiting.remove(&lane);
            }
        }
    }

    /// Rule 4: a slot is free again.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Requests waiting for a slot, all lanes.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Rule 6.
    pub fn grants(&self, lane: u64) -> u64 {
        self.grants.get(&lane).copied().unwrap_or(0)
    }
}

/// One shared budget (rules 2–6).
#[derive(Debug, Default)]
pub struct Budget {
    core: Mutex<Core>,
    changed: Condvar,
    lanes: AtomicU64,
}

impl Budget {
    pub fn new() -> Arc<Budget> {
        Arc::new(Budget::default())
    }

    /// A lane of this budget that asks for `limit` (rule 2).
    pub fn lane(self: &Arc<Self>, limit: usize) -> Lane {
        let id = self.lanes.fetch_add(1, Ordering::Relaxed);
        self.core.lock().join(id, limit);
        let lane = Lane {
            budget: self.clone(),
            id,
        };
        self.grant(&mut self.core.lock());
        lane
    }

    pub fn limit(&self) -> usize {
        self.core.lock().limit()
    }

    pub fn in_flight(&self) -> usize {
        self.core.lock().in_flight()
    }

    pub fn waiting(&self) -> usize {
        self.core.lock().waiting()
    }

    fn grant(&self, core: &mut Core) {
        if !core.dispatch().is_empty() {
            self.changed.notify_all();
        }
    }
}

/// One element's share of a budget (rule 3). Dropping it leaves the budget.
#[derive(Debug)]
pub struct Lane {
    budget: Arc<Budget>,
    id: u64,
}

/// A granted slot (rule 4): freed when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<Budget>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut core = self.budget.core.lock();
        core.release();
        self.budget.grant(&mut core);
    }
}

impl Lane {
    /// Rule 5: blocks until a slot is granted (`Some`), or until `stopped()`
    /// is true when this lane is woken (`None`). `stopped` is checked under
    /// the budget's lock, so a [`wake`](Self::wake) after it became true is
    /// never missed.
    pub fn acquire(&self, stopped: &dyn Fn() -> bool) -> Option<Permit> {
        let b = &self.budget;
        let mut core = b.core.lock();
        if stopped() {
            return None;
        }
        let ticket = core.request(self.id);
        b.grant(&mut core);
        loop {
            if core.take(ticket) {
                return Some(Permit { budget: b.clone() });
            }
            if stopped() {
                core.withdraw(self.id, ticket);
                b.grant(&mut core);
                return None;
            }
            b.changed.wait(&mut core);
        }
    }

    /// Wakes this budget's waiters so that they check `stopped` (rule 5).
    pub fn wake(&self) {
        let _core = self.budget.core.lock();
        self.budget.changed.notify_all();
    }

    /// Rule 6: this lane's requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.budget
            .core
            .lock()
            .waiting
            .get(&self.id)
            .map_or(0, VecDeque::len)
    }

    /// Rule 6.
    pub fn granted(&self) -> u64 {
        self.budget.core.lock().grants(self.id)
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut core = self.budget.core.lock();
        core.leave(self.id);
        self.budget.grant(&mut core);
        self.budget.changed.notify_all();
    }
}

static REGISTRY: Mutex<Option<HashMap<String, Weak<Budget>>>> = Mutex::new(None);

/// Rule 1: a lane of the process-wide budget for `key`, asking for `limit`.
pub fn lane(key: &str, limit: usize) -> Lane {
    let mut reg = REGISTRY.lock();
    let map = reg.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    let budget = match map.get(key).and_then(Weak::upgrade) {
        Some(b) => b,
        None => {
            let b = Budget::new();
            map.insert(key.to_string(), Arc::downgrade(&b));
            b
        }
    };
    budget.lane(limit)
}

impl crate::pool::Admission for Lane {
    fn admit(&self, stopped: &dyn Fn() -> bool) -> Option<Box<dyn Send>> {
        self.acquire(stopped).map(|p| Box::new(p) as Box<dyn Send>)
    }

    fn wake(&self) {
        Lane::wake(self)
    }

    fn waiting(&self) -> usize {
        Lane::waiting(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    /// Rule 1.
    #[test]
    fn rule1_key_normalizes_urls_and_names_the_model() {
        let a = key([&url("HTTP://LocalHost:80/v1/")], "m");
        let b = key(
            [&url("http://user:pw@localhost/v1/chat/completions?x=1")],
            "m",
        );
        assert_eq!(a, b);
        assert_eq!(a, "http://localhost:80/v1 model=m");
        assert!(!a.contains("pw"));
        assert_ne!(a, key([&url("http://localhost/v1")], "other"));
        assert_ne!(a, key([&url("http://localhost:8000/v1")], "m"));
        let l1 = key([&url("http://b:1/v1"), &url("http://a:1/v1")], "m");
        let l2 = key([&url("http://a:1/v1"), &url("http://b:1/v1")], "m");
        assert_eq!(l1, l2);
        // Same key, same budget; another key, another one.
        let k = "test-rule1 http://x:1/v1 model=m";
        let (x, y) = (lane(k, 4), lane(k, 4));
        assert!(Arc::ptr_eq(x.budget(), y.budget()));
        let z = lane("test-rule1 other", 4);
        assert!(!Arc::ptr_eq(x.budget(), z.budget()));
    }

    /// Rule 2.
    #[test]
    fn rule2_the_smallest_limit_of_the_lanes_holding_it() {
        let mut c = Core::default();
        c.join(0, 8);
        assert_eq!(c.limit(), 8);
        c.join(1, 3);
        assert_eq!(c.limit(), 3);
        for _ in 0..10 {
            c.request(0);
        }
        assert_eq!(c.dispatch().len(), 3);
        assert_eq!(c.dispatch().len(), 0);
        c.leave(1);
        assert_eq!(c.limit(), 8);
        assert_eq!(c.dispatch().len(), 5);
        assert_eq!(c.in_flight(), 8);
    }

    /// Rule 3: lanes that always want more get equal turns, whatever their
    /// number of waiting requests (a controlled fake: each step one slot in
    /// flight finishes and its lane asks again).
    #[test]
    fn rule3_turns_are_per_lane_not_per_request() {
        let mut c = Core::default();
        let lanes = 16u64;
        for l in 0..lanes {
            c.join(l, 4);
            // Unequal appetites: lane l keeps 1 + l requests waiting.
            for _ in 0..=l {
                c.request(l);
            }
        }
        let mut running: VecDeque<(u64, u64)> = VecDeque::new();
        // Tickets are numbered in request order: the lane of each.
        let mut owner: HashMap<u64, u64> = HashMap::new();
        let mut next = 0u64;
        for l in 0..lanes {
            for _ in 0..=l {
                owner.insert(next, l);
                next += 1;
            }
        }
        for t in c.dispatch() {
            running.push_back((t, owner[&t]));
        }
        for _ in 0..1600 {
            let (t, l) = running.pop_front().unwrap();
            assert!(c.take(t));
            c.release();
            let nt = c.request(l);
            owner.insert(nt, l);
            for g in c.dispatch() {
                running.push_back((g, owner[&g]));
            }
            assert_eq!(c.in_flight(), 4);
        }
        let grants: Vec<u64> = (0..lanes).map(|l| c.grants(l)).collect();
        let (min, max) = (*grants.iter().min().unwrap(), *grants.iter().max().unwrap());
        assert!(max - min <= 1, "unequal turns: {grants:?}");
        assert!(min >= 100, "{grants:?}");
    }

    /// Rule 3: a FIFO of requests would serve the greedy lane's backlog
    /// first; turns alternate instead.
    #[test]
    fn rule3_a_backlog_does_not_go_first() {
        let mut c = Core::default();
        c.join(0, 1);
        c.join(1, 1);
        let greedy: Vec<u64> = (0..5).map(|_| c.request(0)).collect();
        let modest = c.request(1);
        assert_eq!(c.dispatch(), vec![greedy[0]]);
        c.release();
        assert_eq!(c.dispatch(), vec![modest]);
        c.release();
        assert_eq!(c.dispatch(), vec![greedy[1]]);
    }

    /// Rule 4: dropping a permit hands the slot to the next waiter at once,
    /// also when the holder unwinds from a panic.
    #[test]
    fn rule4_dropping_a_permit_frees_the_slot() {
        let b = Budget::new();
        let (l0, l1) = (b.lane(1), b.lane(1));
        let never = || false;
        let p = l0.acquire(&never).unwrap();
        assert_eq!(b.in_flight(), 1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _held = p;
            panic!("the request panicked");
        }));
        assert!(r.is_err());
        assert_eq!(b.in_flight(), 0);
        let p1 = l1.acquire(&never).unwrap();
        assert_eq!(b.in_flight(), 1);
        drop(p1);
        assert_eq!(b.in_flight(), 0);
    }

    /// Rule 5: a waiter blocks until a slot is free, and a woken waiter
    /// whose pool stopped gives up without keeping a slot.
    #[test]
    fn rule5_waiters_block_until_granted_or_stopped() {
        let b = Budget::new();
        let (l0, l1) = (Arc::new(b.lane(1)), Arc::new(b.lane(1)));
        let never = || false;
        let held = l0.acquire(&never).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (l, s) = (l1.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            let got = l.acquire(&|| s.load(Ordering::SeqCst));
            tx.send(got.is_some()).unwrap();
            drop(got);
        });
        while b.waiting() == 0 {
            std::thread::yield_now();
        }
        assert!(rx.try_recv().is_err(), "granted while the slot was held");
        drop(held);
        assert!(rx.recv().unwrap());
        t.join().unwrap();
        assert_eq!(b.in_flight(), 0);

        // Stopped: gives up and leaves nothing behind.
        let held = l0.acquire(&never).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (l, s) = (l1.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            tx.send(l.acquire(&|| s.load(Ordering::SeqCst)).is_some())
                .unwrap();
        });
        while b.waiting() == 0 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        l1.wake();
        assert!(!rx.recv().unwrap());
        t.join().unwrap();
        assert_eq!(b.waiting(), 0);
        drop(held);
        assert_eq!(b.in_flight(), 0);
    }

    /// Rule 5: a slot granted to a request that is withdrawn goes on.
    #[test]
    fn rule5_a_withdrawn_grant_goes_to_the_next_turn() {
        let mut c = Core::default();
        c.join(0, 1);
        c.join(1, 1);
        let t0 = c.request(0);
        assert_eq!(c.dispatch(), vec![t0]);
        let t1 = c.request(1);
        c.withdraw(0, t0);
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.dispatch(), vec![t1]);
        assert!(c.take(t1));
    }

    /// Rule 6.
    #[test]
    fn rule6_counts() {
        let b = Budget::new();
        let l = b.lane(2);
        let never = || false;
        let p = (l.acquire(&never), l.acquire(&never));
        assert_eq!((b.in_flight(), l.granted()), (2, 2));
        drop(p);
        assert_eq!((b.in_flight(), b.waiting()), (0, 0));
        assert_eq!(b.limit(), 2);
    }
}
