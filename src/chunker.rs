// SPDX-License-Identifier: MPL-2.0
//! Cutting a stream of timestamped frames into chunks and picking the frames
//! to sample, without holding any frame that is not sampled.
//!
//! ## Rules
//! * Times are nanoseconds of stream time. `t0` is the first frame's time.
//!   Chunk `k` covers `[t0 + k·S, t0 + k·S + D)` with `S = D − O` (duration `D`,
//!   overlap `O < D`). A frame belongs to every chunk whose range holds its
//!   timestamp, so with overlap one frame can serve several chunks (it is
//!   copied once and shared).
//! * Each chunk has `N` target times `T_i = start + ⌊i·D/N⌋`, `i = 0..N`
//!   (VSS's rule: the first target is the chunk start, the last lies before
//!   the end).
//! * The frame sampled for `T_i` is the **first frame of the chunk that is
//!   still on screen at `T_i` or starts after it**: the first frame with
//!   `pts + duration > T_i` (duration 0 when unknown). Tie-break: a frame that
//!   ends exactly at `T_i` is not taken, the one that starts there is. The
//!   decision is made when the frame arrives, so no frame is ever held "in
//!   case". A frame that covers several targets is sent once, so a chunk of
//!   a sparse stream can carry fewer than `N` frames.
//! * When the stream's end is known in advance (files: the duration query),
//!   the targets of a chunk that reaches past it are spread over the part
//!   that exists, `[start, stream end)`, as VSS does, so the last chunk of a
//!   file also gets `N` frames. Otherwise (live) targets keep the regular
//!   spacing, and a final partial chunk has the frames its length reached.
//! * A chunk is complete when a frame at or after its end arrives. At EOS the
//!   open chunks are closed as they are: the final partial chunk is captioned
//!   with the frames it got, and its `end` is the end of its last frame.
//! * A time range that receives no frame (a gap in the timestamps) produces no
//!   chunk; its index is skipped, so gaps stay visible in `chunk-index`.
//! * Frames whose time goes backwards are passed through but not sampled.
//! * `chunk-index` is unique and increasing within a stream: after a flush
//!   (seek) or a new segment the numbering goes on from the last index used
//!   plus one, so one output never holds two records with the same index.
//! * Limits (checked by [`ChunkParams::new`], whatever the settings came
//!   from): the stride `D − O` is at least [`MIN_STRIDE_NS`] (0.1 s) and at
//!   least `D / MAX_OPEN_CHUNKS` (a frame lies in at most 16 chunks), and
//!   `N` is 1..=[`MAX_FRAMES_PER_CHUNK`].

use crate::config::SettingsError;
use std::collections::VecDeque;
use std::sync::Arc;

/// The shortest stride between chunk starts (0.1 s): shorter ones make
/// requests faster than any model answers, and a 1 ns stride opened a billion
/// chunks per frame.
pub const MIN_STRIDE_NS: u64 = 100_000_000;
/// The most chunks one frame can belong to (so `chunk-overlap` is at most
/// 15/16 of `chunk-duration`).
pub const MAX_OPEN_CHUNKS: u64 = 16;
/// The most frames sampled per chunk, from any source (property, VSS
/// variable, custom model manifest).
pub const MAX_FRAMES_PER_CHUNK: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    pub duration_ns: u64,
    pub overlap_ns: u64,
    pub frames: u32,
}

/// `1.5 s`, `250 ms`, `1 ns`: small strides stay readable in errors.
fn short_duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.3} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.3} ms", ns as f64 / 1e6),
        _ => format!("{:.3} s", ns as f64 / 1e9),
    }
}

impl ChunkParams {
    /// Checks the chunking properties; the error names the property and
    /// what to do (the element reports it as a settings error).
    pub fn new(
        duration_ns: u64,
        overlap_ns: u64,
        frames: u32,
    ) -> Result<ChunkParams, SettingsError> {
        if duration_ns == 0 {
            return Err(SettingsError(
                "chunk-duration must be greater than 0".into(),
            ));
        }
        if overlap_ns >= duration_ns {
            return Err(SettingsError(format!(
                "chunk-overlap ({:.3} s) must be smaller than chunk-duration ({:.3} s)",
                overlap_ns as f64 / 1e9,
                duration_ns as f64 / 1e9
            )));
        }
        let stride = duration_ns - overlap_ns;
        if stride < MIN_STRIDE_NS || stride.saturating_mul(MAX_OPEN_CHUNKS) < duration_ns {
            return Err(SettingsError(format!(
                "chunk-duration ({} s) minus chunk-overlap ({} s) leaves a stride of {} between chunk starts; it must be at least {} s and at least 1/{MAX_OPEN_CHUNKS} of chunk-duration ({} s): lower chunk-overlap",
                duration_ns as f64 / 1e9,
                overlap_ns as f64 / 1e9,
                short_duration(stride),
                MIN_STRIDE_NS as f64 / 1e9,
                duration_ns.div_ceil(MAX_OPEN_CHUNKS) as f64 / 1e9,
            )));
        }
        if frames == 0 || frames > MAX_FRAMES_PER_CHUNK {
            return Err(SettingsError(format!(
                "frames per chunk must be 1..={MAX_FRAMES_PER_CHUNK}, not {frames}"
            )));
        }
        Ok(ChunkParams {
            duration_ns,
            overlap_ns,
            frames,
        })
    }

