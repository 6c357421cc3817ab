// SPDX-License-Identifier: MPL-2.0
//! Evidence of alerts and incidents (`evidence-dir`): a JPEG snapshot per
//! alert and an MP4 clip per incident, under a disk budget.
//!
//! Rules:
//! 1. **Snapshot**: each `alert` record names (`snapshot`) a JPEG of the
//!    chunk's *middle* sampled frame (the frames are spread over the chunk;
//!    the middle one is the likeliest to show what the caption, and so the
//!    event, describes), at most [`SNAPSHOT_MAX_WIDTH`] pixels wide, written
//!    on the event-check thread before the alert is published.
//! 2. **Ring**: while clips are on (`clip-pre` or `clip-post` > 0) the
//!    element keeps a ring of thumbnails ([`THUMB_WIDTH`] pixels wide, RGB,
//!    at most [`CLIP_FPS`] a second, scaled on the streaming thread) bounded
//!    by `clip-ring-bytes` ([`ring`]): at 16:9 a thumbnail is 173 KB, so the
//!    default 128 MiB hold about 775 frames, 155 s.
//! 3. **Clip**: an `incident-end` record names (`clip`) an MP4 of the ring's
//!    frames from `start − clip-pre` to `end + clip-post` (`clip-start`,
//!    `clip-end`: what it covers). The record is decided when the incident
//!    closes, so the post-roll holds what had arrived then: at least
//!    `incident-gap` after the last alert chunk (whole `clip-post` when
//!    `incident-gap ≥ clip-post`), up to the last frame at EOS. A pre-roll
//!    or an incident longer than the ring holds starts at the ring's oldest
//!    frame.
//! 4. **Off the streaming thread**: clips are encoded by one evidence
//!    thread ([`clip`] through [`crate::mp4`]: GStreamer's x264enc and
//!    mp4mux); the frames of a queued clip share the ring's pixels (no
//!    copy), so a clip keeps evicted frames alive only until it is encoded:
//!    memory is at most `clip-ring-bytes` plus the clips waiting. At most
//!    [`MAX_QUEUED_CLIPS`] wait, more are skipped (no `clip` field, counted,
//!    logged). The record names the file as soon as the incident closes;
//!    the file appears when it is encoded (EOS waits for that, within
//!    `drain-timeout`). Files are written as `….part` and renamed.
//! 5. **Budget**: `evidence-max-bytes` bounds this stream's files in the
//!    directory, the oldest deleted first ([`store`]): a snapshot is as old
//!    as its chunk's end, a clip as its incident's end (stream time; the
//!    files of earlier runs are older), whatever order the event-check and
//!    evidence threads write them in.
//! 6. **Names**: `<stream-id>-<run>-alert-<chunk>.jpg` and
//!    `<stream-id>-<run>-<incident-id's number>.mp4`, where `run` is the
//!    READY→PAUSED wall-clock time (`YYYYmmddTHHMMSS`, `-2`, `-3` … for
//!    further runs of the element within that second) so that a restarted
//!    element never overwrites earlier files; `stream-id` characters other
//!    than letters, digits, `-`, `_` and `.` become `_`.

pub mod clip;
pub mod ring;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::frames::RawFrame;
use crate::record::IncidentRecord;
use crate::summary::Alert;
use ring::{Ring, RingFrame};
use store::Store;

/// Widest snapshot, pixels (larger frames are scaled down).
pub const SNAPSHOT_MAX_WIDTH: u32 = 1280;
/// Ring thumbnails' width, pixels (height keeps the aspect, even).
pub const THUMB_WIDTH: u32 = 320;
/// Thumbnails per second at most.
pub const CLIP_FPS: f64 = 5.0;
/// Time between two thumbnails, seconds.
pub const CLIP_FRAME_INTERVAL: f64 = 1.0 / CLIP_FPS;
/// Clips waiting for the evidence thread at most.
pub const MAX_QUEUED_CLIPS: usize = 4;
/// The longest one clip may take to encode.
pub const CLIP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct EvidenceConfig {
    pub dir: PathBuf,
    pub stream_id: String,
    pub max_bytes: u64,
    pub clip_pre: f64,
    pub clip_post: f64,
    pub ring_bytes: u64,
}

