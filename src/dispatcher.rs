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
//!   or drops a chunk that has not been sent (live input): the oldest queued
//!   one, or, when every pending chunk is already in flight, the new chunk
//!   itself. A request in flight is never cancelled to make room: with a
//!   model slower than the stride that would cancel every request before it
//!   finishes and nothing would ever complete. The dropped chunk becomes an
//!   error record counted in `chunks-dropped`.
//! * Markers ([`Dispatcher::mark`]) take a place in the output order like a
//!   record, so the output side can act (e.g. send a new segment) exactly
//!   between the records submitted before and after them.
//! * Finished records wait in a reorder map until every earlier chunk has
//!   finished; [`Dispatcher::next_output`] returns them strictly in submission
//!   order, then `Eos` once a drain was requested and everything is out.
//! * An optional after-caption stage ([`AfterCaption`], the event check of
//!   `events`) runs on its own threads (its own concurrency budget) between
//!   a caption and the release of its record, so the record can carry its
//!   outcome and an alert can follow its caption directly. A chunk in that
//!   stage is pending like one in flight and is never dropped.
//! * Every submitted chunk ends as exactly one record (caption or error),
//!   unless a flush/seek or a state change discards it.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, ChunkJob};
use crate::record::{panic_message, without_nul, SummaryRecord};

/// Longest caption (and reasoning) text that reaches the outputs, in bytes;
/// longer text is cut at a character boundary and the record says so
/// (`text-truncated`). A model (or server) that answers megabytes would
/// otherwise copy them into the JSON line, the meta and the bus message.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Cuts `s` to at most [`MAX_TEXT_BYTES`]; true when it was cut.
fn cap_text(s: &mut String) -> bool {
    if s.len() <= MAX_TEXT_BYTES {
        return false;
    }
    let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    true
}

/// Worker threads and the note to give the user for a concurrency /
/// pending-chunk pair. More workers than pending chunks can never be busy
/// (a chunk is pending while in flight), so the workers are capped at
/// `max_pending`.
pub fn effective_workers(max_concurrency: usize, max_pending: usize) -> (usize, Option<String>) {
    let (c, p) = (max_concurrency.max(1), max_pending.max(1));
    if p < c {
        (
            p,
            Some(format!(
                "max-concurrency={c} is more than max-pending-chunks={p}: at most {p} requests can be in flight; using {p} (raise max-pending-chunks to use more)"
            )),
        )
    } else {
        (c, None)
    }
}

/// An after-caption stage and its thread count.
pub type Stage = (Arc<dyn AfterCaption>, usize);

/// Work on a good caption after the backend answered and before its record
/// is released (the event check). Called on the stage's own threads.
pub trait AfterCaption: Send + Sync {
    /// Fills in the record's outcome of the stage; returns promptly once
    /// `cancel` is cancelled.
    fn process(&self, rec: &mut SummaryRecord, cancel: &CancellationToken);
    /// The stage did not finish in time (drain timeout at EOS): says so in
    /// the record.
    fn timed_out(&self, rec: &mut SummaryRecord, msg: &str);
}

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
    /// What was given to [`Dispatcher::mark`], in its place in the order.
    Marker(Box<dyn Any + Send>),
    /// Everything submitted before the drain request has been returned.
    Eos,
}

#[derive(Debug)]
pub enum Submitted {
    Queued,
    /// Live overflow: these chunks (older queued ones, or the new one
    /// itself) were dropped, with the hint that says what would help.
    Dropped(Vec<u64>, String),
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

enum Slot {
    Record(Box<SummaryRecord>),
    Marker(Box<dyn Any + Send>),
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
    /// Captions waiting for the after-caption stage, and in it.
    post_queue: VecDeque<(u64, SummaryRecord)>,
    post_in_flight: BTreeMap<u64, InFlight>,
    done: BTreeMap<u64, Slot>,
    eos_requested: bool,
    eos_returned: bool,
    eos_done: bool,
}

impl Inner {
    /// Chunks without a result yet.
    fn unfinished(&self) -> usize {
        self.queue.len() + self.in_flight.len() + self.post_queue.len() + self.post_in_flight.len()
    }

