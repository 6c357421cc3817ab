// SPDX-License-Identifier: MPL-2.0
//! One ordered worker pool: the machinery under captions, event checks and
//! summary windows. Plain Rust, free of GStreamer types.
//!
//! Rules:
//! 1. **Order.** Every job and every pass-through item gets a sequence number
//!    when it is submitted; results wait in a reorder map and go to the
//!    release callback strictly in that order. A pass-through item
//!    ([`Pool::pass`], [`Pool::mark`]: an error record, a marker) needs no
//!    work but keeps its place.
//! 2. **Workers.** `workers` named threads (`{name}{i}`) each run one job at
//!    a time through the work function, with a [`CancellationToken`] of its
//!    own; so at most `workers` jobs run at once.
//! 3. **Never a lost job.** A panic in the work function becomes the result
//!    that the `panicked` function makes from the job; a panic in the
//!    release callback is contained (the pool goes on). Every job submitted
//!    ends as exactly one released result, unless [`Pool::stop`] discards it.
//! 4. **Locks.** The release callback runs with the pool's lock held: that
//!    is what keeps the order without a second lock. So it must not call
//!    this pool; it may call another pool (lock order: upstream pool →
//!    downstream pool, never the reverse) or anything that never calls back.
//!    The work function runs without the pool's lock.
//! 5. **Bounded queue, live drop.** [`Pool::wait_room`] blocks a feeder while
//!    `max` jobs wait for a thread. [`Pool::drop_oldest_queued`] (a live
//!    stream's policy) turns the oldest job that has not started into a
//!    result made from it; a job that started is never dropped.
//! 6. **Gates.** A job submitted with [`Pool::submit_gated`] starts only once
//!    every result before its gate was released (it reads what they made),
//!    and keeps its place in the order.
//! 7. **Fail pending.** [`Pool::fail_pending`] (a drain timeout) cancels the
//!    jobs that run and turns every job without a result (queued or
//!    running) into a result made from the job; they are released in order
//!    with the rest. A late answer of a failed job is discarded.
//! 8. **Stop and shutdown.** [`Pool::stop`] (flush) bumps the generation,
//!    cancels what runs and discards everything not released; results of an
//!    old generation that come in later are discarded; submissions are
//!    refused until [`Pool::start`], which numbers from 0 again.
//!    [`Pool::shutdown`] stops for good and ends the threads.
//! 9. **Counts.** [`Pool::counts`]: jobs queued, running, and results
//!    finished but not released yet (markers are not counted);
//!    [`Pool::wait_idle`] waits until nothing is left.
//! 10. **Admission.** A pool made with [`Pool::with_admission`] lets a worker
//!     take a job only with a permit of the [`Admission`] (the shared endpoint
//!     budget, [`crate::budget`]): while a job is startable and fewer workers
//!     ask than there are startable jobs, a worker asks, without the pool's
//!     lock; the job stays queued meanwhile (so rule 5 can still drop it).
//!     The permit is held while the job runs and dropped after (also after a
//!     panic or a cancel); a permit that finds no job any more is dropped at
//!     once. [`Pool::stop`] and [`Pool::shutdown`] wake workers that wait.
//! 11. **Start hook.** [`Pool::with_start`]: a function called with each
//!     job as a worker takes it (after its admission permit, rule 10),
//!     under the pool's lock, so in the order the jobs start (submission
//!     order for jobs without a gate). It must be quick and must not call
//!     the pool.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use crate::record::panic_message;

type WorkFn<J, O> = dyn Fn(&J, &CancellationToken) -> O + Send + Sync;
type PanicFn<J, O> = dyn Fn(&J, &str) -> O + Send + Sync;
type ReleaseFn<O> = dyn Fn(O) + Send + Sync;
type StartFn<J> = dyn Fn(&J) + Send + Sync;

/// What a pool runs (see the module rules).
pub struct Spec<J, O> {
    /// Thread name prefix.
    pub name: String,
    pub workers: usize,
    /// Makes a job's result (rule 2).
    pub work: Box<WorkFn<J, O>>,
    /// The result of a job whose work function panicked, with the panic's
    /// message (rule 3).
    pub panicked: Box<PanicFn<J, O>>,
    /// Takes each result in submission order, under the pool's lock
    /// (rules 1, 4).
    pub release: Box<ReleaseFn<O>>,
}