/// Counters (read by tests and the log).
#[derive(Debug, Default)]
pub struct EvidenceStats {
    pub snapshots: AtomicU64,
    pub clips: AtomicU64,
    pub clips_failed: AtomicU64,
    pub clips_skipped: AtomicU64,
}

pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

struct ClipJob {
    frames: Vec<RingFrame>,
    path: PathBuf,
    /// Its place in the budget's deletion order: the incident's end.
    age: store::Age,
}

/// `stream-id` as a file-name part (rule 6).
pub fn file_stem(stream_id: &str) -> String {
    let s: String = stream_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Writes `bytes` to `path` through `path.part` (rule 4).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let part = part_path(path);
    std::fs::write(&part, bytes)?;
    std::fs::rename(&part, path)
}

fn part_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

pub struct Evidence {
    cfg: EvidenceConfig,
    stem: String,
    run: Mutex<String>,
    store: Arc<Mutex<Store>>,
    ring: Mutex<Ring>,
    /// Stream time of the last thumbnail taken.
    last_thumb: Mutex<Option<f64>>,
    jobs: Option<SyncSender<ClipJob>>,
    /// Clips queued or being encoded.
    busy: Arc<(Mutex<usize>, Condvar)>,
    pub stats: Arc<EvidenceStats>,
    log: Arc<Mutex<Option<LogFn>>>,
}

