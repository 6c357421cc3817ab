// SPDX-License-Identifier: MPL-2.0
//! One thread per loaded model: it loads the model, serves the requests of
//! every element that shares it, one at a time, and drops it. Generic over
//! the model (the backend serves its `Engine`; the tests a fake), with no
//! candle in it. The shape is that of mistral.rs's engine: a thread owning
//! the model, fed by a request channel, each request carrying its own
//! reply channel.
//!
//! Rules:
//!
//! 1. [`Server::spawn`] starts the thread (named by the caller, e.g.
//!    `vss-engine`), which runs the load and reports its result; on an
//!    error (or a panic) the thread ends and nothing is served. The model
//!    never leaves its thread, so it need not be `Send`.
//! 2. Requests wait in one bounded queue with two priorities: every queued
//!    [`Priority::Caption`] is served before any [`Priority::Text`] one
//!    (summaries, event checks); within a priority, in arrival order. A
//!    request already running is never interrupted by a later caption.
//!    There is no ageing: text requests are served whenever no caption
//!    waits, so they progress as long as the captions leave the model idle
//!    at times (each element has at most one caption in flight, and its
//!    worker prepares the next chunk's frames in between).
//! 3. [`Server::submit`] blocks the calling thread (a worker, never the
//!    streaming thread or the tokio runtime) until the request's result
//!    comes back through its one-shot channel. When the queue is full
//!    (`capacity` requests waiting) the submitting call waits for room
//!    (back-pressure on the worker); each such wait counts in
//!    [`Server::full_waits`].
//! 4. Each request carries its cancellation: one cancelled before it was
//!    queued, or while it waited for room, is not queued; one cancelled
//!    while queued is answered [`ServeError::Cancelled`] without running
//!    when the thread reaches it. A running request sees the cancellation
//!    through its own check (the engine checks between tokens).
//! 5. When the [`Server`] is dropped (the last handle of the model), the
//!    thread finishes the request it is running, answers what is still
//!    queued with `Cancelled`, drops the model (its memory is freed) and
//!    exits; the drop waits for that (join). A request that panics is
//!    answered [`ServeError::Stopped`]; the thread goes on serving.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// Which queue a request waits in (rule 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A chunk's caption: served first.
    Caption,
    /// A summary or an event check.
    Text,
}

/// Why a request has no result of its own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    /// Cancelled before it ran (rule 4).
    #[error("cancelled")]
    Cancelled,
    /// The request panicked, or the model's thread is gone (rule 5).
    #[error(
        "the model's engine thread stopped while serving this request (it panicked; see the log)"
    )]
    Stopped,
}

/// Why [`Server::spawn`] has no server.
#[derive(Debug)]
pub enum StartError<E> {
    /// The load returned an error.
    Load(E),
    /// The load panicked.
    Panicked,
    /// The thread could not be started.
    Spawn(std::io::Error),
}

/// A queued request: runs on the model, or (`true`) only answers
/// `Cancelled`.
type Run<M> = Box<dyn FnOnce(&mut M, bool) + Send>;

struct Queued<M> {
    run: Run<M>,
    cancelled: Box<dyn Fn() -> bool + Send>,
}

struct Queues<M> {
    captions: VecDeque<Queued<M>>,
    texts: VecDeque<Queued<M>>,
    closed: bool,
}

impl<M> Queues<M> {
    fn len(&self) -> usize {
        self.captions.len() + self.texts.len()
    }
}

struct Shared<M> {
    queues: Mutex<Queues<M>>,
    /// Signalled when a request is queued or the server closes.
    work: Condvar,
    /// Signalled when a request leaves the queue.
    room: Condvar,
    capacity: usize,
    full_waits: AtomicU64,
}

/// The handle of a model's thread; dropping it stops the thread (rule 5).
/// Share it (`Arc<Server<M>>`) between the users of one model.
pub struct Server<M> {
    shared: Arc<Shared<M>>,
    thread: Option<JoinHandle<()>>,
}

