// SPDX-License-Identifier: MPL-2.0
//! Runs chunk jobs on a backend with bounded concurrency and a bounded queue,
//! and hands the results back in chunk order. Free of GStreamer types.
//!
//! * `max-concurrency` worker threads each take one job at a time and call the
//!   backend (which may block them on the network or on compute). So at most
//!   `max-concurrency` requests are in flight.
//! * "Pending" chunks are those submitted whose record has not been taken by
//!   the output side yet (queued, in flight, or finished and waiting for an
//!   earlier chunk or for the output). When `max-pending-chunks` of them
//!   exist, [`Dispatcher::submit`]
//!   either waits for room (non-live input: backpressure, nothing is dropped)
//!   or drops the oldest pending chunk (live input): the oldest one not sent
//!   yet, or, when all pending chunks are in flight, the oldest request (which
//!   is cancelled). It becomes an error record counted in `chunks-dropped`.
//! * Finished records wait in a reorder map until every earlier chunk has
//!   finished; [`Dispatcher::next_output`] returns them strictly in submission
//!   order, then `Eos` once a drain was requested and everything is out.
//! * Every submitted chunk ends as exactly one record (caption or error),
//!   unless a flush/seek or a state change discards it.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, ChunkJob};
use crate::record::{without_nul, SummaryRecord};