impl Evidence {
    /// Creates the directory if needed and scans it (NULL→READY); errors
    /// name `evidence-dir`.
    pub fn new(cfg: EvidenceConfig) -> Result<Evidence, String> {
        let dir = &cfg.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("evidence-dir '{}' cannot be created: {e}", dir.display()))?;
        let stem = file_stem(&cfg.stream_id);
        let store = Store::open(dir, &format!("{stem}-"), cfg.max_bytes)
            .map_err(|e| format!("evidence-dir '{}' cannot be read: {e}", dir.display()))?;
        // Writable?
        let probe = dir.join(format!(".{stem}-probe"));
        std::fs::write(&probe, b"")
            .map_err(|e| format!("evidence-dir '{}' is not writable: {e}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        let clips = cfg.clip_pre > 0.0 || cfg.clip_post > 0.0;
        if clips {
            if let Some(e) = clip::unavailable() {
                return Err(format!(
                    "clip-pre / clip-post ask for incident clips, which cannot be made: {e}; install it or set clip-pre=0 and clip-post=0"
                ));
            }
        }
        let store = Arc::new(Mutex::new(store));
        let busy = Arc::new((Mutex::new(0usize), Condvar::new()));
        let stats = Arc::new(EvidenceStats::default());
        let log: Arc<Mutex<Option<LogFn>>> = Arc::new(Mutex::new(None));
        let jobs = if clips {
            let (tx, rx) = sync_channel::<ClipJob>(MAX_QUEUED_CLIPS);
            let (store, busy, stats, log) =
                (store.clone(), busy.clone(), stats.clone(), log.clone());
            std::thread::Builder::new()
                .name("vsssummarize-evidence".into())
                .spawn(move || {
                    for job in rx {
                        encode_job(&job, &store, &stats, &log);
                        let mut n = busy.0.lock();
                        *n = n.saturating_sub(1);
                        busy.1.notify_all();
                    }
                })
                .map_err(|e| format!("cannot start the evidence thread: {e}"))?;
            Some(tx)
        } else {
            None
        };
        Ok(Evidence {
            ring: Mutex::new(Ring::new(cfg.ring_bytes as usize)),
            cfg,
            stem,
            run: Mutex::new(String::new()),
            store,
            last_thumb: Mutex::new(None),
            jobs,
            busy,
            stats,
            log,
        })
    }

    /// Where warnings go (the element's bus).
    pub fn set_log(&self, log: LogFn) {
        *self.log.lock() = Some(log);
    }

    fn warn(&self, m: &str) {
        if let Some(l) = &*self.log.lock() {
            l(m);
        }
    }

    /// For the log line at NULL→READY.
    pub fn describe(&self) -> String {
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        let clips = if self.clips() {
            format!(
                "clips from {} s before to {} s after each incident (ring of at most {:.0} MiB)",
                self.cfg.clip_pre,
                self.cfg.clip_post,
                mb(self.cfg.ring_bytes)
            )
        } else {
            "no clips (clip-pre=0, clip-post=0)".into()
        };
        let store = self.store.lock();
        format!(
            "snapshots per alert, {clips}; budget {:.0} MiB, {} files ({:.1} MiB) there",
            mb(self.cfg.max_bytes),
            store.count(),
            mb(store.total())
        )
    }

    /// Clips are made (`clip-pre` or `clip-post` > 0).
    pub fn clips(&self) -> bool {
        self.jobs.is_some()
    }

    /// READY→PAUSED: a new run name, an empty ring.
    pub fn start_run(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = run_name(now);
        let mut run = self.run.lock();
        // A second run within the same second of the same element gets a
        // suffix, so that it never overwrites the first one's files.
        *run = if run.split('-').next() == Some(name.as_str()) {
            let n: u32 = run
                .split_once('-')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(1);
            format!("{name}-{}", n + 1)
        } else {
            name
        };
        drop(run);
        self.store.lock().new_run();
        self.ring.lock().clear();
        *self.last_thumb.lock() = None;
    }

    fn path(&self, what: &str, ext: &str) -> PathBuf {
        self.cfg
            .dir
            .join(format!("{}-{}-{what}.{ext}", self.stem, self.run.lock()))
    }

    /// Rule 1: writes the snapshot of `alert` from `frame`; its path.
    pub fn snapshot(&self, alert: &Alert, frame: &RawFrame) -> Result<String, String> {
        let w = frame.width.min(SNAPSHOT_MAX_WIDTH);
        let w = if w == frame.width { 0 } else { w };
        let jpeg = crate::frames::prepare_jpeg(frame, w, 0, 85)
            .map_err(|e| format!("snapshot of chunk {}: {e}", alert.chunk_index))?;
        let path = self.path(&format!("alert-{}", alert.chunk_index), "jpg");
        write_file(&path, &jpeg)
            .map_err(|e| format!("snapshot {} not written: {e}", path.display()))?;
        let mut store = self.store.lock();
        let age = store.age(alert.end);
        if !store.add(path.clone(), jpeg.len() as u64, age) {
            return Err(format!(
                "snapshot {} ({} bytes) is larger than evidence-max-bytes",
                path.display(),
                jpeg.len()
            ));
        }
        self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(path.to_string_lossy().into_owned())
    }

    /// Rule 2: whether the frame at stream time `t` goes into the ring (at
    /// most [`CLIP_FPS`] a second); the caller then makes the thumbnail
    /// with [`thumbnail`] and calls [`push_thumbnail`](Self::push_thumbnail).
    pub fn wants_frame(&self, t: f64) -> bool {
        if !self.clips() {
            return false;
        }
        let last = self.last_thumb.lock();
        !matches!(*last, Some(l) if t >= l && t < l + CLIP_FRAME_INTERVAL * 0.95)
    }

    /// Rule 2: keeps a thumbnail taken at stream time `t`.
    pub fn push_thumbnail(&self, t: f64, thumb: Thumbnail) {
        *self.last_thumb.lock() = Some(t);
        self.ring.lock().push(RingFrame {
            t,
            width: thumb.width,
            height: thumb.height,
            rgb: Arc::new(thumb.rgb),
        });
    }

    /// The ring's bytes and frames (the bound is checked by tests).
    pub fn ring_usage(&self) -> (usize, usize) {
        let r = self.ring.lock();
        (r.bytes(), r.len())
    }

    /// Rule 3: fills `clip`, `clip-start`, `clip-end` of an ending
    /// incident and queues the clip (rule 4).
    pub fn clip(&self, r: &mut IncidentRecord) {
        let Some(jobs) = &self.jobs else { return };
        let from = r.start - self.cfg.clip_pre;
        let to = r.end + self.cfg.clip_post;
        let frames = self.ring.lock().range(from, to);
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            self.warn(&format!(
                "no clip for {}: no frames of [{from:.2} s, {to:.2} s] are left in the ring",
                r.incident_id
            ));
            return;
        };
        let n = r.incident_id.rsplit('-').next().unwrap_or("0");
        let path = self.path(&format!("incident-{n}"), "mp4");
        let (start, end) = (first.t, last.t + CLIP_FRAME_INTERVAL);
        *self.busy.0.lock() += 1;
        let age = self.store.lock().age(r.end);
        match jobs.try_send(ClipJob {
            frames,
            path: path.clone(),
            age,
        }) {
            Ok(()) => {
                r.clip = Some(path.to_string_lossy().into_owned());
                r.clip_start = Some(start);
                r.clip_end = Some(end);
            }
            Err(e) => {
                let mut b = self.busy.0.lock();
                *b = b.saturating_sub(1);
                self.stats.clips_skipped.fetch_add(1, Ordering::Relaxed);
                let why = match e {
                    TrySendError::Full(_) => {
                        format!("{MAX_QUEUED_CLIPS} clips are already waiting to be encoded")
                    }
                    TrySendError::Disconnected(_) => "the evidence thread stopped".into(),
                };
                self.warn(&format!("no clip for {}: {why}", r.incident_id));
            }
        }
    }