impl<M: 'static> Server<M> {
    /// Rule 1: starts the thread `name`, which runs `load` and then serves
    /// at most `capacity` queued requests at a time (at least 1). Returns
    /// the server and what `load` returned beside the model.
    pub fn spawn<I, E, L>(name: &str, capacity: usize, load: L) -> Result<(Self, I), StartError<E>>
    where
        I: Send + 'static,
        E: Send + 'static,
        L: FnOnce() -> Result<(M, I), E> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues {
                captions: VecDeque::new(),
                texts: VecDeque::new(),
                closed: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
            full_waits: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::sync_channel::<Result<I, E>>(1);
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut model = match load() {
                    Ok((m, info)) => {
                        let _ = tx.send(Ok(info));
                        m
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                drop(tx);
                serve(&s, &mut model);
                // Rule 5: the model is dropped here, on its own thread.
            })
            .map_err(StartError::Spawn)?;
        let server = Server {
            shared,
            thread: Some(thread),
        };
        match rx.recv() {
            Ok(Ok(info)) => Ok((server, info)),
            Ok(Err(e)) => Err(StartError::Load(e)),
            // The load panicked: the sender is gone.
            Err(_) => Err(StartError::Panicked),
        }
    }

    /// Rules 2–4: queues `job` and waits for its result.
    pub fn submit<R, C, J>(&self, priority: Priority, cancelled: C, job: J) -> Result<R, ServeError>
    where
        R: Send + 'static,
        C: Fn() -> bool + Send + 'static,
        J: FnOnce(&mut M) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Result<R, ServeError>>(1);
        let run: Run<M> = Box::new(move |m: &mut M, skip: bool| {
            let r = if skip {
                Err(ServeError::Cancelled)
            } else {
                Ok(job(m))
            };
            let _ = tx.send(r);
        });
        {
            let sh = &*self.shared;
            let mut q = sh.queues.lock();
            let mut counted = false;
            loop {
                if cancelled() {
                    return Err(ServeError::Cancelled);
                }
                if q.closed {
                    return Err(ServeError::Stopped);
                }
                if q.len() < sh.capacity {
                    break;
                }
                if !counted {
                    counted = true;
                    sh.full_waits.fetch_add(1, Ordering::Relaxed);
                }
                sh.room.wait(&mut q);
            }
            let item = Queued {
                run,
                cancelled: Box::new(cancelled),
            };
            match priority {
                Priority::Caption => q.captions.push_back(item),
                Priority::Text => q.texts.push_back(item),
            }
            sh.work.notify_one();
        }
        // A dropped sender: the request panicked (rule 5).
        rx.recv().unwrap_or(Err(ServeError::Stopped))
    }

    /// Requests waiting (not the one running).
    pub fn queued(&self) -> usize {
        self.shared.queues.lock().len()
    }

    /// How many submissions had to wait for room (rule 3).
    pub fn full_waits(&self) -> u64 {
        self.shared.full_waits.load(Ordering::Relaxed)
    }
}

/// The thread's loop: captions first, then text requests, until closed.
fn serve<M>(sh: &Shared<M>, model: &mut M) {
    loop {
        let (item, closed) = {
            let mut q = sh.queues.lock();
            loop {
                let next = q.captions.pop_front().or_else(|| q.texts.pop_front());
                if let Some(item) = next {
                    break (item, q.closed);
                }
                if q.closed {
                    return;
                }
                sh.work.wait(&mut q);
            }
        };
        sh.room.notify_all();
        let skip = closed || (item.cancelled)();
        let run = item.run;
        // A panic drops the reply sender: its caller gets `Stopped`.
        let m = &mut *model;
        let _ = catch_unwind(AssertUnwindSafe(move || run(m, skip)));
    }
}

impl<M> Drop for Server<M> {
    fn drop(&mut self) {
        {
            let mut q = self.shared.queues.lock();
            q.closed = true;
        }
        self.shared.work.notify_all();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;

    /// A fake model: records what ran; a job may block on a channel.
    #[derive(Default)]
    struct Fake {
        ran: Vec<&'static str>,
    }

    /// Drops set the flag (the model is freed on rule 5's path).
    struct Tracked(Arc<AtomicBool>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn fake_server(capacity: usize) -> Arc<Server<Fake>> {
        let (s, ()) = Server::spawn("vss-engine-test", capacity, || {
            Ok::<_, ()>((Fake::default(), ()))
        })
        .unwrap();
        Arc::new(s)
    }

    fn never() -> impl Fn() -> bool + Send + 'static {
        || false
    }

    /// Waits (without sleeping) until `n` requests are queued.
    fn until_queued<M: 'static>(s: &Server<M>, n: usize) {
        while s.queued() < n {
            std::thread::yield_now();
        }
    }

    /// Starts a job that blocks the thread until `release` is sent to;
    /// returns once it runs.
    fn block_thread(
        s: &Arc<Server<Fake>>,
        prio: Priority,
        name: &'static str,
    ) -> (
        mpsc::Sender<()>,
        std::thread::JoinHandle<Result<(), ServeError>>,
    ) {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let started = Arc::new(Barrier::new(2));
        let (s2, st) = (s.clone(), started.clone());
        let h = std::thread::spawn(move || {
            s2.submit(prio, never(), move |m: &mut Fake| {
                m.ran.push(name);
                st.wait();
                let _ = release_rx.recv();
            })
        });
        started.wait();
        (release_tx, h)
    }

    fn submit_named(
        s: &Arc<Server<Fake>>,
        prio: Priority,
        name: &'static str,
    ) -> std::thread::JoinHandle<Result<(), ServeError>> {
        let s2 = s.clone();
        std::thread::spawn(move || s2.submit(prio, never(), move |m: &mut Fake| m.ran.push(name)))
    }