    fn stride(&self) -> u64 {
        self.duration_ns - self.overlap_ns
    }

    /// Target times of a chunk starting at `start` (in a stream that ends at
    /// `stream_end`, if known).
    pub fn targets(&self, start: u64, stream_end: Option<u64>) -> Vec<u64> {
        let span = match stream_end {
            Some(e) if e > start => (e - start).min(self.duration_ns),
            _ => self.duration_ns,
        };
        (0..self.frames as u64)
            .map(|i| start + ((i as u128 * span as u128) / self.frames as u128) as u64)
            .collect()
    }
}

/// One sampled frame of a chunk.
#[derive(Debug)]
pub struct Sampled<F> {
    pub pts: u64,
    pub frame: Arc<F>,
}

impl<F> Clone for Sampled<F> {
    fn clone(&self) -> Self {
        Sampled {
            pts: self.pts,
            frame: self.frame.clone(),
        }
    }
}

/// A chunk whose frames are all known.
#[derive(Debug)]
pub struct Chunk<F> {
    pub index: u64,
    pub start: u64,
    /// Nominal end, or the end of the last frame for a partial chunk at EOS.
    pub end: u64,
    pub partial: bool,
    pub frames: Vec<Sampled<F>>,
}

#[derive(Debug)]
struct Open<F> {
    index: u64,
    start: u64,
    end: u64,
    targets: Vec<u64>,
    next_target: usize,
    frames: Vec<Sampled<F>>,
    last_end: u64,
}

#[derive(Debug)]
pub struct Chunker<F> {
    params: ChunkParams,
    t0: Option<u64>,
    next_index: u64,
    /// Added to every index: the indices used before the last reset.
    index_base: u64,
    last_pts: Option<u64>,
    stream_end: Option<u64>,
    open: VecDeque<Open<F>>,
}

impl<F> Chunker<F> {
    pub fn new(params: ChunkParams) -> Self {
        Chunker {
            params,
            t0: None,
            next_index: 0,
            index_base: 0,
            last_pts: None,
            stream_end: None,
            open: VecDeque::new(),
        }
    }

    /// Where the stream ends (stream time), when known in advance. Applies
    /// to chunks opened from now on.
    pub fn set_stream_end(&mut self, end: Option<u64>) {
        self.stream_end = end;
    }

    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Time of the first frame, once seen.
    pub fn t0(&self) -> Option<u64> {
        self.t0
    }