/// Rule 10: what a worker must pass before it takes a job.
pub trait Admission: Send + Sync {
    /// Blocks the worker until it may start a job: the permit, held while
    /// the job runs. `None` once `stopped()` is true after a
    /// [`wake`](Self::wake).
    fn admit(&self, stopped: &dyn Fn() -> bool) -> Option<Box<dyn Send>>;
    /// Makes waiting `admit` calls check `stopped`.
    fn wake(&self);
    /// Requests of this admission waiting now.
    fn waiting(&self) -> usize {
        0
    }
}

/// Rule 9.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub queued: usize,
    pub running: usize,
    /// Results (not markers) waiting in the reorder map.
    pub unreleased: usize,
}

impl Counts {
    /// Jobs without a result yet.
    pub fn unfinished(&self) -> usize {
        self.queued + self.running
    }
}

/// How [`Pool::wait_idle`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Nothing queued, running or unreleased.
    Idle,
    TimedOut,
    /// Stopped, shut down or restarted meanwhile.
    Stopped,
}

struct Queued<J> {
    seq: u64,
    /// Starts once `next_release >= gate` (rule 6); 0 = at once.
    gate: u64,
    job: Arc<J>,
}

struct Done<O> {
    out: O,
    counted: bool,
}

struct Inner<J, O> {
    generation: u64,
    stopped: bool,
    shutdown: bool,
    next_seq: u64,
    next_release: u64,
    queue: VecDeque<Queued<J>>,
    running: BTreeMap<u64, (Arc<J>, CancellationToken)>,
    done: BTreeMap<u64, Done<O>>,
    /// Counted entries in `done`.
    unreleased: usize,
    /// Workers asking the admission for a permit (rule 10).
    admitting: usize,
}

struct Shared<J, O> {
    inner: Mutex<Inner<J, O>>,
    /// Workers wait here for a job they may start.
    work: Condvar,
    /// Feeders and idle waiters wait here.
    changed: Condvar,
    spec: Spec<J, O>,
    /// Rule 10.
    admission: Option<Arc<dyn Admission>>,
    /// Bumped by every stop: admissions asked before it give up.
    halts: AtomicU64,
    on_start: Option<Box<StartFn<J>>>,
}

impl<J, O> Shared<J, O> {
    fn insert(&self, inner: &mut Inner<J, O>, seq: u64, out: O, counted: bool) {
        inner.unreleased += usize::from(counted);
        inner.done.insert(seq, Done { out, counted });
    }

    /// Hands what is in order to the release callback (rules 1, 3, 4).
    fn release(&self, inner: &mut Inner<J, O>) {
        let before = inner.next_release;
        while let Some(d) = inner.done.remove(&inner.next_release) {
            inner.next_release += 1;
            inner.unreleased -= usize::from(d.counted);
            let release = &self.spec.release;
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| release(d.out)));
        }
        if inner.next_release != before {
            // Gated jobs may start now.
            self.work.notify_all();
        }
        self.changed.notify_all();
    }

    fn idle(inner: &Inner<J, O>) -> bool {
        inner.queue.is_empty() && inner.running.is_empty() && inner.done.is_empty()
    }
}

/// The pool (see the module rules). Dropping it shuts it down.
pub struct Pool<J: Send + Sync + 'static, O: Send + 'static> {
    shared: Arc<Shared<J, O>>,
}

impl<J: Send + Sync + 'static, O: Send + 'static> Pool<J, O> {
    /// Starts the worker threads.
    pub fn new(spec: Spec<J, O>) -> std::io::Result<Pool<J, O>> {
        Self::with_hooks(spec, None, None)
    }

    /// Rule 10: starts the worker threads; each job waits for a permit of
    /// `admission` before a worker takes it.
    pub fn with_admission(
        spec: Spec<J, O>,
        admission: Option<Arc<dyn Admission>>,
    ) -> std::io::Result<Pool<J, O>> {
        Self::with_hooks(spec, admission, None)
    }