    fn ran(s: &Server<Fake>) -> Vec<&'static str> {
        s.submit(Priority::Caption, never(), |m: &mut Fake| m.ran.clone())
            .unwrap()
    }

    /// Rule 2 (a): a caption queued behind a running text request is served
    /// before a text request queued earlier.
    #[test]
    fn captions_are_served_before_earlier_text_requests() {
        let s = fake_server(8);
        let (release, running) = block_thread(&s, Priority::Text, "text-1");
        let t2 = submit_named(&s, Priority::Text, "text-2");
        until_queued(&s, 1);
        let c1 = submit_named(&s, Priority::Caption, "caption-1");
        until_queued(&s, 2);
        release.send(()).unwrap();
        for h in [running, t2, c1] {
            h.join().unwrap().unwrap();
        }
        assert_eq!(ran(&s), ["text-1", "caption-1", "text-2"]);
    }

    /// Rule 4 (b): a request cancelled while queued is answered Cancelled
    /// and never runs; one cancelled before it is submitted is not queued.
    #[test]
    fn a_cancelled_queued_request_never_runs() {
        let s = fake_server(8);
        let (release, running) = block_thread(&s, Priority::Caption, "running");
        let cancel = Arc::new(AtomicBool::new(false));
        let (s2, c2) = (s.clone(), cancel.clone());
        let queued = std::thread::spawn(move || {
            s2.submit(
                Priority::Caption,
                move || c2.load(Ordering::SeqCst),
                |m: &mut Fake| m.ran.push("cancelled"),
            )
        });
        until_queued(&s, 1);
        cancel.store(true, Ordering::SeqCst);
        release.send(()).unwrap();
        running.join().unwrap().unwrap();
        assert_eq!(queued.join().unwrap(), Err(ServeError::Cancelled));
        let r = s.submit(Priority::Text, || true, |m: &mut Fake| m.ran.push("x"));
        assert_eq!(r, Err(ServeError::Cancelled));
        assert_eq!(s.queued(), 0);
        assert_eq!(ran(&s), ["running"]);
    }

    /// Rule 5 (c): dropping the last handle stops the thread (the drop
    /// joins it) and drops the model on it.
    #[test]
    fn dropping_the_last_handle_stops_the_thread_and_frees_the_model() {
        let freed = Arc::new(AtomicBool::new(false));
        let f = freed.clone();
        let (s, tid) = Server::spawn("vss-engine-test", 4, move || {
            Ok::<_, ()>((Tracked(f), std::thread::current().id()))
        })
        .unwrap();
        let s = Arc::new(s);
        let on_thread = s
            .submit(Priority::Text, never(), |_: &mut Tracked| {
                std::thread::current().id()
            })
            .unwrap();
        assert_eq!(on_thread, tid, "requests run on the model's thread");
        assert_ne!(tid, std::thread::current().id());
        let other = s.clone();
        drop(s);
        assert!(!freed.load(Ordering::SeqCst), "a handle is left");
        // The join happens inside this drop: afterwards the thread is gone
        // and the model was dropped.
        drop(other);
        assert!(freed.load(Ordering::SeqCst));
    }

    /// Rule 3: a full queue makes the submitter wait (counted), and a
    /// request that panics is answered Stopped without ending the thread.
    #[test]
    fn a_full_queue_waits_and_a_panicking_request_is_stopped() {
        let s = fake_server(1);
        let (release, running) = block_thread(&s, Priority::Text, "running");
        let first = submit_named(&s, Priority::Text, "first");
        until_queued(&s, 1);
        let second = submit_named(&s, Priority::Caption, "second");
        while s.full_waits() < 1 {
            std::thread::yield_now();
        }
        assert_eq!(s.queued(), 1, "the bound holds");
        release.send(()).unwrap();
        for h in [running, first, second] {
            h.join().unwrap().unwrap();
        }
        assert_eq!(ran(&s), ["running", "first", "second"]);
        assert_eq!(s.full_waits(), 1);
        let r = s.submit(Priority::Caption, never(), |_: &mut Fake| -> u32 {
            panic!("boom (expected by the test)")
        });
        assert_eq!(r, Err(ServeError::Stopped));
        assert_eq!(ran(&s), ["running", "first", "second"]);
    }

    /// Rule 1: a failed or panicking load is reported and serves nothing.
    #[test]
    fn a_failed_load_is_reported() {
        let r = Server::<Fake>::spawn("vss-engine-test", 1, || Err::<(Fake, ()), _>("no weights"));
        assert!(matches!(r, Err(StartError::Load("no weights"))));
        let r = Server::<Fake>::spawn("vss-engine-test", 1, || -> Result<(Fake, ()), ()> {
            panic!("load panicked (expected by the test)")
        });
        assert!(matches!(r, Err(StartError::Panicked)));
    }
}