#[derive(Debug, Default)]
pub struct Stats {
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl Stats {
    pub fn reset(&self) {
        for c in [
            &self.submitted,
            &self.completed,
            &self.failed,
            &self.dropped,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// What the output side receives.
#[derive(Debug)]
pub enum Output {
    Record(Box<SummaryRecord>),
    /// Everything submitted before the drain request has been returned.
    Eos,
}

#[derive(Debug)]
pub enum Submitted {
    Queued,
    /// Live overflow: these older chunks were dropped to make room.
    DroppedOlder(Vec<u64>),
    /// The dispatcher is flushing or shut down; the job was discarded.
    Flushing,
}

struct Queued {
    seq: u64,
    job: ChunkJob,
    template: SummaryRecord,
    submitted: Instant,
}

struct InFlight {
    template: SummaryRecord,
    token: CancellationToken,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    flushing: bool,
    shutdown: bool,
    next_seq: u64,
    next_emit: u64,
    queue: VecDeque<Queued>,
    in_flight: BTreeMap<u64, InFlight>,
    done: BTreeMap<u64, SummaryRecord>,
    eos_requested: bool,
    eos_returned: bool,
    eos_done: bool,
}

impl Inner {
    /// Chunks without a result yet.
    fn unfinished(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// What `max-pending-chunks` bounds for non-live input: chunks without a
    /// result, plus results not yet taken by the output side (so a blocked
    /// `summary_src` slows non-live input down too). Live input bounds only
    /// [`unfinished`](Self::unfinished).
    fn pending(&self) -> usize {
        self.unfinished() + self.done.len()
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Workers wait here for jobs.
    work: Condvar,
    /// Submitters wait here for room.
    room: Condvar,
    /// The output side waits here for records; drain waits here too.
    out: Condvar,
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    max_pending: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, inner: &mut Inner, seq: u64, record: SummaryRecord) {
        if record.is_error() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        inner.done.insert(seq, record);
        self.out.notify_all();
        self.room.notify_all();
    }
}

pub struct Dispatcher {
    shared: Arc<Shared>,
}

fn error_record(template: &SummaryRecord, msg: String, since: Option<Instant>) -> SummaryRecord {
    let mut r = template.clone();
    r.error = Some(msg);
    r.latency = since.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    r
}

impl Dispatcher {
    pub fn new(
        backend: Arc<dyn Backend>,
        max_concurrency: usize,
        max_pending: usize,
        stats: Arc<Stats>,
    ) -> Dispatcher {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            out: Condvar::new(),
            backend,
            stats,
            max_pending: max_pending.max(1),
        });
        for i in 0..max_concurrency.max(1) {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("vsssummarize-w{i}"))
                .spawn(move || worker(s))
                .expect("cannot spawn a vsssummarize worker thread");
        }
        Dispatcher { shared }
    }

    /// Number of chunks queued or in flight.
    pub fn pending(&self) -> usize {
        self.shared.lock().unfinished()
    }

    /// Submits one chunk. `template` holds the record's chunk fields; the
    /// worker fills in the result. Blocks while the queue is full unless
    /// `live`, in which case the oldest pending chunks are dropped instead.
    pub fn submit(&self, job: ChunkJob, template: SummaryRecord, live: bool) -> Submitted {
        let sh = &self.shared;
        let mut inner = sh.lock();
        let mut dropped = Vec::new();
        loop {
            if inner.flushing || inner.shutdown {
                return Submitted::Flushing;
            }
            if live {
                // Live: only unfinished work is dropped to make room; results
                // (drop records included) never block a live stream.
                if inner.unfinished() < sh.max_pending {
                    break;
                }
                match drop_oldest(sh, &mut inner) {
                    Some(idx) => dropped.push(idx),
                    None => break,
                }
            } else {
                if inner.pending() < sh.max_pending {
                    break;
                }
                inner = sh.room.wait(inner).unwrap_or_else(|e| e.into_inner());
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.queue.push_back(Queued {
            seq,
            job,
            template,
            submitted: Instant::now(),
        });
        sh.stats.submitted.fetch_add(1, Ordering::Relaxed);
        sh.work.notify_one();
        if dropped.is_empty() {
            Submitted::Queued
        } else {
            Submitted::DroppedOlder(dropped)
        }
    }

    /// Blocks until the next record in order (or `Eos`) is available, or
    /// `timeout` passes (`None`), or the dispatcher is flushing/shut down (`None`).
    pub fn next_output(&self, timeout: Duration) -> Option<Output> {
        let sh = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut inner = sh.lock();
        loop {
            if inner.flushing || inner.shutdown {
                return None;
            }
            let next = inner.next_emit;
            if let Some(r) = inner.done.remove(&next) {
                inner.next_emit += 1;
                // A taken record frees room for a waiting non-live submitter.
                sh.room.notify_all();
                return Some(Output::Record(Box::new(r)));
            }
            if inner.eos_requested && !inner.eos_returned && inner.next_emit == inner.next_seq {
                inner.eos_returned = true;
                return Some(Output::Eos);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            inner = sh
                .out
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// True while flushing or after shutdown: `next_output` returns at once.
    pub fn is_stopped(&self) -> bool {
        let inner = self.shared.lock();
        inner.flushing || inner.shutdown
    }

    /// Called by the output side once it has pushed the `Eos` output.
    pub fn eos_done(&self) {
        let mut inner = self.shared.lock();
        inner.eos_done = true;
        self.shared.out.notify_all();
    }

    /// EOS: waits until every submitted chunk has been returned by
    /// [`next_output`](Self::next_output) followed by `Eos` and the output side
    /// called [`eos_done`](Self::eos_done). If the chunks are not finished
    /// within `timeout`, the unfinished ones become error records (and their
    /// requests are cancelled). Returns the number of chunks timed out this way,
    /// or `None` if a flush or shutdown interrupted the drain.
    pub fn drain(&self, timeout: Duration, output_grace: Duration) -> Option<usize> {
        let sh = &self.shared;
        let mut inner = sh.lock();
        inner.eos_requested = true;
        sh.out.notify_all();
        let deadline = Instant::now() + timeout;
        let mut timed_out = 0;
        loop {
            if inner.flushing || inner.shutdown {
                return None;
            }
            if inner.eos_done {
                return Some(timed_out);
            }
            let now = Instant::now();
            if now >= deadline {
                if timed_out == 0 && inner.unfinished() > 0 {
                    let msg = format!(
                        "drain-timeout ({:.1} s) expired at EOS before the model answered",
                        timeout.as_secs_f64()
                    );
                    timed_out = fail_all(sh, &mut inner, &msg);
                    // Give the output side time to push what is left.
                    let deadline2 = Instant::now() + output_grace;
                    while !inner.eos_done && !inner.flushing && !inner.shutdown {
                        let now = Instant::now();
                        if now >= deadline2 {
                            break;
                        }
                        inner = sh
                            .out
                            .wait_timeout(inner, deadline2 - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
                return if inner.flushing || inner.shutdown {
                    None
                } else {
                    Some(timed_out)
                };
            }
            inner = sh
                .out
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Flush start: cancels and forgets all work; blocked callers return.
    pub fn flush_start(&self) {
        let sh = &self.shared;
        let mut inner = sh.lock();
        inner.generation += 1;
        inner.flushing = true;
        discard_all(&mut inner);
        sh.work.notify_all();
        sh.room.notify_all();
        sh.out.notify_all();
    }

    /// Flush stop: accepts work again, numbering from scratch.
    pub fn flush_stop(&self) {
        let mut inner = self.shared.lock();
        inner.flushing = false;
        inner.next_seq = 0;
        inner.next_emit = 0;
        inner.eos_requested = false;
        inner.eos_returned = false;
        inner.eos_done = false;
    }

    /// Cancels everything and stops the workers (they exit as soon as their
    /// current backend call returns, which cancellation makes prompt).
    pub fn shutdown(&self) {
        let sh = &self.shared;
        let mut inner = sh.lock();
        inner.generation += 1;
        inner.shutdown = true;
        discard_all(&mut inner);
        sh.work.notify_all();
        sh.room.notify_all();
        sh.out.notify_all();
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn discard_all(inner: &mut Inner) {
    for (_, f) in std::mem::take(&mut inner.in_flight) {
        f.token.cancel();
    }
    inner.queue.clear();
    inner.done.clear();
    inner.eos_requested = false;
    inner.eos_returned = false;
    inner.eos_done = false;
}

/// Drops the oldest chunk that has not been sent yet or, when every pending
/// chunk is already in flight, cancels the oldest request. Work in progress
/// is kept when possible, since it finishes soonest. Returns the chunk index.
fn drop_oldest(sh: &Shared, inner: &mut Inner) -> Option<u64> {
    let (seq, template, since) = if let Some(q) = inner.queue.pop_front() {
        (q.seq, q.template, Some(q.submitted))
    } else {
        let seq = *inner.in_flight.keys().next()?;
        let f = inner.in_flight.remove(&seq).expect("key exists");
        f.token.cancel();
        (seq, f.template, None)
    };
    let idx = template.chunk_index;
    let msg = format!(
        "dropped: live input is ahead of the model (max-pending-chunks={} reached); raise max-concurrency or chunk-duration, or lower num-frames-per-chunk",
        sh.max_pending
    );
    let rec = error_record(&template, msg, since);
    sh.stats.dropped.fetch_add(1, Ordering::Relaxed);
    inner.done.insert(seq, rec);
    sh.out.notify_all();
    Some(idx)
}

/// Turns every pending chunk into an error record.
fn fail_all(sh: &Shared, inner: &mut Inner, msg: &str) -> usize {
    let mut n = 0;
    for q in std::mem::take(&mut inner.queue) {
        let r = error_record(&q.template, msg.to_string(), Some(q.submitted));
        sh.finish(inner, q.seq, r);
        n += 1;
    }
    for (seq, f) in std::mem::take(&mut inner.in_flight) {
        f.token.cancel();
        let r = error_record(&f.template, msg.to_string(), None);
        sh.finish(inner, seq, r);
        n += 1;
    }
    n
}

fn worker(sh: Arc<Shared>) {
    loop {
        let (generation, q, token) = {
            let mut inner = sh.lock();
            loop {
                if inner.shutdown {
                    return;
                }
                if let Some(q) = inner.queue.pop_front() {
                    let token = CancellationToken::new();
                    inner.in_flight.insert(
                        q.seq,
                        InFlight {
                            template: q.template.clone(),
                            token: token.clone(),
                        },
                    );
                    break (inner.generation, q, token);
                }
                inner = sh.work.wait(inner).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Queued {
            seq,
            job,
            template,
            submitted,
        } = q;
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| sh.backend.caption(&job, &token)))
                .unwrap_or_else(|p| {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(format!("backend panicked: {what}"))
                });
        drop(job);
        let mut inner = sh.lock();
        if inner.generation != generation || inner.in_flight.remove(&seq).is_none() {
            // Flushed, dropped or timed out meanwhile: its record exists or is unwanted.
            continue;
        }
        let mut rec = template;
        rec.latency = submitted.elapsed().as_secs_f64();
        match result {
            Ok(c) => {
                rec.text = without_nul(c.text);
                rec.reasoning = c.reasoning.map(without_nul);
                rec.input_tokens = c.input_tokens;
                rec.output_tokens = c.output_tokens;
                rec.embedding = c.embedding;
                rec.embedding_error = c.embedding_error;
            }
            Err(e) => rec.error = Some(without_nul(e)),
        }
        rec.embedding_error = rec.embedding_error.map(without_nul);
        sh.finish(&mut inner, seq, rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Caption;
    use crate::config::BackendKind;
    use crate::prompt::TimeStyle;
    use std::sync::atomic::AtomicUsize;

    /// A backend whose answer time per chunk index is scripted.
    struct Scripted {
        delays_ms: Vec<u64>,
        fail: Vec<u64>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Backend for Scripted {
        fn kind(&self) -> BackendKind {
            BackendKind::OpenAiCompat
        }
        fn model(&self) -> &str {
            "scripted"
        }
        fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, String> {
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(n, Ordering::SeqCst);
            let d = self
                .delays_ms
                .get(job.chunk_index as usize)
                .copied()
                .unwrap_or(0);
            let end = Instant::now() + Duration::from_millis(d);
            let mut cancelled = false;
            while Instant::now() < end {
                if cancel.is_cancelled() {
                    cancelled = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if cancelled {
                return Err("cancelled".into());
            }
            if self.fail.contains(&job.chunk_index) {
                return Err(format!("failed {}", job.chunk_index));
            }
            Ok(Caption {
                text: format!("chunk {}", job.chunk_index),
                ..Default::default()
            })
        }
    }

    fn scripted(delays_ms: Vec<u64>, fail: Vec<u64>) -> Arc<Scripted> {
        Arc::new(Scripted {
            delays_ms,
            fail,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }

    fn job(i: u64) -> (ChunkJob, SummaryRecord) {
        (
            ChunkJob {
                chunk_index: i,
                frames: vec![],
                frame_labels: vec![],
                frame_times: vec![],
                time_style: TimeStyle::Seconds,
            },
            SummaryRecord {
                chunk_index: i,
                ..Default::default()
            },
        )
    }

    fn collect(d: &Dispatcher, n: usize) -> Vec<SummaryRecord> {
        let mut v = Vec::new();
        while v.len() < n {
            match d.next_output(Duration::from_secs(10)) {
                Some(Output::Record(r)) => v.push(*r),
                other => panic!("unexpected {other:?}"),
            }
        }
        v
    }

    #[test]
    fn ordered_output_with_bounded_concurrency() {
        // Later chunks finish first; output stays in order.
        let b = scripted(vec![300, 200, 100, 0, 50, 0], vec![2]);
        let stats = Arc::new(Stats::default());
        let d = Dispatcher::new(b.clone(), 3, 16, stats.clone());
        for i in 0..6 {
            let (j, t) = job(i);
            assert!(matches!(d.submit(j, t, false), Submitted::Queued));
        }
        let recs = collect(&d, 6);
        assert_eq!(
            recs.iter().map(|r| r.chunk_index).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
        assert_eq!(recs[2].error.as_deref(), Some("failed 2"));
        assert_eq!(recs[3].text, "chunk 3");
        assert!(b.max_in_flight.load(Ordering::SeqCst) <= 3);
        assert_eq!(b.max_in_flight.load(Ordering::SeqCst), 3);
        assert_eq!(stats.submitted.load(Ordering::Relaxed), 6);
        assert_eq!(stats.completed.load(Ordering::Relaxed), 5);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn backpressure_blocks_non_live_submitters() {
        let b = scripted(vec![200, 200, 0], vec![]);
        let d = Arc::new(Dispatcher::new(b, 1, 2, Arc::new(Stats::default())));
        for i in 0..2 {
            let (j, t) = job(i);
            d.submit(j, t, false);
        }
        let out = {
            let d = d.clone();
            std::thread::spawn(move || collect(&d, 3))
        };
        let t0 = Instant::now();
        let (j, t) = job(2);
        assert!(matches!(d.submit(j, t, false), Submitted::Queued));
        // It had to wait for chunk 0 to finish (~200 ms) and be taken.
        assert!(t0.elapsed() >= Duration::from_millis(150));
        let recs = out.join().unwrap();
        assert!(recs.iter().all(|r| r.error.is_none()));
    }

    #[test]
    fn results_not_taken_count_as_pending_for_non_live_input() {
        let b = scripted(vec![0, 0, 0], vec![]);
        let d = Arc::new(Dispatcher::new(b, 2, 2, Arc::new(Stats::default())));
        for i in 0..2 {
            let (j, t) = job(i);
            d.submit(j, t, false);
        }
        // Both finish at once but nobody takes them: a third submit waits...
        let blocked = {
            let d = d.clone();
            std::thread::spawn(move || {
                let (j, t) = job(2);
                d.submit(j, t, false)
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished());
        // ... until the output side takes one.
        assert_eq!(collect(&d, 1)[0].chunk_index, 0);
        assert!(matches!(blocked.join().unwrap(), Submitted::Queued));
        assert_eq!(collect(&d, 2).len(), 2);
    }

    #[test]
    fn live_overflow_drops_oldest() {
        let b = scripted(vec![500, 500, 500, 0, 0], vec![]);
        let stats = Arc::new(Stats::default());
        let d = Dispatcher::new(b, 1, 2, stats.clone());
        for i in 0..2 {
            let (j, t) = job(i);
            d.submit(j, t, true);
        }
        std::thread::sleep(Duration::from_millis(50));
        let (j, t) = job(2);
        match d.submit(j, t, true) {
            // Chunk 0 is in flight and kept; queued chunk 1 is the oldest unsent.
            Submitted::DroppedOlder(v) => assert_eq!(v, vec![1]),
            other => panic!("{other:?}"),
        }
        let recs = collect(&d, 3);
        assert_eq!(
            recs.iter().map(|r| r.chunk_index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(recs[1].error.as_deref().unwrap().starts_with("dropped"));
        assert!(recs[0].error.is_none() && recs[2].error.is_none());
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);

        // With every pending chunk in flight, the oldest request is cancelled.
        let b = scripted(vec![0, 0, 0, 2000, 2000, 0], vec![]);
        let stats = Arc::new(Stats::default());
        let d = Dispatcher::new(b, 2, 2, stats.clone());
        for i in 3..5 {
            let (j, t) = job(i);
            d.submit(j, t, true);
        }
        std::thread::sleep(Duration::from_millis(50));
        let (j, t) = job(5);
        assert!(matches!(d.submit(j, t, true), Submitted::DroppedOlder(v) if v == vec![3]));
        let recs = collect(&d, 3);
        assert!(recs[0].error.as_deref().unwrap().starts_with("dropped"));
        assert!(recs[1].error.is_none() && recs[2].error.is_none());
    }

    #[test]
    fn drain_waits_then_times_out_into_error_records() {
        let b = scripted(vec![0, 5000], vec![]);
        let d = Arc::new(Dispatcher::new(b, 2, 8, Arc::new(Stats::default())));
        for i in 0..2 {
            let (j, t) = job(i);
            d.submit(j, t, false);
        }
        let out = {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match d.next_output(Duration::from_secs(10)) {
                        Some(Output::Record(r)) => got.push(*r),
                        Some(Output::Eos) => {
                            d.eos_done();
                            return got;
                        }
                        None => return got,
                    }
                }
            })
        };
        let t0 = Instant::now();
        assert_eq!(
            d.drain(Duration::from_millis(300), Duration::from_secs(5)),
            Some(1)
        );
        assert!(t0.elapsed() < Duration::from_secs(3));
        let got = out.join().unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].error.is_none());
        assert!(got[1].error.as_deref().unwrap().contains("drain-timeout"));
    }

    #[test]
    fn flush_discards_and_unblocks() {
        let b = scripted(vec![3000, 3000, 0], vec![]);
        let d = Arc::new(Dispatcher::new(b, 1, 1, Arc::new(Stats::default())));
        let (j, t) = job(0);
        d.submit(j, t, false);
        let blocked = {
            let d = d.clone();
            std::thread::spawn(move || {
                let (j, t) = job(1);
                d.submit(j, t, false)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        d.flush_start();
        assert!(matches!(blocked.join().unwrap(), Submitted::Flushing));
        assert!(d.next_output(Duration::from_millis(10)).is_none());
        d.flush_stop();
        let (j, t) = job(2);
        // The worker is free again quickly (the cancelled call returned).
        d.submit(j, t, false);
        let r = collect(&d, 1);
        assert_eq!(r[0].chunk_index, 2);
        assert!(t0.elapsed() < Duration::from_millis(2500));
    }
}