    /// Like [`new`](Self::new), with a start hook (rule 11).
    pub fn with_start(
        spec: Spec<J, O>,
        on_start: Option<Box<StartFn<J>>>,
    ) -> std::io::Result<Pool<J, O>> {
        Self::with_hooks(spec, None, on_start)
    }

    /// Rules 10 and 11 together.
    pub fn with_hooks(
        spec: Spec<J, O>,
        admission: Option<Arc<dyn Admission>>,
        on_start: Option<Box<StartFn<J>>>,
    ) -> std::io::Result<Pool<J, O>> {
        let (name, workers) = (spec.name.clone(), spec.workers);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                generation: 0,
                stopped: false,
                shutdown: false,
                next_seq: 0,
                next_release: 0,
                queue: VecDeque::new(),
                running: BTreeMap::new(),
                done: BTreeMap::new(),
                unreleased: 0,
                admitting: 0,
            }),
            work: Condvar::new(),
            changed: Condvar::new(),
            spec,
            admission,
            halts: AtomicU64::new(0),
            on_start,
        });
        let pool = Pool { shared };
        for i in 0..workers {
            let s = pool.shared.clone();
            std::thread::Builder::new()
                .name(format!("{name}{i}"))
                .spawn(move || worker(s))?;
        }
        Ok(pool)
    }

    /// Queues `job` (rule 1); gives it back while stopped.
    pub fn submit(&self, job: J) -> Result<u64, J> {
        self.enqueue(job, None)
    }

    /// Queues `job` to start once every result before `gate` was released
    /// (rule 6); `None`: every result before this job.
    pub fn submit_gated(&self, job: J, gate: Option<u64>) -> Result<u64, J> {
        self.enqueue(job, Some(gate))
    }

    fn enqueue(&self, job: J, gate: Option<Option<u64>>) -> Result<u64, J> {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        if inner.stopped {
            return Err(job);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let gate = match gate {
            None => 0,
            Some(g) => g.unwrap_or(seq),
        };
        inner.queue.push_back(Queued {
            seq,
            gate,
            job: Arc::new(job),
        });
        if gate == 0 {
            sh.work.notify_one();
        } else {
            sh.work.notify_all();
        }
        Ok(seq)
    }

    /// A result that needs no work, in its place (rule 1); counted as
    /// unreleased until released (rule 9). Gives it back while stopped.
    pub fn pass(&self, out: O) -> Result<u64, O> {
        self.put(out, true)
    }

    /// Like [`pass`](Self::pass), for a marker: not counted.
    pub fn mark(&self, out: O) -> Result<u64, O> {
        self.put(out, false)
    }

    fn put(&self, out: O, counted: bool) -> Result<u64, O> {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        if inner.stopped {
            return Err(out);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        sh.insert(&mut inner, seq, out, counted);
        sh.release(&mut inner);
        Ok(seq)
    }

    /// Rule 5: turns the oldest job that has not started into `f(job)`, in
    /// its place; returns the job, or `None` when every job started.
    pub fn drop_oldest_queued(&self, f: impl FnOnce(&J) -> O) -> Option<Arc<J>> {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        let q = inner.queue.pop_front()?;
        let out = f(&q.job);
        sh.insert(&mut inner, q.seq, out, true);
        sh.release(&mut inner);
        Some(q.job)
    }

    /// Rule 7: every job without a result becomes `f(job, running)`; returns
    /// how many.
    pub fn fail_pending(&self, mut f: impl FnMut(&J, bool) -> O) -> usize {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        let mut failed: Vec<(u64, O)> = Vec::new();
        for q in std::mem::take(&mut inner.queue) {
            failed.push((q.seq, f(&q.job, false)));
        }
        for (seq, (job, token)) in std::mem::take(&mut inner.running) {
            token.cancel();
            failed.push((seq, f(&job, true)));
        }
        let n = failed.len();
        for (seq, out) in failed {
            sh.insert(&mut inner, seq, out, true);
        }
        sh.release(&mut inner);
        n
    }

    /// Rule 9.
    pub fn counts(&self) -> Counts {
        let inner = self.shared.inner.lock();
        Counts {
            queued: inner.queue.len(),
            running: inner.running.len(),
            unreleased: inner.unreleased,
        }
    }

    /// Rule 5: waits while `max` jobs wait for a thread; returns at once on
    /// a stop or shutdown.
    pub fn wait_room(&self, max: usize) {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        let generation = inner.generation;
        while !inner.stopped && inner.generation == generation && inner.queue.len() >= max {
            sh.changed.wait(&mut inner);
        }
    }

    /// Rule 9: waits until nothing is queued, running or unreleased, or
    /// `deadline`, or a stop.
    pub fn wait_idle(&self, deadline: Instant) -> Idle {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        let generation = inner.generation;
        loop {
            if inner.stopped || inner.generation != generation {
                return Idle::Stopped;
            }
            if Shared::idle(&inner) {
                return Idle::Idle;
            }
            if sh.changed.wait_until(&mut inner, deadline).timed_out() {
                return if Shared::idle(&inner) {
                    Idle::Idle
                } else {
                    Idle::TimedOut
                };
            }
        }
    }

    /// Rule 8: flush start.
    pub fn stop(&self) {
        let sh = &self.shared;
        let mut inner = sh.inner.lock();
        inner.generation += 1;
        inner.stopped = true;
        for (_, (_, token)) in std::mem::take(&mut inner.running) {
            token.cancel();
        }
        inner.queue.clear();
        inner.done.clear();
        inner.unreleased = 0;
        inner.next_seq = 0;
        inner.next_release = 0;
        sh.halts.fetch_add(1, Ordering::SeqCst);
        sh.work.notify_all();
        sh.changed.notify_all();
        drop(inner);
        if let Some(a) = &sh.admission {
            a.wake();
        }
    }

    /// Rule 8: flush stop.
    pub fn start(&self) {
        let mut inner = self.shared.inner.lock();
        if !inner.shutdown {
            inner.stopped = false;
        }
    }

    /// Rule 8: stops for good; the threads end once their current job
    /// returns (cancellation makes that prompt).
    pub fn shutdown(&self) {
        self.stop();
        self.shared.inner.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(a) = &self.shared.admission {
            a.wake();
        }
    }
}

impl<J: Send + Sync + 'static, O: Send + 'static> Drop for Pool<J, O> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Rule 10: asks for a permit when a job is startable and fewer workers
/// ask than there are such jobs; `None` when this worker should wait.
fn admit<J, O>(
    sh: &Shared<J, O>,
    inner: &mut MutexGuard<'_, Inner<J, O>>,
) -> Option<Box<dyn Send>> {
    let adm = sh.admission.as_ref()?;
    let next = inner.next_release;
    let startable = inner.queue.iter().filter(|q| q.gate <= next).count();
    if startable <= inner.admitting {
        return None;
    }
    inner.admitting += 1;
    let halts = sh.halts.load(Ordering::SeqCst);
    let permit = MutexGuard::unlocked(inner, || {
        adm.admit(&|| sh.halts.load(Ordering::SeqCst) != halts)
    });
    inner.admitting -= 1;
    permit
}

fn worker<J, O>(sh: Arc<Shared<J, O>>) {
    loop {
        let mut permit: Option<Box<dyn Send>> = None;
        let (generation, seq, job, token) = {
            let mut inner = sh.inner.lock();
            loop {
                if inner.shutdown {
                    return;
                }
                if sh.admission.is_some() && permit.is_none() {
                    permit = admit(&sh, &mut inner);
                    if permit.is_none() {
                        // Nothing to ask for, or asked and stopped: wait
                        // for work unless something changed meanwhile.
                        let next = inner.next_release;
                        let startable = inner.queue.iter().filter(|q| q.gate <= next).count();
                        if inner.shutdown || startable > inner.admitting {
                            continue;
                        }
                        sh.work.wait(&mut inner);
                    }
                    continue;
                }
                let next = inner.next_release;
                if let Some(pos) = inner.queue.iter().position(|q| q.gate <= next) {
                    let q = inner.queue.remove(pos).expect("position is in the queue");
                    if let Some(f) = &sh.on_start {
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| f(&q.job)));
                    }
                    let token = CancellationToken::new();
                    inner.running.insert(q.seq, (q.job.clone(), token.clone()));
                    // Room for a feeder waiting in `wait_room`.
                    sh.changed.notify_all();
                    break (inner.generation, q.seq, q.job, token);
                }
                if permit.take().is_some() {
                    // Rule 10: the job it was for is gone (dropped, failed,
                    // stopped); the slot goes back at once.
                    continue;
                }
                sh.work.wait(&mut inner);
            }
        };
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| (sh.spec.work)(&job, &token)))
            .unwrap_or_else(|p| (sh.spec.panicked)(&job, &panic_message(&*p)));
        // Rule 10: the slot is free once the work returned, however.
        drop(permit);
        drop(job);
        let mut inner = sh.inner.lock();
        if inner.generation != generation || inner.running.remove(&seq).is_none() {
            // Stopped, or failed meanwhile (rules 7, 8): its result exists
            // or is unwanted.
            continue;
        }
        sh.insert(&mut inner, seq, out, true);
        sh.release(&mut inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Jobs that wait until the test opens them (or they are cancelled).
    #[derive(Default)]
    struct Gates {
        open: Mutex<HashSet<u64>>,
        cv: Condvar,
        started: Mutex<Vec<u64>>,
        started_cv: Condvar,
    }

    impl Gates {
        fn open(&self, i: u64) {
            self.open.lock().insert(i);
            self.cv.notify_all();
        }
        /// Blocks until `n` jobs started.
        fn wait_started(&self, n: usize) -> Vec<u64> {
            let mut s = self.started.lock();
            while s.len() < n {
                self.started_cv.wait(&mut s);
            }
            s.clone()
        }
        // `String` error (test-only): the fake's outcome as text.
        fn run(&self, i: u64, cancel: &CancellationToken) -> Result<u64, String> {
            {
                self.started.lock().push(i);
                self.started_cv.notify_all();
            }
            let mut open = self.open.lock();
            while !open.contains(&i) {
                if cancel.is_cancelled() {
                    return Err(format!("cancelled {i}"));
                }
                // Cancellation does not ring the condvar: look again soon
                // (only this fake waits like that).
                self.cv.wait_for(&mut open, Duration::from_millis(5));
            }
            if i == 99 {
                panic!("boom {i}");
            }
            Ok(i * 10)
        }
    }

    // Test-only: a job's outcome, compared as text.
    type Out = Result<u64, String>;

    fn pool(workers: usize, gates: Arc<Gates>) -> (Pool<u64, Out>, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let p = Pool::new(Spec {
            name: "pool-test-".into(),
            workers,
            work: Box::new(move |i: &u64, c: &CancellationToken| gates.run(*i, c)),
            panicked: Box::new(|i: &u64, msg: &str| Err(format!("panicked {i}: {msg}"))),
            release: Box::new(move |o| {
                let _ = tx.lock().send(o);
            }),
        })
        .unwrap();
        (p, rx)
    }

    /// Rule 10: with a budget of one slot two workers run one job at a time;
    /// the waiting job stays queued; the slot comes back after each job (a
    /// panic too); a stop wakes a worker that waits for a slot.
    #[test]
    fn admission_limits_and_returns_permits() {
        let g = Arc::new(Gates::default());
        let b = crate::budget::Budget::new();
        let lane: Arc<dyn Admission> = Arc::new(b.lane(1));
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let g1 = g.clone();
        let p: Pool<u64, Out> = Pool::with_admission(
            Spec {
                name: "pool-adm-".into(),
                workers: 2,
                work: Box::new(move |i: &u64, c: &CancellationToken| g1.run(*i, c)),
                panicked: Box::new(|i: &u64, msg: &str| Err(format!("panicked {i}: {msg}"))),
                release: Box::new(move |o| {
                    let _ = tx.lock().send(o);
                }),
            },
            Some(lane),
        )
        .unwrap();
        p.submit(1).unwrap();
        p.submit(2).unwrap();
        assert_eq!(g.wait_started(1), vec![1]);
        while b.waiting() == 0 {
            std::thread::yield_now();
        }
        assert_eq!(p.counts().queued, 1, "2 waits for the slot in the queue");
        assert_eq!(b.in_flight(), 1);
        g.open(1);
        assert_eq!(rx.recv().unwrap(), Ok(10));
        assert_eq!(g.wait_started(2), vec![1, 2]);
        g.open(2);
        assert_eq!(rx.recv().unwrap(), Ok(20));
        g.open(99);
        p.submit(99).unwrap();
        assert_eq!(rx.recv().unwrap(), Err("panicked 99: boom 99".into()));
        assert_eq!(b.in_flight(), 0, "a panicking job gave its slot back");

        // Another element holds the only slot: 3 waits; a stop wakes it.
        let other = b.lane(1);
        let held = other.acquire(&|| false).unwrap();
        p.submit(3).unwrap();
        while b.waiting() == 0 {
            std::thread::yield_now();
        }
        p.stop();
        while b.waiting() != 0 {
            std::thread::yield_now();
        }
        drop(held);
        assert_eq!(b.in_flight(), 0, "no slot kept by the stopped pool");
        assert_eq!(*g.started.lock(), vec![1, 2, 99], "3 never started");
    }

    /// Rules 1 and 2: later jobs finish first; results leave in submission
    /// order, a pass-through item in its place.
    #[test]
    fn results_leave_in_submission_order() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(3, g.clone());
        p.submit(1).unwrap();
        p.pass(Err("passed".into())).unwrap();
        p.submit(2).unwrap();
        p.submit(3).unwrap();
        assert_eq!(g.wait_started(3).len(), 3, "three workers run at once");
        g.open(3);
        g.open(2);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert_eq!(p.counts().unreleased, 3, "2, the pass and 3 wait for 1");
        g.open(1);
        let got: Vec<Out> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![Ok(10), Err("passed".into()), Ok(20), Ok(30)]);
    }

    /// Rule 2: the threads are named.
    #[test]
    fn workers_are_named_threads() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let p: Pool<(), Option<String>> = Pool::new(Spec {
            name: "pool-name-".into(),
            workers: 1,
            work: Box::new(|_: &(), _: &CancellationToken| {
                std::thread::current().name().map(String::from)
            }),
            panicked: Box::new(|_: &(), _: &str| None),
            release: Box::new(move |o| {
                let _ = tx.lock().send(o);
            }),
        })
        .unwrap();
        p.submit(()).unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("pool-name-0"));
    }

    /// Rule 3: a panic is a result, and the pool goes on.
    #[test]
    fn a_panic_is_a_result() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(1, g.clone());
        g.open(99);
        g.open(1);
        p.submit(99).unwrap();
        p.submit(1).unwrap();
        assert_eq!(rx.recv().unwrap(), Err("panicked 99: boom 99".into()));
        assert_eq!(rx.recv().unwrap(), Ok(10));
    }

    /// Rule 4: two pools chained, the first releasing into the second under
    /// its lock, keep one order and do not deadlock.
    #[test]
    fn chained_pools_keep_one_order() {
        let g = Arc::new(Gates::default());
        let (second, rx) = pool(2, g.clone());
        let second = Arc::new(second);
        let s2 = second.clone();
        let g1 = g.clone();
        let first: Pool<u64, Out> = Pool::new(Spec {
            name: "pool-first-".into(),
            workers: 2,
            work: Box::new(move |i: &u64, c: &CancellationToken| g1.run(*i, c)),
            panicked: Box::new(|_: &u64, m: &str| Err(m.into())),
            release: Box::new(move |o: Out| {
                // Good results get more work; errors pass through.
                let _ = match o {
                    Ok(v) => s2.submit(v + 1).map(|_| ()).map_err(|_| ()),
                    Err(e) => s2.pass(Err(e)).map(|_| ()).map_err(|_| ()),
                };
            }),
        })
        .unwrap();
        for i in [1, 2, 99] {
            g.open(i);
        }
        // The second stage's jobs: 11 and 21 (the results + 1).
        g.open(21);
        g.open(11);
        first.submit(2).unwrap();
        first.submit(99).unwrap();
        first.submit(1).unwrap();
        let got: Vec<Out> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![Ok(210), Err("boom 99".into()), Ok(110)]);
    }

    /// Rule 5: a feeder waits while the queue is full; the oldest job not
    /// started is dropped in its place, a running one never.
    #[test]
    fn bounded_queue_and_live_drop() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(1, g.clone());
        let p = Arc::new(p);
        p.submit(1).unwrap();
        g.wait_started(1);
        p.submit(2).unwrap();
        p.submit(3).unwrap();
        assert_eq!(
            p.counts(),
            Counts {
                queued: 2,
                running: 1,
                unreleased: 0
            }
        );
        let (tx, fed) = mpsc::channel();
        let feeder = {
            let p = p.clone();
            std::thread::spawn(move || {
                p.wait_room(2);
                tx.send(()).unwrap();
            })
        };
        assert!(fed.recv_timeout(Duration::from_millis(50)).is_err());
        let dropped = p.drop_oldest_queued(|i| Err(format!("dropped {i}")));
        assert_eq!(dropped.as_deref(), Some(&2));
        fed.recv().unwrap();
        feeder.join().unwrap();
        g.open(1);
        g.open(3);
        let got: Vec<Out> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![Ok(10), Err("dropped 2".into()), Ok(30)]);
        assert!(p.drop_oldest_queued(|_| Ok(0)).is_none());
    }

    /// Rule 6: a gated job waits for the results before its gate, not for
    /// those after it.
    #[test]
    fn a_gated_job_starts_after_its_gate() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(3, g.clone());
        p.submit(1).unwrap();
        let tail = p.submit(2).unwrap();
        p.submit_gated(3, Some(tail)).unwrap();
        assert_eq!(g.wait_started(2), vec![1, 2]);
        g.open(3);
        g.open(1);
        // 1 released: 3 starts while 2 still runs.
        assert_eq!(g.wait_started(3)[2], 3);
        g.open(2);
        let got: Vec<Out> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![Ok(10), Ok(20), Ok(30)]);
    }

    /// Rule 7: what is queued or running becomes a result, once.
    #[test]
    fn fail_pending_makes_results_in_order() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(1, g.clone());
        p.submit(1).unwrap();
        p.submit(2).unwrap();
        g.wait_started(1);
        let n = p.fail_pending(|i, running| Err(format!("{i} failed, running {running}")));
        assert_eq!(n, 2);
        assert_eq!(rx.recv().unwrap(), Err("1 failed, running true".into()));
        assert_eq!(rx.recv().unwrap(), Err("2 failed, running false".into()));
        assert_eq!(p.wait_idle(Instant::now()), Idle::Idle);
        g.open(1);
        p.submit(5).unwrap();
        g.open(5);
        assert_eq!(rx.recv().unwrap(), Ok(50), "the late answer of 1 is gone");
    }

    /// Rule 8: a stop discards, refuses, and the old generation's late
    /// results never come out.
    #[test]
    fn stop_discards_the_old_generation() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(1, g.clone());
        p.submit(1).unwrap();
        g.wait_started(1);
        p.submit(2).unwrap();
        p.stop();
        assert_eq!(p.submit(3), Err(3));
        assert!(p.mark(Ok(0)).is_err());
        p.start();
        g.open(4);
        assert_eq!(p.submit(4), Ok(0), "numbering from 0 again");
        assert_eq!(rx.recv().unwrap(), Ok(40));
        p.shutdown();
        assert_eq!(p.submit(5), Err(5));
        p.start();
        assert_eq!(p.submit(6), Err(6), "shut down for good");
    }

    /// Rule 9: markers keep their place but are not counted; wait_idle.
    #[test]
    fn counts_and_idle() {
        let g = Arc::new(Gates::default());
        let (p, rx) = pool(1, g.clone());
        p.submit(1).unwrap();
        p.mark(Ok(7)).unwrap();
        p.pass(Ok(8)).unwrap();
        g.wait_started(1);
        assert_eq!(
            p.counts(),
            Counts {
                queued: 0,
                running: 1,
                unreleased: 1
            }
        );
        assert_eq!(
            p.wait_idle(Instant::now() + Duration::from_millis(20)),
            Idle::TimedOut
        );
        g.open(1);
        assert_eq!(
            p.wait_idle(Instant::now() + Duration::from_secs(600)),
            Idle::Idle
        );
        let got: Vec<Out> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got, vec![Ok(10), Ok(7), Ok(8)]);
        assert_eq!(p.counts(), Counts::default());
    }
}