    /// Feeds one frame. `copy` is called at most once, only when the frame is
    /// sampled by at least one chunk; returning `None` (the frame could not be
    /// read) leaves those targets to later frames. Returns the chunks that this
    /// frame completed, in index order.
    pub fn push(
        &mut self,
        pts: u64,
        duration: Option<u64>,
        copy: impl FnOnce() -> Option<F>,
    ) -> Vec<Chunk<F>> {
        if let Some(last) = self.last_pts {
            if pts < last {
                return Vec::new();
            }
        }
        self.last_pts = Some(pts);
        let t0 = *self.t0.get_or_insert(pts);
        let p = self.params;

        // Close the chunks this frame lies beyond.
        let mut done = Vec::new();
        while self.open.front().is_some_and(|c| pts >= c.end) {
            let c = self.open.pop_front().expect("front exists");
            done.push(Chunk {
                index: self.index_base + c.index,
                start: c.start,
                end: c.end,
                partial: false,
                frames: c.frames,
            });
        }

        // Open the chunks that contain this frame and are not open yet.
        let rel = pts - t0;
        let k_max = rel / p.stride();
        let k_min = if rel >= p.duration_ns {
            (rel - p.duration_ns) / p.stride() + 1
        } else {
            0
        };
        for k in k_min.max(self.next_index)..=k_max {
            let start = t0 + k * p.stride();
            self.open.push_back(Open {
                index: k,
                start,
                end: start + p.duration_ns,
                targets: p.targets(start, self.stream_end),
                next_target: 0,
                frames: Vec::new(),
                last_end: start,
            });
        }
        self.next_index = self.next_index.max(k_max + 1);

        // Which open chunks sample this frame?
        let frame_end = pts + duration.unwrap_or(0);
        let mut wanted = Vec::new();
        for (i, c) in self.open.iter_mut().enumerate() {
            debug_assert!(pts >= c.start && pts < c.end);
            c.last_end = frame_end.max(pts).min(c.end).max(c.last_end);
            let first = c.next_target;
            while c.next_target < c.targets.len()
                && frame_end.max(pts + 1) > c.targets[c.next_target]
            {
                c.next_target += 1;
            }
            if c.next_target > first {
                wanted.push((i, first));
            }
        }
        if !wanted.is_empty() {
            match copy() {
                Some(f) => {
                    let f = Arc::new(f);
                    for (i, _) in &wanted {
                        self.open[*i].frames.push(Sampled {
                            pts,
                            frame: f.clone(),
                        });
                    }
                }
                None => {
                    // Unreadable frame: give its targets to the next frames.
                    for (i, first) in wanted {
                        self.open[i].next_target = first;
                    }
                }
            }
        }
        done
    }

    /// EOS (or a new segment): closes every open chunk as it is.
    pub fn finish(&mut self) -> Vec<Chunk<F>> {
        let out = self
            .open
            .drain(..)
            .filter(|c| !c.frames.is_empty())
            .map(|c| Chunk {
                index: self.index_base + c.index,
                start: c.start,
                end: c.last_end.max(c.start),
                partial: c.last_end < c.end,
                frames: c.frames,
            })
            .collect();
        self.reset();
        out
    }

