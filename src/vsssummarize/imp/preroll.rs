// SPDX-License-Identifier: MPL-2.0
//! A session that downloads its model is built on a thread of its own, and
//! the element prerolls asynchronously, so that a state change can cancel
//! the download (issue 21, F7).
//!
//! GStreamer runs every `set_state` under the element's (and each parent
//! bin's) state lock: a download inside NULL→READY would make any other
//! `set_state`, `set_state(NULL)` included, wait for it. Instead:
//! 1. NULL→READY checks the settings and, when [`Session::prepares_slowly`]
//!    says the build downloads, starts the build on the `vss-prepare` thread
//!    and returns at once. Every other session is built in NULL→READY as
//!    before (its errors fail that state change).
//! 2. READY→PAUSED takes the built session when it is there (a build error
//!    fails the state change, as before). Otherwise it activates the pads,
//!    posts `async-start` and returns `ASYNC`, like a sink that prerolls.
//!    Buffers and serialized events that arrive meanwhile wait (the
//!    pipeline is prerolling: nothing flows past this element yet).
//! 3. When the build ends, the thread takes the element's state lock (by
//!    polling, so that a state change holding it never waits for this
//!    thread), starts the run, commits PAUSED (`continue_state`, which goes
//!    on to PLAYING when that is the target) and posts `async-done`; a build
//!    error is posted as the element's error and aborts the state change.
//! 4. PAUSED→READY (a `set_state` down while prerolling goes through it)
//!    releases the waiting buffers and events as flushing; READY→NULL
//!    cancels the download (the NGC CLI and its children are killed, an
//!    `hf:` transfer stops) and waits for the thread, which ends promptly.

use super::*;

use crate::download::CancellationToken;

/// How often the build thread tries the state lock (rule 3).
const STATE_LOCK_POLL: Duration = Duration::from_millis(5);

/// What the build thread and the state changes share.
#[derive(Default)]
pub(super) struct Prepare {
    cancel: Option<CancellationToken>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The build's result, before READY→PAUSED asked for it.
    result: Option<Result<Session, gst::ErrorMessage>>,
    /// READY→PAUSED returned ASYNC: the thread commits the state.
    async_pending: bool,
    /// Buffers and serialized events wait while this is set (rule 2).
    hold: bool,
    /// The build's result was used (the session is in the state, or its
    /// error was posted): later READY→PAUSED go the synchronous way.
    used: bool,
}

/// The element's preroll state: its lock is a leaf (no other lock of the
/// element is taken while it is held).
#[derive(Default)]
pub(super) struct Preroll {
    inner: Mutex<Prepare>,
    released: parking_lot::Condvar,
    /// Fast path for the streaming thread: set while `hold` is.
    holding: AtomicBool,
}

impl VssSummarize {
    /// Rule 1. `Ok(true)`: the build runs on its own thread.
    pub(super) fn prepare_async(&self, settings: &Settings) -> bool {
        if !Session::prepares_slowly(settings, Env::from_process()) {
            return false;
        }
        let cancel = CancellationToken::new();
        let obj = self.obj().clone();
        let token = cancel.clone();
        let settings = settings.clone();
        let spawned = std::thread::Builder::new()
            .name("vss-prepare".into())
            .spawn(move || {
                let imp = obj.imp();
                let observer = observer::ElementObserver::for_element(&obj);
                let r = Session::build_cancellable(
                    &settings,
                    Env::from_process(),
                    &obj.name(),
                    &imp.counters,
                    observer,
                    &token,
                )
                .map_err(observer::error_message);
                imp.built(r, &token);
            });
        match spawned {
            Ok(t) => {
                let mut p = self.preroll.inner.lock();
                p.cancel = Some(cancel);
                p.thread = Some(t);
                true
            }
            Err(e) => {
                gst::warning!(CAT, imp = self, "no build thread ({e}): building here");
                false
            }
        }
    }

    /// Rule 2. `None`: no build thread (the session was built in
    /// NULL→READY); `Some(Ok(true))`: the session is in place now;
    /// `Some(Ok(false))`: still building, preroll asynchronously.
    pub(super) fn take_prepared(&self) -> Option<Result<bool, gst::ErrorMessage>> {
        let mut p = self.preroll.inner.lock();
        if p.thread.is_none() || p.used {
            return None;
        }
        match p.result.take() {
            Some(Ok(session)) => {
                p.used = true;
                drop(p);
                self.state.lock().session = Some(session);
                Some(Ok(true))
            }
            Some(Err(e)) => {
                p.used = true;
                Some(Err(e))
            }
            None => {
                p.async_pending = true;
                p.hold = true;
                self.preroll.holding.store(true, Ordering::Release);
                Some(Ok(false))
            }
        }
    }