    /// Waits until no clip is queued or being encoded, or `deadline`
    /// (EOS); false on timeout.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let (m, cv) = &*self.busy;
        let mut n = m.lock();
        while *n > 0 {
            if cv.wait_until(&mut n, deadline).timed_out() {
                return *n == 0;
            }
        }
        true
    }

    /// This stream's evidence bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.store.lock().total()
    }
}

fn encode_job(
    job: &ClipJob,
    store: &Mutex<Store>,
    stats: &EvidenceStats,
    log: &Mutex<Option<LogFn>>,
) {
    let part = part_path(&job.path);
    let res = clip::encode(&job.frames, &job.path, CLIP_TIMEOUT).and_then(|()| {
        let n = std::fs::metadata(&job.path)
            .map_err(|e| e.to_string())?
            .len();
        if store.lock().add(job.path.clone(), n, job.age) {
            Ok(())
        } else {
            Err(format!("it is larger ({n} bytes) than evidence-max-bytes"))
        }
    });
    match res {
        Ok(()) => {
            stats.clips.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            stats.clips_failed.fetch_add(1, Ordering::Relaxed);
            if let Some(l) = &*log.lock() {
                l(&format!("clip {} not written: {e}", job.path.display()));
            }
        }
    }
}

/// A ring thumbnail, made by [`thumbnail`].
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// Rule 2: the frame scaled to [`THUMB_WIDTH`] (even height), RGB.
pub fn thumbnail(frame: &RawFrame) -> Result<Thumbnail, crate::frames::FrameError> {
    let w = THUMB_WIDTH.min(frame.width.max(2)) & !1;
    let h = ((u64::from(frame.height) * u64::from(w) / u64::from(frame.width.max(1))) as u32)
        .max(2)
        & !1;
    let rgb = crate::frames::prepare_rgb(frame, w, h)?;
    Ok(Thumbnail {
        width: rgb.width,
        height: rgb.height,
        rgb: rgb.data,
    })
}

