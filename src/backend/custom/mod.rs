// SPDX-License-Identifier: MPL-2.0
//! The `custom` backend: a VSS model directory (`inference.py` +
//! `manifest.yaml`) run unchanged in a Python worker subprocess.
//!
//! Why a subprocess: user code may crash (segfault in a native library,
//! `sys.exit`, out-of-memory kill) and must not take the GStreamer process
//! with it; an embedded interpreter also ties the plugin to one libpython and
//! holds the GIL across elements. The worker speaks the framed protocol of
//! [`proto`] over its stdin/stdout; frames cross as raw bytes, once.
//!
//! One worker per element; calls into Python are serialised and made in
//! chunk order (as VSS runs custom models at batch size 1): the element runs
//! one dispatcher worker for this backend. A crash turns the chunk in flight into an
//! error record; the next chunk reloads the model. After `max_restarts`
//! crashes in a row (no successful chunk between) the backend reports a fatal
//! error and the element posts an error message.
//!
//! The worker leads a process group of its own; its exit is learnt from the
//! process, not from pipe EOF (a helper it forked may hold the pipes), and
//! ending it ends its whole group: see `child`.

mod child;
pub mod manifest;
pub mod proto;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use self::child::{ExitAwareRead, ExitAwareWrite, Exited};
use self::manifest::Manifest;
use self::proto::Message;
use super::{Backend, BackendError, Caption, ChunkJob, FrameOptions};
use crate::config::BackendKind;
use crate::frames::{self, RgbImage};

/// The worker script, embedded so that the plugin is one file.
pub const WORKER_PY: &str = include_str!("worker.py");

/// Lines of the worker's stderr kept for error messages.
const STDERR_TAIL: usize = 40;
const POLL: Duration = Duration::from_millis(20);
/// How long the rest of a stopped worker's process group gets between SIGTERM
/// and SIGKILL.
const GROUP_GRACE: Duration = Duration::from_secs(1);
/// Requested pipe buffer size (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default).
const PIPE_SIZE: libc::c_int = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
}

/// Where the backend's progress and the model's own output (stderr) go.
pub type LogFn = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

#[derive(Clone)]
pub struct CustomOptions {
    /// Canonical model directory (see [`manifest::resolve_model_dir`]).
    pub model_dir: PathBuf,
    pub python: String,
    pub manifest: Manifest,
    /// The prompt passed to `generate`, its placeholders (`{timestamps}`,
    /// …, see [`crate::prompt::PromptVars`]) filled per chunk; nothing else
    /// is added (VSS passes no timestamps to custom models).
    pub prompt: String,
    /// The `configs` dict: only what the user set.
    pub configs: Map<String, Value>,
    /// Frame size after the manifest and the properties are applied.
    pub frames: FrameOptions,
    /// Where frames are converted and resized (`device` property).
    pub prep: crate::prep::FramePrep,
    /// Extra environment for the worker (the env-file's variables).
    pub env: Vec<(String, String)>,
    /// Longest a `generate` call may take; past it the worker is restarted.
    pub call_timeout: Duration,
    /// Longest loading (`import inference; Inference()`) may take.
    pub load_timeout: Duration,
    pub max_restarts: u32,
    pub log: LogFn,
}

/// What the worker reported when it came up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerInfo {
    pub has_embeddings: bool,
    /// e.g. `torch.float32 on cpu` or `numpy.uint8`.
    pub tensor: String,
    pub python: String,
}

/// Time spent around one `generate` call, for the bridge-overhead figure.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BridgeTiming {
    /// Chunk handed to the backend → frames converted/encoded.
    pub prepare: Duration,
    /// Frames converted → `generate` entered (pipe, numpy/torch, embeddings).
    pub to_entry: Duration,
    /// Inside `generate`.
    pub generate: Duration,
    /// `generate` returned → result back in the element.
    pub back: Duration,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own. CLOCK_MONOTONIC
    // is also what Python's time.monotonic_ns() reads on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One running worker process; dropping it ends the process and its group.
struct Proc {
    child: Child,
    /// None once closed (an idle worker exits at EOF).
    stdin: Option<ExitAwareWrite<ChildStdin>>,
    exited: Exited,
    /// How the process ended, once [`child::end`] has reaped it.
    ended: Option<String>,
    rx: Receiver<std::io::Result<Message>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Arc<AtomicBool>,
    /// Messages the worker still owes before it answers a new request:
    /// `ready` after a start, results of requests whose caller gave up.
    owed: usize,
}