    /// Rule 3, on the build thread.
    fn built(&self, r: Result<Session, gst::ErrorMessage>, cancel: &CancellationToken) {
        {
            let mut p = self.preroll.inner.lock();
            if cancel.is_cancelled() {
                return;
            }
            if !p.async_pending {
                p.result = Some(r);
                return;
            }
        }
        let obj = self.obj();
        let element: *mut gst::ffi::GstElement = obj.upcast_ref::<gst::Element>().as_ptr();
        loop {
            if cancel.is_cancelled() {
                return;
            }
            // SAFETY: the element outlives this thread (it is joined at
            // READY→NULL, and `obj` holds a reference); the lock is the
            // element's own recursive state lock, released below.
            if unsafe {
                glib::ffi::g_rec_mutex_trylock(std::ptr::addr_of_mut!((*element).state_lock))
            } != 0
            {
                break;
            }
            std::thread::sleep(STATE_LOCK_POLL);
        }
        let pending = {
            let mut p = self.preroll.inner.lock();
            p.used = true;
            std::mem::take(&mut p.async_pending)
        };
        // Still READY with PAUSED (or PLAYING) pending: nobody changed the
        // state meanwhile (a change down went through PAUSED→READY, which
        // cleared `async_pending`).
        if pending
            && !cancel.is_cancelled()
            && obj.current_state() == gst::State::Ready
            && obj.pending_state() != gst::State::VoidPending
        {
            let started = r.and_then(|session| {
                self.state.lock().session = Some(session);
                self.start()
            });
            self.release_held();
            match started {
                Ok(()) => {
                    self.start_summary_task();
                    gst::info!(CAT, imp = self, "prepared: committing PAUSED");
                    let _ = obj.continue_state(gst::StateChangeReturn::Success);
                    let _ = obj.post_message(gst::message::AsyncDone::builder().src(&*obj).build());
                }
                Err(e) => {
                    self.post_error_message(e);
                    obj.abort_state();
                }
            }
        } else {
            // Given up (rule 4): the next READY→PAUSED takes the result.
            let mut p = self.preroll.inner.lock();
            p.used = false;
            p.result = Some(r);
        }
        // SAFETY: taken above by this thread.
        unsafe { glib::ffi::g_rec_mutex_unlock(std::ptr::addr_of_mut!((*element).state_lock)) };
    }

    /// Rule 2: waits while the element prerolls asynchronously; `false`
    /// when it ended without a run (stopped, failed, flushing).
    pub(super) fn wait_prepared(&self) -> bool {
        if !self.preroll.holding.load(Ordering::Acquire) {
            return true;
        }
        let mut p = self.preroll.inner.lock();
        while p.hold && !self.sinkpad.pad_flags().contains(gst::PadFlags::FLUSHING) {
            self.preroll.released.wait(&mut p);
        }
        drop(p);
        self.dispatcher().is_some()
    }

    /// Lets the waiting buffers and events go (rules 3 and 4; flush-start).
    pub(super) fn release_held(&self) {
        let mut p = self.preroll.inner.lock();
        p.hold = false;
        self.preroll.holding.store(false, Ordering::Release);
        self.preroll.released.notify_all();
    }

    /// Wakes the waiters to look at the pad's flushing flag (flush-start).
    pub(super) fn wake_held(&self) {
        let _p = self.preroll.inner.lock();
        self.preroll.released.notify_all();
    }

    /// Rule 4, PAUSED→READY: a preroll in progress is given up (the build
    /// goes on; its result waits for the next READY→PAUSED).
    pub(super) fn stop_preroll(&self) {
        self.preroll.inner.lock().async_pending = false;
        self.release_held();
    }

    /// Rule 4, READY→NULL: cancels the build and waits for its thread.
    pub(super) fn cancel_prepare(&self) {
        let (cancel, thread) = {
            let mut p = self.preroll.inner.lock();
            p.async_pending = false;
            p.used = false;
            (p.cancel.take(), p.thread.take())
        };
        self.release_held();
        if let Some(c) = cancel {
            c.cancel();
        }
        if let Some(t) = thread {
            if t.join().is_err() {
                gst::warning!(CAT, imp = self, "the build thread panicked");
            }
        }
        // A result the thread stored before it saw the cancellation.
        let left = self.preroll.inner.lock().result.take();
        drop(left);
    }
}