    /// What `max-pending-chunks` bounds for non-live input: chunks without a
    /// result, plus results not yet taken by the output side (so a blocked
    /// `summary_src` slows non-live input down too). Live input bounds only
    /// [`unfinished`](Self::unfinished).
    fn pending(&self) -> usize {
        self.unfinished()
            + self
                .done
                .values()
                .filter(|s| matches!(s, Slot::Record(_)))
                .count()
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Workers wait here for jobs.
    work: Condvar,
    /// After-caption workers wait here.
    post_work: Condvar,
    after: Option<Arc<dyn AfterCaption>>,
    /// Submitters wait here for room.
    room: Condvar,
    /// The output side waits here for records; drain waits here too.
    out: Condvar,
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    max_pending: usize,
    workers: usize,
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
        inner.done.insert(seq, Slot::Record(Box::new(record)));
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
    /// `max_concurrency` is capped at `max_pending` (see
    /// [`effective_workers`]).
    pub fn new(
        backend: Arc<dyn Backend>,
        max_concurrency: usize,
        max_pending: usize,
        stats: Arc<Stats>,
    ) -> Dispatcher {
        Self::with_stage(backend, max_concurrency, max_pending, stats, None)
    }

    /// [`new`](Self::new) with an after-caption stage run on `stage_workers`
    /// threads of its own.
    pub fn with_stage(
        backend: Arc<dyn Backend>,
        max_concurrency: usize,
        max_pending: usize,
        stats: Arc<Stats>,
        stage: Option<Stage>,
    ) -> Dispatcher {
        let (workers, _) = effective_workers(max_concurrency, max_pending);
        let stage_workers = stage.as_ref().map_or(0, |(_, n)| (*n).max(1));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            work: Condvar::new(),
            post_work: Condvar::new(),
            after: stage.map(|(a, _)| a),
            room: Condvar::new(),
            out: Condvar::new(),
            backend,
            stats,
            max_pending: max_pending.max(1),
            workers,
        });
        for i in 0..workers {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("vsssummarize-w{i}"))
                .spawn(move || worker(s))
                .expect("cannot spawn a vsssummarize worker thread");
        }
        for i in 0..stage_workers {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("vsssummarize-a{i}"))
                .spawn(move || post_worker(s))
                .expect("cannot spawn a vsssummarize worker thread");
        }
        Dispatcher { shared }
    }

    /// Number of chunks queued or in flight.
    pub fn pending(&self) -> usize {
        self.shared.lock().unfinished()
    }

    /// Puts `marker` in the output order after everything submitted so far;
    /// [`next_output`](Self::next_output) returns it as [`Output::Marker`].
    /// False (and the marker is discarded) while flushing or shut down.
    pub fn mark(&self, marker: Box<dyn Any + Send>) -> bool {
        let sh = &self.shared;
        let mut inner = sh.lock();
        if inner.flushing || inner.shutdown {
            return false;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.done.insert(seq, Slot::Marker(marker));
        sh.out.notify_all();
        true
    }

    /// Submits one chunk. `template` holds the record's chunk fields; the
    /// worker fills in the result. Blocks while the queue is full unless
    /// `live`, in which case a chunk that was not sent yet is dropped instead
    /// (the oldest queued one, else this one).
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
                match drop_oldest_queued(sh, &mut inner) {
                    Some(idx) => dropped.push(idx),
                    None => {
                        // Every pending chunk is in flight: drop this one.
                        let seq = inner.next_seq;
                        inner.next_seq += 1;
                        let idx = template.chunk_index;
                        sh.stats.submitted.fetch_add(1, Ordering::Relaxed);
                        drop_record(sh, &mut inner, seq, &template, None);
                        dropped.push(idx);
                        return Submitted::Dropped(dropped, drop_hint(sh));
                    }
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
            Submitted::Dropped(dropped, drop_hint(sh))
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
            if let Some(slot) = inner.done.remove(&next) {
                inner.next_emit += 1;
                // A taken record frees room for a waiting non-live submitter.
                sh.room.notify_all();
                // The drain waits for the output side to take everything.
                sh.out.notify_all();
                return Some(match slot {
                    Slot::Record(r) => Output::Record(r),
                    Slot::Marker(m) => Output::Marker(m),
                });
            }
            if inner.eos_requested && !inner.eos_returned && inner.next_emit == inner.next_seq {
                inner.eos_returned = true;
                sh.out.notify_all();
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

    /// EOS: waits until every submitted chunk has been taken by the output
    /// side through [`next_output`](Self::next_output), up to and including
    /// `Eos`. It does not wait for the output side to *push* them: a
    /// downstream sink that has not prerolled blocks pushes until PLAYING,
    /// which may need the EOS this call holds back on the video path. If the
    /// chunks are not finished within `timeout`, the unfinished ones become
    /// error records (and their requests are cancelled). Returns the number
    /// of chunks timed out this way, or `None` if a flush or shutdown
    /// interrupted the drain.
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
            if inner.eos_returned {
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
                    while !inner.eos_returned && !inner.flushing && !inner.shutdown {
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

    /// Waits (at most `timeout`) until the output side called
    /// [`eos_done`](Self::eos_done); false on timeout, flush or shutdown.
    pub fn wait_eos_done(&self, timeout: Duration) -> bool {
        let sh = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut inner = sh.lock();
        loop {
            if inner.eos_done {
                return true;
            }
            let now = Instant::now();
            if inner.flushing || inner.shutdown || now >= deadline {
                return false;
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
        sh.post_work.notify_all();
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
    for (_, f) in std::mem::take(&mut inner.post_in_flight) {
        f.token.cancel();
    }
    inner.post_queue.clear();
    inner.queue.clear();
    inner.done.clear();
    inner.eos_requested = false;
    inner.eos_returned = false;
    inner.eos_done = false;
}

/// Drops the oldest chunk that has not been sent yet; `None` when every
/// pending chunk is in flight (those are never cancelled to make room).
/// Returns the chunk index.
fn drop_oldest_queued(sh: &Shared, inner: &mut Inner) -> Option<u64> {
    let q = inner.queue.pop_front()?;
    drop_record(sh, inner, q.seq, &q.template, Some(q.submitted));
    Some(q.template.chunk_index)
}

/// What helps when live input overflows: with no more pending chunks than
/// workers every pending chunk is in flight, so only more pending room (for
/// chunks to wait in) or fewer chunks help; otherwise more requests at once.
fn drop_hint(sh: &Shared) -> String {
    if sh.max_pending <= sh.workers {
        format!(
            "the model answers slower than chunks arrive and all max-pending-chunks={} are in flight: raise max-pending-chunks (queued chunks wait for a free request) or chunk-duration, or lower num-frames-per-chunk",
            sh.max_pending
        )
    } else {
        format!(
            "the model answers slower than chunks arrive (max-pending-chunks={} reached with max-concurrency={}): raise max-concurrency if the server can take more requests at once, or chunk-duration, or lower num-frames-per-chunk",
            sh.max_pending, sh.workers
        )
    }
}

fn drop_record(
    sh: &Shared,
    inner: &mut Inner,
    seq: u64,
    template: &SummaryRecord,
    since: Option<Instant>,
) {
    let msg = format!(
        "dropped: live input is ahead of the model; {}",
        drop_hint(sh)
    );
    let rec = error_record(template, msg, since);
    sh.stats.dropped.fetch_add(1, Ordering::Relaxed);
    inner.done.insert(seq, Slot::Record(Box::new(rec)));
    sh.out.notify_all();
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
    // Captions whose after-caption stage did not finish keep their caption.
    let mut post: Vec<(u64, SummaryRecord)> = std::mem::take(&mut inner.post_queue).into();
    for (seq, f) in std::mem::take(&mut inner.post_in_flight) {
        f.token.cancel();
        post.push((seq, f.template));
    }
    for (seq, mut r) in post {
        if let Some(a) = &sh.after {
            a.timed_out(&mut r, msg);
        }
        sh.finish(inner, seq, r);
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
                .unwrap_or_else(|p| Err(format!("backend panicked: {}", panic_message(&*p))));
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
                let mut cut = cap_text(&mut rec.text);
                if let Some(r) = rec.reasoning.as_mut() {
                    cut |= cap_text(r);
                }
                rec.text_truncated = cut;
                rec.input_tokens = c.input_tokens;
                rec.output_tokens = c.output_tokens;
                rec.embedding = c.embedding;
                rec.embedding_error = c.embedding_error;
            }
            Err(mut e) => {
                cap_text(&mut e);
                rec.error = Some(without_nul(e))
            }
        }
        rec.embedding_error = rec.embedding_error.map(without_nul);
        if sh.after.is_some() && !rec.is_error() {
            inner.post_queue.push_back((seq, rec));
            sh.post_work.notify_one();
        } else {
            sh.finish(&mut inner, seq, rec);
        }
    }
}

fn post_worker(sh: Arc<Shared>) {
    let Some(after) = sh.after.clone() else {
        return;
    };
    loop {
        let (generation, seq, mut rec, token) = {
            let mut inner = sh.lock();
            loop {
                if inner.shutdown {
                    return;
                }
                if let Some((seq, rec)) = inner.post_queue.pop_front() {
                    let token = CancellationToken::new();
                    inner.post_in_flight.insert(
                        seq,
                        InFlight {
                            template: rec.clone(),
                            token: token.clone(),
                        },
                    );
                    break (inner.generation, seq, rec, token);
                }
                inner = sh.post_work.wait(inner).unwrap_or_else(|e| e.into_inner());
            }
        };
        let t0 = Instant::now();
        if let Err(p) =
            std::panic::catch_unwind(AssertUnwindSafe(|| after.process(&mut rec, &token)))
        {
            let what = panic_message(&*p);
            after.timed_out(&mut rec, &format!("internal error: {what}"));
        }
        let mut inner = sh.lock();
        if inner.generation != generation || inner.post_in_flight.remove(&seq).is_none() {
            continue;
        }
        rec.latency += t0.elapsed().as_secs_f64();
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
            Submitted::Dropped(v, hint) => {
                assert_eq!(v, vec![1]);
                assert!(hint.contains("raise max-concurrency"), "{hint}");
            }
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

        // With every pending chunk in flight, no request is cancelled: the
        // new chunk is the one dropped, and the hint names max-pending-chunks.
        let b = scripted(vec![0, 0, 0, 300, 300, 0], vec![]);
        let stats = Arc::new(Stats::default());
        let d = Dispatcher::new(b, 2, 2, stats.clone());
        for i in 3..5 {
            let (j, t) = job(i);
            d.submit(j, t, true);
        }
        std::thread::sleep(Duration::from_millis(50));
        let (j, t) = job(5);
        match d.submit(j, t, true) {
            Submitted::Dropped(v, hint) => {
                assert_eq!(v, vec![5]);
                assert!(hint.contains("raise max-pending-chunks"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        let recs = collect(&d, 3);
        assert_eq!(
            recs.iter().map(|r| r.chunk_index).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert!(recs[0].error.is_none() && recs[1].error.is_none());
        assert!(recs[2].error.as_deref().unwrap().starts_with("dropped"));
        assert_eq!(stats.submitted.load(Ordering::Relaxed), 3);
    }

    /// Regression: with max-pending-chunks <= max-concurrency and a model
    /// slower than the chunk stride, every request used to be cancelled by
    /// the next chunk (2 captions of 30). Now in-flight work always finishes.
    #[test]
    fn live_overflow_never_starves_slow_models() {
        // 300 ms model, a chunk every 60 ms, pending 2 / concurrency 4.
        let b = scripted(vec![300; 30], vec![]);
        let stats = Arc::new(Stats::default());
        let d = Arc::new(Dispatcher::new(b.clone(), 4, 2, stats.clone()));
        let out = {
            let d = d.clone();
            std::thread::spawn(move || collect(&d, 30))
        };
        for i in 0..30 {
            let (j, t) = job(i);
            d.submit(j, t, true);
            std::thread::sleep(Duration::from_millis(60));
        }
        let recs = out.join().unwrap();
        let ok = recs.iter().filter(|r| r.error.is_none()).count();
        // 30 × 60 ms = 1.8 s of input, 2 requests of 300 ms at a time: about
        // 12 captions; the old policy completed almost none.
        assert!(ok >= 6, "only {ok} of 30 captioned");
        assert_eq!(ok as u64, stats.completed.load(Ordering::Relaxed));
        assert_eq!(30 - ok as u64, stats.dropped.load(Ordering::Relaxed));
        // Only 2 workers: more could never be busy.
        assert!(b.max_in_flight.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn workers_are_capped_by_pending_with_a_note() {
        assert_eq!(effective_workers(4, 16), (4, None));
        let (w, note) = effective_workers(4, 2);
        assert_eq!(w, 2);
        assert!(note.unwrap().contains("raise max-pending-chunks"));
    }

    #[test]
    fn markers_keep_their_place_in_the_order() {
        let b = scripted(vec![200, 0], vec![]);
        let d = Dispatcher::new(b, 2, 8, Arc::new(Stats::default()));
        let (j, t) = job(0);
        d.submit(j, t, false);
        assert!(d.mark(Box::new("segment 2")));
        let (j, t) = job(1);
        d.submit(j, t, false);
        // Chunk 1 finishes first, but the marker waits for chunk 0.
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(match d.next_output(Duration::from_secs(5)) {
                Some(Output::Record(r)) => format!("chunk {}", r.chunk_index),
                Some(Output::Marker(m)) => m.downcast::<&str>().unwrap().to_string(),
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(got, vec!["chunk 0", "segment 2", "chunk 1"]);
        d.flush_start();
        assert!(!d.mark(Box::new(1u8)));
    }

    /// Regression: the drain must not wait for the output side to finish
    /// *pushing* (a sink that has not prerolled blocks that until PLAYING).
    #[test]
    fn drain_returns_once_everything_is_taken() {
        let b = scripted(vec![], vec![]);
        let d = Arc::new(Dispatcher::new(b, 1, 8, Arc::new(Stats::default())));
        let out = {
            let d = d.clone();
            std::thread::spawn(move || {
                // Takes EOS, then "blocks pushing it" and never calls eos_done.
                let o = d.next_output(Duration::from_secs(5));
                assert!(matches!(o, Some(Output::Eos)));
                std::thread::sleep(Duration::from_secs(3));
            })
        };
        let t0 = Instant::now();
        assert_eq!(
            d.drain(Duration::from_secs(30), Duration::from_secs(5)),
            Some(0)
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        out.join().unwrap();
    }

    #[test]
    fn long_captions_are_cut_and_flagged() {
        struct Long;
        impl Backend for Long {
            fn kind(&self) -> BackendKind {
                BackendKind::OpenAiCompat
            }
            fn model(&self) -> &str {
                "long"
            }
            fn caption(&self, _: &ChunkJob, _: &CancellationToken) -> Result<Caption, String> {
                Ok(Caption {
                    text: "é".repeat(MAX_TEXT_BYTES),
                    ..Default::default()
                })
            }
        }
        let d = Dispatcher::new(Arc::new(Long), 1, 8, Arc::new(Stats::default()));
        let (j, t) = job(0);
        d.submit(j, t, false);
        let r = &collect(&d, 1)[0];
        assert!(r.text_truncated);
        assert!(r.text.len() <= MAX_TEXT_BYTES && r.text.ends_with('…'));
        assert!(r.text.len() > MAX_TEXT_BYTES - 8);
        let mut short = "x".repeat(10);
        assert!(!cap_text(&mut short));
        assert_eq!(short.len(), 10);
    }

    /// A stage that marks each record, and hangs (until cancelled) on the
    /// chunks listed.
    struct Marking(Vec<u64>);

    impl AfterCaption for Marking {
        fn process(&self, rec: &mut SummaryRecord, cancel: &CancellationToken) {
            if self.0.contains(&rec.chunk_index) {
                while !cancel.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
            // Later chunks finish first: the order must still hold.
            std::thread::sleep(Duration::from_millis(40 - 10 * rec.chunk_index.min(3)));
            rec.alert_error = Some("checked".into());
        }
        fn timed_out(&self, rec: &mut SummaryRecord, msg: &str) {
            rec.alert_error = Some(format!("not checked: {msg}"));
        }
    }

    #[test]
    fn the_after_caption_stage_keeps_order_and_captions_at_a_drain_timeout() {
        let b = scripted(vec![0, 0, 0, 0], vec![1]);
        let stage: Stage = (Arc::new(Marking(vec![3])), 3);
        let d = Dispatcher::with_stage(b, 2, 8, Arc::new(Stats::default()), Some(stage));
        for i in 0..4 {
            let (j, t) = job(i);
            d.submit(j, t, false);
        }
        let got = collect(&d, 3);
        let idx: Vec<u64> = got.iter().map(|r| r.chunk_index).collect();
        assert_eq!(idx, vec![0, 1, 2], "in order");
        assert_eq!(got[0].alert_error.as_deref(), Some("checked"));
        assert!(
            got[1].is_error() && got[1].alert_error.is_none(),
            "errors are not checked"
        );
        assert_eq!(got[2].alert_error.as_deref(), Some("checked"));
        // Chunk 3 hangs in the stage: pending, then kept as a caption.
        assert_eq!(d.pending(), 1);
        let out = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let r = match d.next_output(Duration::from_secs(10)) {
                    Some(Output::Record(r)) => *r,
                    other => panic!("{other:?}"),
                };
                assert!(matches!(
                    d.next_output(Duration::from_secs(10)),
                    Some(Output::Eos)
                ));
                r
            });
            assert_eq!(
                d.drain(Duration::from_millis(200), Duration::from_secs(5)),
                Some(0)
            );
            h.join().unwrap()
        });
        assert_eq!(out.chunk_index, 3);
        assert!(!out.is_error(), "the caption stays");
        assert!(out
            .alert_error
            .as_deref()
            .unwrap()
            .starts_with("not checked: drain-timeout"));
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
                        Some(Output::Marker(_)) => panic!("no marker was set"),
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