impl Proc {
    /// Errors are [`BackendError::Fatal`]: no worker, no captions.
    fn spawn(o: &CustomOptions) -> Result<Proc, BackendError> {
        let fatal = BackendError::Fatal;
        let mode = if o.manifest.jpeg_encoded {
            "jpeg"
        } else {
            "raw"
        };
        let mut cmd = Command::new(&o.python);
        cmd.arg("-u")
            .arg("-c")
            .arg(WORKER_PY)
            .arg(&o.model_dir)
            .arg(mode)
            .envs(o.env.iter().map(|(k, v)| (k, v)))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that ending it ends its helpers too.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            fatal(format!(
                "cannot start Python '{}': {e}; install python3 or set the python property (or VSS_PYTHON) to the interpreter of the environment your model needs",
                o.python
            ))
        })?;
        let pid = child.id();
        let exited = match Exited::watch(pid) {
            Ok(e) => e,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fatal(format!(
                    "cannot start a thread watching the Python process: {e}"
                )));
            }
        };
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        // Bigger pipe buffers: fewer context switches per chunk of frames.
        for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
            // SAFETY: fcntl on a pipe fd we own; failure only keeps the default size.
            unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE) };
        }
        let stderr = child.stderr.take().expect("piped");
        // Bounded: the worker owes at most a few messages at a time.
        let (tx, rx): (SyncSender<_>, _) = std::sync::mpsc::sync_channel(4);
        let mut proc = Proc {
            child,
            stdin: None,
            exited: exited.clone(),
            ended: None,
            rx,
            stderr_tail: Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL))),
            stderr_done: Arc::new(AtomicBool::new(false)),
            owed: 1,
        };
        // From here on, dropping `proc` ends the process.
        proc.stdin = Some(
            ExitAwareWrite::new(stdin, exited.clone())
                .map_err(|e| fatal(format!("cannot set up the pipe to Python: {e}")))?,
        );
        // Reads EOF once the worker has exited, whoever else holds the pipe.
        let stdout = ExitAwareRead::new(stdout, exited);
        std::thread::Builder::new()
            .name(format!("vss-py-out-{pid}"))
            .spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, stdout);
                loop {
                    let m = proto::read_msg(&mut r);
                    let end = m.is_err();
                    if tx.send(m).is_err() || end {
                        break;
                    }
                }
            })
            .map_err(|e| fatal(format!("cannot start a reader thread: {e}")))?;

        let (tail2, done2, log) = (
            proc.stderr_tail.clone(),
            proc.stderr_done.clone(),
            o.log.clone(),
        );
        std::thread::Builder::new()
            .name(format!("vss-py-err-{pid}"))
            .spawn(move || {
                let r = BufReader::new(stderr);
                for line in r.split(b'\n') {
                    let Ok(line) = line else { break };
                    let mut s = String::from_utf8_lossy(&line).into_owned();
                    if s.len() > 1000 {
                        let mut cut = 1000;
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        s.truncate(cut);
                        s.push('…');
                    }
                    log(LogLevel::Info, &format!("model[{pid}]: {s}"));
                    let mut t = tail2.lock();
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(s);
                }
                done2.store(true, Ordering::Release);
            })
            .map_err(|e| fatal(format!("cannot start a stderr thread: {e}")))?;
        Ok(proc)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` stderr lines (waits briefly for the stream to end when
    /// the process is gone, so a dying traceback is complete).
    fn stderr_tail(&self, n: usize) -> String {
        let until = Instant::now() + Duration::from_millis(500);
        while !self.stderr_done.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let t = self.stderr_tail.lock();
        let skip = t.len().saturating_sub(n);
        t.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Ends the process (killing it if it still runs) and its process
    /// group, once; returns how the process ended ("exited with status 3",
    /// "was killed by signal 11 (SIGSEGV)").
    fn end(&mut self) -> String {
        if let Some(how) = &self.ended {
            return how.clone();
        }
        self.stdin = None;
        let how = match child::end(&mut self.child, &self.exited, GROUP_GRACE) {
            Ok(st) => describe_exit(st),
            Err(e) => format!("could not be ended ({e})"),
        };
        self.ended = Some(how.clone());
        how
    }

    /// How the process ended; kills it (and its group) if it is still
    /// running after a short wait.
    fn reap(&mut self) -> String {
        if self.ended.is_none() && !self.exited.wait(Some(Duration::from_millis(1000))) {
            self.end();
            return "was still running and was killed".into();
        }
        self.end()
    }

    /// Closes stdin (an idle worker exits at EOF) and waits a little, then
    /// ends the process and its group; kills at once a busy worker (whose
    /// answer nobody wants).
    fn stop(mut self) {
        if self.owed == 0 {
            self.stdin = None;
            self.exited.wait(Some(Duration::from_secs(2)));
        }
        // Drop ends it.
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.end();
    }
}

fn describe_exit(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = st.signal() {
        let name = match sig {
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGKILL => " (SIGKILL, e.g. the out-of-memory killer)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGILL => " (SIGILL)",
            _ => "",
        };
        format!("was killed by signal {sig}{name}")
    } else {
        format!("exited with status {}", st.code().unwrap_or(-1))
    }
}

#[derive(Default)]
struct Slot {
    proc: Option<Proc>,
    busy: bool,
    /// Crashes since the last successful chunk.
    crashes: u32,
    next_id: u64,
}

pub struct CustomBackend {
    opts: CustomOptions,
    model: String,
    info: Mutex<WorkerInfo>,
    slot: Mutex<Slot>,
    free: Condvar,
    fatal: Mutex<Option<String>>,
    /// `fatal` is set: the element asks on every buffer, so the common
    /// answer ("no") takes no lock.
    has_fatal: AtomicBool,
    last_timing: Mutex<Option<BridgeTiming>>,
}

/// What went wrong while talking to the worker.
enum Trouble {
    /// The caller's cancel fired.
    Cancelled,
    /// The process died or the pipe broke; the string says how.
    Died(String),
    /// The call took longer than `call_timeout`.
    Timeout,
    /// The model could not be (re)loaded.
    Load(String),
}

impl CustomBackend {
    /// Starts the worker and waits until the model is loaded (or fails).
    /// Errors are [`BackendError::Fatal`].
    pub fn new(opts: CustomOptions) -> Result<CustomBackend, BackendError> {
        let model = opts
            .model_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        let b = CustomBackend {
            model,
            info: Mutex::new(WorkerInfo::default()),
            slot: Mutex::new(Slot::default()),
            free: Condvar::new(),
            fatal: Mutex::new(None),
            has_fatal: AtomicBool::new(false),
            last_timing: Mutex::new(None),
            opts,
        };
        // Dropped on failure, which ends the process.
        let mut p = b.start_proc()?;
        let never = CancellationToken::new();
        b.settle(&mut p, &never, Some(b.opts.load_timeout))
            .map_err(|t| match t {
                Trouble::Load(e) => BackendError::Fatal(e),
                Trouble::Died(e) => BackendError::Fatal(b.load_failure_text(&e)),
                Trouble::Timeout => BackendError::Fatal(format!(
                    "loading the model in '{}' took longer than {:.0} s",
                    b.opts.model_dir.display(),
                    b.opts.load_timeout.as_secs_f64()
                )),
                Trouble::Cancelled => BackendError::Cancelled,
            })?;
        b.slot.lock().proc = Some(p);
        Ok(b)
    }

    pub fn info(&self) -> WorkerInfo {
        self.info.lock().clone()
    }

    /// The timing of the last successful call.
    pub fn last_timing(&self) -> Option<BridgeTiming> {
        *self.last_timing.lock()
    }

    fn log(&self, level: LogLevel, msg: &str) {
        (self.opts.log)(level, msg)
    }

    fn load_failure_text(&self, died: &str) -> String {
        format!(
            "cannot load the custom model in '{}' with '{}': the Python process {died}",
            self.opts.model_dir.display(),
            self.opts.python
        )
    }

    fn start_proc(&self) -> Result<Proc, BackendError> {
        self.log(
            LogLevel::Info,
            &format!(
                "loading custom model '{}' with {} ({} mode)",
                self.opts.model_dir.display(),
                self.opts.python,
                if self.opts.manifest.jpeg_encoded {
                    "JPEG"
                } else {
                    "raw frame"
                }
            ),
        );
        Proc::spawn(&self.opts)
    }

    /// Receives one message, watching `cancel` and an optional deadline.
    fn recv(
        &self,
        p: &mut Proc,
        cancel: &CancellationToken,
        deadline: Option<Instant>,
    ) -> Result<Message, Trouble> {
        loop {
            match p.rx.recv_timeout(POLL) {
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(e)) => {
                    let how = p.reap();
                    let detail = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        how
                    } else {
                        format!("{how} after a protocol error: {e}")
                    };
                    return Err(Trouble::Died(self.with_tail(p, &detail)));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let how = p.reap();
                    return Err(Trouble::Died(self.with_tail(p, &how)));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if cancel.is_cancelled() {
                        return Err(Trouble::Cancelled);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Trouble::Timeout);
                    }
                }
            }
        }
    }

    fn with_tail(&self, p: &Proc, how: &str) -> String {
        let tail = p.stderr_tail(12);
        if tail.trim().is_empty() {
            format!("(pid {}) {how}", p.pid())
        } else {
            format!("(pid {}) {how}; its last output:\n{tail}", p.pid())
        }
    }

    /// Takes every message the worker owes (its `ready`, stale results).
    fn settle(
        &self,
        p: &mut Proc,
        cancel: &CancellationToken,
        load_timeout: Option<Duration>,
    ) -> Result<(), Trouble> {
        let deadline = load_timeout.map(|t| Instant::now() + t);
        while p.owed > 0 {
            let m = self.recv(p, cancel, deadline)?;
            p.owed -= 1;
            match m.op() {
                "ready" => {
                    let info = WorkerInfo {
                        has_embeddings: m.header.get("has_embeddings") == Some(&Value::Bool(true)),
                        tensor: m.str("tensor").unwrap_or_default().to_string(),
                        python: m.str("python").unwrap_or_default().to_string(),
                    };
                    self.log(
                        LogLevel::Info,
                        &format!(
                            "custom model '{}' ready (pid {}, Python {}, raw frames as {}, get_embeddings: {})",
                            self.model,
                            p.pid(),
                            info.python,
                            info.tensor,
                            if info.has_embeddings { "yes" } else { "no" }
                        ),
                    );
                    *self.info.lock() = info;
                }
                "init_error" => {
                    let err = m.str("error").unwrap_or("unknown error");
                    let tb = m.str("traceback").unwrap_or_default();
                    let _ = p.reap();
                    return Err(Trouble::Load(format!(
                        "cannot load the custom model in '{}': {err}\nPython traceback (last lines):\n{tb}",
                        self.opts.model_dir.display()
                    )));
                }
                _ => {} // a result nobody waits for any more
            }
        }
        Ok(())
    }

    /// Waits for the worker slot (calls into Python are serialised).
    fn acquire(&self, cancel: &CancellationToken) -> Result<SlotGuard<'_>, BackendError> {
        let mut s = self.slot.lock();
        while s.busy {
            if cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            self.free.wait_for(&mut s, Duration::from_millis(50));
        }
        s.busy = true;
        let proc = s.proc.take();
        Ok(SlotGuard {
            backend: self,
            proc,
        })
    }

    /// Marks the backend as unable to go on (the first reason stays);
    /// returns `msg` as a fatal error.
    fn set_fatal(&self, msg: String) -> BackendError {
        let mut f = self.fatal.lock();
        if f.is_none() {
            *f = Some(msg.clone());
            self.has_fatal.store(true, Ordering::Release);
        }
        BackendError::Fatal(msg)
    }

    /// Records a crash; returns the sentence to append to the chunk's error,
    /// and whether no restarts are left (the backend is then fatal).
    fn crashed(&self) -> (String, bool) {
        let n = {
            let mut s = self.slot.lock();
            s.crashes += 1;
            s.crashes
        };
        let max = self.opts.max_restarts;
        if n > max {
            self.set_fatal(format!(
                "the custom model in '{}' failed {n} times in a row (max {max} restarts); giving up",
                self.opts.model_dir.display()
            ));
            ("no restarts left".into(), true)
        } else {
            (
                format!("the model will be reloaded (restart {n} of {max})"),
                false,
            )
        }
    }

    fn prepare(
        &self,
        job: &ChunkJob,
        cancel: &CancellationToken,
    ) -> Result<Prepared, BackendError> {
        let failed = BackendError::Failed;
        let first = job
            .frames
            .first()
            .ok_or_else(|| failed("the chunk has no frames".into()))?;
        let fo = self.opts.frames;
        let (tw, th) = frames::target_size(first.width, first.height, fo.width, fo.height);
        let mut rgb = Vec::with_capacity(job.frames.len());
        for f in &job.frames {
            if cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            // All frames of a chunk get the first one's size (as in VSS).
            rgb.push(
                self.opts
                    .prep
                    .rgb(f, tw, th)
                    .map_err(|e| failed(format!("cannot prepare frame: {e}")))?,
            );
        }
        let jpegs = if self.opts.manifest.jpeg_encoded {
            rgb.iter()
                .map(|i| frames::encode_jpeg(i, fo.jpeg_quality))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failed(format!("cannot encode frame: {e}")))?
        } else {
            Vec::new()
        };
        let embed = self.info.lock().has_embeddings;
        let need_raw = !self.opts.manifest.jpeg_encoded || embed;
        if !need_raw {
            rgb.clear();
        }
        // A prompt changed while running (steering) replaces the one set at
        // start; placeholders are filled in either.
        let prompt = crate::prompt::PromptVars {
            labels: &job.frame_labels,
            stream_id: &job.stream_id,
        }
        .fill(
            job.prompts
                .as_ref()
                .map_or(&self.opts.prompt, |p| &p.prompt),
        );
        Ok(Prepared {
            prompt,
            n: job.frames.len(),
            w: tw,
            h: th,
            rgb,
            jpegs,
            embed,
        })
    }

    /// One request/response with a live worker.
    fn call(
        &self,
        p: &mut Proc,
        id: u64,
        req: &Prepared,
        cancel: &CancellationToken,
    ) -> Result<Message, Trouble> {
        self.settle(p, cancel, Some(self.opts.load_timeout))?;
        let mut header = Map::new();
        header.insert("op".into(), json!("generate"));
        header.insert("id".into(), json!(id));
        header.insert("prompt".into(), json!(req.prompt));
        header.insert("configs".into(), Value::Object(self.opts.configs.clone()));
        header.insert("n".into(), json!(req.n));
        header.insert("h".into(), json!(req.h));
        header.insert("w".into(), json!(req.w));
        header.insert("raw".into(), json!(!req.rgb.is_empty()));
        header.insert("jpeg".into(), json!(self.opts.manifest.jpeg_encoded));
        header.insert("embed".into(), json!(req.embed));
        let mut blobs: Vec<Vec<&[u8]>> = Vec::new();
        if !req.rgb.is_empty() {
            blobs.push(req.rgb.iter().map(|i| i.data.as_slice()).collect());
        }
        blobs.extend(req.jpegs.iter().map(|j| vec![j.as_slice()]));
        let Some(stdin) = p.stdin.as_mut() else {
            let how = p.reap();
            return Err(Trouble::Died(self.with_tail(p, &how)));
        };
        if let Err(e) = proto::write_msg(stdin, header, &blobs) {
            let how = p.reap();
            return Err(Trouble::Died(
                self.with_tail(p, &format!("{how} (writing the request failed: {e})")),
            ));
        }
        p.owed += 1;
        let deadline = Instant::now() + self.opts.call_timeout;
        loop {
            let m = self.recv(p, cancel, Some(deadline))?;
            p.owed -= 1;
            if m.op() == "result" && m.header.get("id") == Some(&json!(id)) {
                return Ok(m);
            }
        }
    }
}

struct Prepared {
    n: usize,
    w: u32,
    h: u32,
    /// Raw frames, when the model gets them or `get_embeddings` needs them.
    rgb: Vec<RgbImage>,
    jpegs: Vec<Vec<u8>>,
    embed: bool,
    /// The prompt (steered, if it was changed while running) with its
    /// placeholders filled ([`crate::prompt::PromptVars`]).
    prompt: String,
}

/// Holds the worker slot; gives the process back (or not) and wakes the
/// next caller when dropped.
struct SlotGuard<'a> {
    backend: &'a CustomBackend,
    proc: Option<Proc>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.backend.slot.lock();
        s.proc = self.proc.take();
        s.busy = false;
        self.backend.free.notify_one();
    }
}

impl Backend for CustomBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Custom
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn fatal_error(&self) -> Option<String> {
        if !self.has_fatal.load(Ordering::Acquire) {
            return None;
        }
        self.fatal.lock().clone()
    }

    /// One Python call at a time, in chunk order (stateful models such as
    /// trackers see the chunks as they happened).
    fn max_concurrency(&self) -> Option<usize> {
        Some(1)
    }

    fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, BackendError> {
        let t0 = monotonic_ns();
        if let Some(f) = self.fatal_error() {
            return Err(BackendError::Fatal(f));
        }
        let req = self.prepare(job, cancel)?;
        let t_prepared = monotonic_ns();
        let mut g = self.acquire(cancel)?;
        if let Some(f) = self.fatal_error() {
            return Err(BackendError::Fatal(f));
        }
        let id = {
            let mut s = self.slot.lock();
            s.next_id += 1;
            s.next_id
        };
        if g.proc.is_none() {
            g.proc = Some(
                self.start_proc()
                    .map_err(|e| self.set_fatal(e.to_string()))?,
            );
        }
        let p = g.proc.as_mut().expect("started above");
        let m = match self.call(p, id, &req, cancel) {
            Ok(m) => m,
            Err(Trouble::Cancelled) => return Err(BackendError::Cancelled),
            Err(Trouble::Load(e)) => {
                g.proc = None;
                return Err(self.set_fatal(e));
            }
            Err(Trouble::Died(how)) => {
                g.proc = None;
                let (next, fatal) = self.crashed();
                let msg = format!("the model process {how}; {next}");
                return Err(if fatal {
                    BackendError::Fatal(msg)
                } else {
                    BackendError::Failed(msg)
                });
            }
            Err(Trouble::Timeout) => {
                if let Some(p) = g.proc.take() {
                    let pid = p.pid();
                    drop(p); // kills it and its group
                    self.log(LogLevel::Warning, &format!("killed model process {pid}"));
                }
                let (next, fatal) = self.crashed();
                let msg = format!(
                    "generate() did not return within {:.0} s (request-timeout); the model process was stopped and {next}",
                    self.opts.call_timeout.as_secs_f64()
                );
                return Err(if fatal {
                    BackendError::Fatal(msg)
                } else {
                    BackendError::Timeout(msg)
                });
            }
        };
        let t_back = monotonic_ns();
        drop(g);

        let ns = |k: &str| m.header.get(k).and_then(Value::as_u64);
        if let (Some(t_in), Some(t_out)) = (ns("t_in"), ns("t_out")) {
            let d = |a: u64, b: u64| Duration::from_nanos(b.saturating_sub(a));
            let t = BridgeTiming {
                prepare: d(t0, t_prepared),
                to_entry: d(t_prepared, t_in),
                generate: d(t_in, t_out),
                back: d(t_out, t_back),
            };
            self.log(
                LogLevel::Debug,
                &format!(
                    "chunk {}: prepare {:.2} ms, to generate() {:.2} ms, generate {:.2} ms, back {:.2} ms",
                    job.chunk_index,
                    t.prepare.as_secs_f64() * 1e3,
                    t.to_entry.as_secs_f64() * 1e3,
                    t.generate.as_secs_f64() * 1e3,
                    t.back.as_secs_f64() * 1e3
                ),
            );
            *self.last_timing.lock() = Some(t);
        }
        // The worker is healthy: a crash later starts a fresh count.
        self.slot.lock().crashes = 0;

        let embedding = if m.header.get("embedding") == Some(&Value::Bool(true)) {
            m.blobs.first().map(|b| {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect::<Vec<f32>>()
            })
        } else {
            None
        };
        let embedding_error = m.str("embedding_error").map(str::to_string);
        if let Some(e) = m.str("error") {
            if let Some(tb) = m.str("traceback") {
                self.log(LogLevel::Debug, &format!("chunk {}: {tb}", job.chunk_index));
            }
            // The model's own exception: this chunk failed.
            return Err(BackendError::Failed(e.to_string()));
        }
        Ok(Caption {
            text: m.str("text").unwrap_or_default().to_string(),
            embedding,
            embedding_error,
            ..Default::default()
        })
    }
}

impl Drop for CustomBackend {
    fn drop(&mut self) {
        if let Some(p) = self.slot.lock().proc.take() {
            p.stop();
        }
    }
}