    /// Forgets everything (flush, new segment) except which indices were
    /// used: numbering goes on after them.
    pub fn reset(&mut self) {
        self.t0 = None;
        self.index_base += self.next_index;
        self.next_index = 0;
        self.last_pts = None;
        self.stream_end = None;
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    /// Feeds frames at `fps` from `start` for `secs` seconds; returns all chunks
    /// (completed and final) and the list of copied frame times.
    fn run(
        params: ChunkParams,
        times: impl IntoIterator<Item = u64>,
        dur: Option<u64>,
    ) -> (Vec<Chunk<u64>>, Vec<u64>) {
        let mut c = Chunker::new(params);
        let mut out = Vec::new();
        let mut copies = Vec::new();
        for t in times {
            out.extend(c.push(t, dur, || {
                copies.push(t);
                Some(t)
            }));
        }
        out.extend(c.finish());
        (out, copies)
    }

    fn frame_times(c: &Chunk<u64>) -> Vec<u64> {
        c.frames.iter().map(|f| *f.frame).collect()
    }

    fn fps_times(fps: u64, secs: u64, offset: u64) -> Vec<u64> {
        (0..fps * secs).map(|i| offset + i * S / fps).collect()
    }

    #[test]
    fn params_validation() {
        assert!(ChunkParams::new(0, 0, 1).is_err());
        assert!(ChunkParams::new(S, S, 1)
            .unwrap_err()
            .contains("chunk-overlap"));
        assert!(ChunkParams::new(S, 0, 0).is_err());
        // Strides that cannot make sense are refused (a 1 ns stride opened a
        // billion chunks per frame and aborted the process).
        let e = ChunkParams::new(S, S - 1, 8).unwrap_err();
        assert!(
            e.contains("stride of 1 ns") && e.contains("chunk-overlap"),
            "{e}"
        );
        assert!(ChunkParams::new(S, 999_999 * 1_000, 8).is_err());
        assert!(ChunkParams::new(S / 20, 0, 1).is_err());
        assert!(ChunkParams::new(S / 10, 0, 1).is_ok());
        // At most 16 open chunks: 16 s with 15 s overlap is fine, 15.5 s is not.
        assert!(ChunkParams::new(16 * S, 15 * S, 1).is_ok());
        assert!(ChunkParams::new(16 * S, 15 * S + S / 2, 1).is_err());
        assert!(ChunkParams::new(S, 0, MAX_FRAMES_PER_CHUNK).is_ok());
        assert!(ChunkParams::new(S, 0, 4_000_000_000)
            .unwrap_err()
            .contains("1..=256"));
        assert_eq!(
            ChunkParams::new(10 * S, 0, 4).unwrap().targets(5 * S, None),
            vec![5 * S, 7_500 * MS, 10 * S, 12_500 * MS]
        );
        // A known end inside the chunk spreads the targets over what exists.
        assert_eq!(
            ChunkParams::new(10 * S, 0, 4)
                .unwrap()
                .targets(5 * S, Some(7 * S)),
            vec![5 * S, 5_500 * MS, 6 * S, 6_500 * MS]
        );
        assert_eq!(
            ChunkParams::new(10 * S, 0, 2)
                .unwrap()
                .targets(0, Some(30 * S)),
            vec![0, 5 * S]
        );
    }

    #[test]
    fn exact_chunks_and_partial_last() {
        // 25 fps, 25 s, 10 s chunks, 5 frames: chunks [0,10) [10,20) [20,25)
        let p = ChunkParams::new(10 * S, 0, 5).unwrap();
        let (chunks, copies) = run(p, fps_times(25, 25, 0), Some(40 * MS));
        assert_eq!(chunks.len(), 3);
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.index, c.start, c.end, c.partial))
                .collect::<Vec<_>>(),
            vec![
                (0, 0, 10 * S, false),
                (1, 10 * S, 20 * S, false),
                (2, 20 * S, 25 * S, true)
            ]
        );
        assert_eq!(frame_times(&chunks[0]), vec![0, 2 * S, 4 * S, 6 * S, 8 * S]);
        assert_eq!(
            frame_times(&chunks[1]),
            vec![10 * S, 12 * S, 14 * S, 16 * S, 18 * S]
        );
        // The partial chunk only has the targets its frames reached.
        assert_eq!(frame_times(&chunks[2]), vec![20 * S, 22 * S, 24 * S]);
        // Only sampled frames were copied.
        assert_eq!(copies.len(), 13);
    }

    #[test]
    fn tie_break_and_off_grid_frames() {
        // 3 fps (frames at 0, 333.3 ms, 666.6 ms, ...), 1 s chunks, 2 targets (0, 500 ms).
        let p = ChunkParams::new(S, 0, 2).unwrap();
        let times: Vec<u64> = (0..6).map(|i| i * S / 3).collect();
        let (chunks, _) = run(p, times.clone(), Some(S / 3));
        // Target 500 ms: frame 333 ms is on screen until 666 ms, so it is chosen.
        assert_eq!(frame_times(&chunks[0]), vec![0, S / 3]);
        // Without durations the first frame starting after the target is chosen.
        let (chunks, _) = run(p, times, None);
        assert_eq!(frame_times(&chunks[0]), vec![0, 2 * S / 3]);
        // A frame ending exactly at the target is not taken.
        let p = ChunkParams::new(S, 0, 2).unwrap();
        let (chunks, _) = run(p, [0, 250 * MS, 500 * MS, 750 * MS], Some(250 * MS));
        assert_eq!(frame_times(&chunks[0]), vec![0, 500 * MS]);
    }

    #[test]
    fn overlap_shares_frames() {
        // 10 s chunks, 5 s overlap, 12 s of 10 fps video.
        let p = ChunkParams::new(10 * S, 5 * S, 2).unwrap();
        let (chunks, copies) = run(p, fps_times(10, 12, 0), Some(100 * MS));
        let spans: Vec<_> = chunks.iter().map(|c| (c.index, c.start, c.end)).collect();
        assert_eq!(
            spans,
            vec![(0, 0, 10 * S), (1, 5 * S, 12 * S), (2, 10 * S, 12 * S)]
        );
        assert_eq!(frame_times(&chunks[0]), vec![0, 5 * S]);
        assert_eq!(frame_times(&chunks[1]), vec![5 * S, 10 * S]);
        assert_eq!(frame_times(&chunks[2]), vec![10 * S]);
        // The frame at 5 s (chunks 0 and 1) and 10 s (chunks 1 and 2) are copied once.
        assert_eq!(copies, vec![0, 5 * S, 10 * S]);
        assert!(Arc::ptr_eq(
            &chunks[0].frames[1].frame,
            &chunks[1].frames[0].frame
        ));
    }

    #[test]
    fn first_frame_defines_t0_and_gaps_skip_chunks() {
        let p = ChunkParams::new(2 * S, 0, 1).unwrap();
        // Starts at 100 s; a gap from 103.5 s to 109 s.
        let mut times: Vec<u64> = (0..7).map(|i| 100 * S + i * S / 2).collect();
        times.extend((0..4).map(|i| 109 * S + i * S / 2));
        let (chunks, _) = run(p, times, Some(S / 2));
        let spans: Vec<_> = chunks
            .iter()
            .map(|c| (c.index, c.start / MS, c.end / MS, c.partial))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 100_000, 102_000, false),
                (1, 102_000, 104_000, false),
                // chunks 2 [104,106) and 3 [106,108) got no frame: skipped
                (4, 108_000, 110_000, false),
                (5, 110_000, 111_000, true),
            ]
        );
        // Chunk 4's target (108 s) is filled by the first frame after the gap.
        assert_eq!(frame_times(&chunks[2]), vec![109 * S]);
    }

    #[test]
    fn sparse_frames_are_sent_once() {
        // 1 fps into 4 targets per 2 s chunk: each frame covers two targets.
        let p = ChunkParams::new(2 * S, 0, 4).unwrap();
        let (chunks, copies) = run(p, fps_times(1, 4, 0), Some(S));
        assert_eq!(frame_times(&chunks[0]), vec![0, S]);
        assert_eq!(frame_times(&chunks[1]), vec![2 * S, 3 * S]);
        assert_eq!(copies.len(), 4);
    }

    #[test]
    fn backwards_and_unreadable_frames() {
        let p = ChunkParams::new(S, 0, 2).unwrap();
        let mut c = Chunker::new(p);
        assert!(c.push(0, None, || Some(0u64)).is_empty());
        // Unreadable frame at 600 ms: its target goes to the next frame.
        c.push(600 * MS, None, || None);
        c.push(500 * MS, None, || {
            panic!("backwards frame must not be sampled")
        });
        c.push(700 * MS, None, || Some(700 * MS));
        let done = c.push(1100 * MS, None, || Some(1100 * MS));
        assert_eq!(done.len(), 1);
        assert_eq!(frame_times(&done[0]), vec![0, 700 * MS]);
        let rest = c.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].index, 1);
        assert!(rest[0].partial);
        assert_eq!(c.t0(), None);
    }

    #[test]
    fn known_stream_end_gives_the_last_chunk_all_its_frames() {
        // 25 s file at 25 fps, 10 s chunks, 5 frames; the duration is known.
        let p = ChunkParams::new(10 * S, 0, 5).unwrap();
        let mut c = Chunker::new(p);
        c.set_stream_end(Some(25 * S));
        let mut out = Vec::new();
        for t in fps_times(25, 25, 0) {
            out.extend(c.push(t, Some(40 * MS), || Some(t)));
        }
        out.extend(c.finish());
        assert_eq!(out.len(), 3);
        assert_eq!(
            frame_times(&out[1]),
            vec![10 * S, 12 * S, 14 * S, 16 * S, 18 * S]
        );
        assert_eq!(
            frame_times(&out[2]),
            vec![20 * S, 21 * S, 22 * S, 23 * S, 24 * S]
        );
        assert_eq!(out[2].end, 25 * S);
    }

    #[test]
    fn single_frame_stream_and_reset() {
        let p = ChunkParams::new(10 * S, 0, 10).unwrap();
        let (chunks, _) = run(p, [7 * S], Some(40 * MS));
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].start, chunks[0].end), (7 * S, 7 * S + 40 * MS));
        assert_eq!(frame_times(&chunks[0]), vec![7 * S]);
    }

    #[test]
    fn indices_stay_unique_across_resets_and_segments() {
        let p = ChunkParams::new(S, 0, 1).unwrap();
        let mut c: Chunker<u64> = Chunker::new(p);
        let mut idx = Vec::new();
        // Segment 1: 0..3 s, then a new segment whose times restart at 0.
        for t in fps_times(2, 3, 0) {
            idx.extend(c.push(t, None, || Some(t)).iter().map(|k| k.index));
        }
        idx.extend(c.finish().iter().map(|k| k.index));
        for t in fps_times(2, 2, 0) {
            idx.extend(c.push(t, None, || Some(t)).iter().map(|k| k.index));
        }
        // A flush (seek back) restarts times again.
        c.reset();
        for t in fps_times(2, 2, 0) {
            idx.extend(c.push(t, None, || Some(t)).iter().map(|k| k.index));
        }
        idx.extend(c.finish().iter().map(|k| k.index));
        // Chunk 4 was open at the flush and discarded; its index is not reused.
        assert_eq!(idx, vec![0, 1, 2, 3, 5, 6]);
    }
}