/// `YYYYmmddTHHMMSS` (UTC) of a Unix time.
fn run_name(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::prompt::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{Colorimetry, PixelFormat};

    #[test]
    fn names() {
        assert_eq!(file_stem("dock 3/cam"), "dock_3_cam");
        assert_eq!(file_stem(""), "_");
        assert_eq!(file_stem("..x"), "_..x");
        assert_eq!(run_name(0), "19700101T000000");
        assert_eq!(run_name(1_796_640_000 + 3723), "20261207T114203");
    }

    fn rgb_frame(w: u32, h: u32) -> RawFrame {
        RawFrame {
            format: PixelFormat::Rgb,
            width: w,
            height: h,
            planes: vec![(0..w * h * 3).map(|i| (i % 251) as u8).collect()],
            strides: vec![(w * 3) as usize],
            colorimetry: Colorimetry::default(),
        }
    }

    fn cfg(name: &str, clips: bool) -> EvidenceConfig {
        let dir = std::env::temp_dir().join(format!("vss-evidence-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        EvidenceConfig {
            dir,
            stream_id: "cam/1".into(),
            max_bytes: 1 << 30,
            clip_pre: if clips { 1.0 } else { 0.0 },
            clip_post: if clips { 1.0 } else { 0.0 },
            ring_bytes: 4 << 20,
        }
    }

    #[test]
    fn rule_1_snapshots_are_jpegs_under_the_dir() {
        let c = cfg("snap", false);
        let ev = Evidence::new(c.clone()).unwrap();
        ev.start_run();
        let rec = crate::record::CaptionRecord {
            stream_id: "cam/1".into(),
            chunk_index: 4,
            ..Default::default()
        };
        let alert = crate::summary::checker::alert_of(&rec, vec!["fire".into()]);
        let p = ev.snapshot(&alert, &rgb_frame(2000, 100)).unwrap();
        assert!(
            p.starts_with(&*c.dir.to_string_lossy()) && p.ends_with("-alert-4.jpg"),
            "{p}"
        );
        assert!(p.contains("cam_1-"), "{p}");
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
        assert!(!ev.clips());
        assert!(!ev.wants_frame(0.0));
        // Runs in the same second get distinct names.
        let mut names = vec![ev.run.lock().clone()];
        for _ in 0..3 {
            ev.start_run();
            names.push(ev.run.lock().clone());
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let _ = std::fs::remove_dir_all(&c.dir);
    }

    #[test]
    fn rule_2_the_ring_is_bounded_and_sampled() {
        if let Some(e) = clip::unavailable() {
            eprintln!("SKIP: {e}");
            return;
        }
        let c = cfg("ring", true);
        let ev = Evidence::new(c.clone()).unwrap();
        ev.start_run();
        let frame = rgb_frame(1280, 720);
        let mut kept = 0;
        for i in 0..200 {
            let t = i as f64 / 30.0;
            if ev.wants_frame(t) {
                ev.push_thumbnail(t, thumbnail(&frame).unwrap());
                kept += 1;
            }
            assert!(ev.ring_usage().0 <= c.ring_bytes as usize);
        }
        // 200 frames at 30 fps = 6.7 s at 5 a second.
        assert!((33..=35).contains(&kept), "{kept}");
        let _ = std::fs::remove_dir_all(&c.dir);
    }

    #[test]
    fn a_missing_dir_is_created_and_an_unwritable_one_is_named() {
        let mut c = cfg("mk", false);
        c.dir = c.dir.join("a/b");
        Evidence::new(c.clone()).unwrap();
        assert!(c.dir.is_dir());
        let mut bad = c.clone();
        bad.dir = "/proc/vss-cannot-be-here".into();
        let e = Evidence::new(bad).err().unwrap();
        assert!(
            e.starts_with("evidence-dir '/proc/vss-cannot-be-here'"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(cfg("mk", false).dir);
    }
}
