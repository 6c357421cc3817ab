// SPDX-License-Identifier: MPL-2.0
//! Grouping chunk results into summary windows (`summary-duration`).
//!
//! * Window `w` (its `summary-index`, 0-based) holds the chunks whose `start`
//!   lies in `[w·D, (w+1)·D)` of stream time, `D` = `summary-duration`. The
//!   origin is stream time 0, as the records' `start`: a stream whose first
//!   chunk starts at 100 s with `D` = 60 begins with window 1.
//! * A chunk belongs to exactly one window, the one its start lies in; a
//!   chunk that crosses a window boundary belongs only to the window it
//!   starts in. When `D` is not a multiple of the chunk stride, windows
//!   therefore hold different numbers of chunks (10 s chunks, `D` = 25:
//!   window 0 holds the chunks starting at 0, 10, 20; window 1 those at 30,
//!   40; window 2 those at 50, 60, 70 …).
//! * A start within 1 µs below a boundary counts as on it (times come from
//!   nanosecond timestamps through `f64`).
//! * Chunks arrive in chunk order (as the element emits them). A chunk whose
//!   window index is greater than the open window's closes it: the closed
//!   window is returned by [`Windows::push`]. [`Windows::finish`] (EOS) closes
//!   the last one. A window that holds no chunk at all (a gap in the
//!   timestamps, a stream that starts late) produces nothing: no record, no
//!   LLM call. A chunk whose start lies in an *earlier* window than the open
//!   one (time went backwards without a [`Windows::reset`]) joins the open
//!   window: closed windows are never reopened, so nothing is emitted twice
//!   and nothing is lost.
//! * Skipped chunk indices (a time range without frames makes no chunk) are
//!   not missing: there was no video. Chunks that ended as error records
//!   (model failure, live overflow drop) are in the window and listed by
//!   [`Window::missing_chunks`]; they are never skipped silently.
//! * A window's `start` is `w·D`; its `end` is `(w+1)·D` clipped to the end
//!   of its latest chunk, so the last window of a stream ends at the
//!   stream's end.
//! * `summary-index` is unique for the element's life, like `chunk-index`:
//!   after a [`Windows::reset`] (flush/seek), the first new window takes
//!   its time index unless that was already used, else the index after the
//!   highest one used, and the segment's later windows follow it at the
//!   same distance (hardening round 3: a backward seek repeated indices).
//!   Without a seek back, `summary-index` is the time index `w` above.
//! * `D` = `None` (`summary-duration=-1`): no windows at all, `push` and
//!   `finish` return nothing; the final summary is made from all chunks
//!   ([`Window::whole`]).

/// One chunk's outcome, as the element emitted it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkResult {
    pub chunk_index: u64,
    /// Stream time of the chunk start, seconds.
    pub start: f64,
    /// Stream time of the chunk end, seconds.
    pub end: f64,
    /// `None`: the chunk ended as an error record.
    pub caption: Option<String>,
    /// The start as written for the LLM: seconds for files (`12.34`),
    /// RFC 3339 for live.
    pub start_label: String,
    pub end_label: String,
    /// An `unchanged` chunk: the chunk whose caption still holds. It
    /// continues that caption's line instead of repeating its text
    /// ([`Window::lines`]).
    pub same_as: Option<u64>,
}

impl ChunkResult {
    /// `<start> <end> caption` (the caption trimmed), the line that enters
    /// the LLM; `None` for an error record.
    pub fn line(&self) -> Option<String> {
        self.caption
            .as_ref()
            .map(|c| format!("<{}> <{}> {}", self.start_label, self.end_label, c.trim()))
    }
}

/// A closed summary window.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// `summary-index`.
    pub index: u64,
    /// Stream time, seconds: `index·D`.
    pub start: f64,
    /// Stream time, seconds: `(index+1)·D` clipped to the latest chunk end.
    pub end: f64,
    /// In arrival (chunk) order; never empty for windows from [`Windows`].
    pub chunks: Vec<ChunkResult>,
}

impl Window {
    /// The whole stream as one window (no `summary-duration`): index 0, from
    /// the first chunk's start to the latest chunk end.
    pub fn whole(chunks: Vec<ChunkResult>) -> Window {
        let start = chunks.first().map_or(0.0, |c| c.start);
        let end = chunks.iter().map(|c| c.end).fold(start, f64::max);
        Window {
            index: 0,
            start,
            end,
            chunks,
        }
    }

    /// The chunks whose captions go into the summary (`chunk-indices`).
    pub fn chunk_indices(&self) -> Vec<u64> {
        self.chunks
            .iter()
            .filter(|c| c.caption.is_some())
            .map(|c| c.chunk_index)
            .collect()
    }

    /// The chunks of the window that ended as error records
    /// (`missing-chunks`).
    pub fn missing_chunks(&self) -> Vec<u64> {
        self.chunks
            .iter()
            .filter(|c| c.caption.is_none())
            .map(|c| c.chunk_index)
            .collect()
    }

    /// The caption lines, `<start> <end> caption`, in chunk order. An
    /// `unchanged` chunk extends the line of the caption it points to (its
    /// end label becomes the chunk's end), so no text is sent twice; when
    /// that caption is not in the window, it is the line
    /// `<start> <end> (no visible change since chunk N)`.
    pub fn lines(&self) -> Vec<String> {
        // (start label, end label, text, chunk the line stands for)
        let mut out: Vec<(String, String, String, u64)> = Vec::new();
        for c in &self.chunks {
            let Some(text) = &c.caption else { continue };
            match c.same_as {
                Some(r) => match out.last_mut() {
                    Some(l) if l.3 == r => l.1 = c.end_label.clone(),
                    _ => out.push((
                        c.start_label.clone(),
                        c.end_label.clone(),
                        format!("(no visible change since chunk {r})"),
                        r,
                    )),
                },
                None => out.push((
                    c.start_label.clone(),
                    c.end_label.clone(),
                    text.trim().to_string(),
                    c.chunk_index,
                )),
            }
        }
        out.into_iter()
            .map(|(a, b, t, _)| format!("<{a}> <{b}> {t}"))
            .collect()
    }

    /// The time labels of the span the captions cover: the first chunk's
    /// start label and the last chunk's end label (empty when no chunks).
    pub fn labels(&self) -> (String, String) {
        (
            self.chunks
                .first()
                .map(|c| c.start_label.clone())
                .unwrap_or_default(),
            self.chunks
                .last()
                .map(|c| c.end_label.clone())
                .unwrap_or_default(),
        )
    }
}

/// Shortest `summary-duration`: the shortest chunk stride
/// ([`crate::chunker::MIN_STRIDE_NS`], 0.1 s). A window shorter than one
/// chunk's stride summarizes nothing new, and values near 0 make window
/// indices overflow (hardening round 3, F8: `1e-300` put every chunk into
/// window 18446744073709551615).
pub const MIN_SUMMARY_DURATION: f64 = crate::chunker::MIN_STRIDE_NS as f64 / 1e9;

/// `summary-duration` as set on the element: `-1` → `None` (only the final
/// summary), a finite value of at least [`MIN_SUMMARY_DURATION`] → `Some`,
/// anything else is an error naming the property.
pub fn parse_summary_duration(v: f64) -> Result<Option<f64>, SettingsError> {
    if v == -1.0 {
        Ok(None)
    } else if v.is_finite() && v > 0.0 && v < MIN_SUMMARY_DURATION {
        Err(SettingsError(format!(
            "summary-duration must be at least {MIN_SUMMARY_DURATION} seconds (the shortest chunk stride), or -1 for only a final summary (got {v})"
        )))
    } else if v.is_finite() && v > 0.0 {
        Ok(Some(v))
    } else {
        Err(SettingsError(format!(
            "summary-duration must be greater than 0 seconds, or -1 for only a final summary (got {v})"
        )))
    }
}

use crate::config::SettingsError;

/// Tolerance for a start just below a window boundary.
const BOUNDARY_EPSILON: f64 = 1e-6;

/// Groups chunk results into windows (see the module docs).
#[derive(Clone, Debug)]
pub struct Windows {
    duration: Option<f64>,
    open: Option<Window>,
    /// The open window's time index (its `index` may be shifted).
    open_slot: u64,
    /// Added to time indices in this segment.
    offset: u64,
    /// The highest `summary-index` given out.
    last_index: Option<u64>,
    /// A reset happened: the next window sets `offset`.
    rebase: bool,
}

impl Windows {
    /// `duration`: `Some(D)` with `D > 0` finite, or `None` for no windows.
    pub fn new(duration: Option<f64>) -> Result<Windows, SettingsError> {
        if let Some(d) = duration {
            if !(d.is_finite() && d >= MIN_SUMMARY_DURATION) {
                return Err(SettingsError(format!(
                    "summary-duration must be at least {MIN_SUMMARY_DURATION} seconds (got {d})"
                )));
            }
        }
        Ok(Windows {
            duration,
            open: None,
            open_slot: 0,
            offset: 0,
            last_index: None,
            rebase: false,
        })
    }

    pub fn duration(&self) -> Option<f64> {
        self.duration
    }

    /// The window a chunk starting at `start` belongs to (`None` without
    /// windows). Negative or non-finite starts count as 0.
    pub fn window_index(&self, start: f64) -> Option<u64> {
        let d = self.duration?;
        let s = if start.is_finite() && start > 0.0 {
            start
        } else {
            0.0
        };
        // `as` saturates for huge values.
        Some(((s + BOUNDARY_EPSILON) / d).floor() as u64)
    }

    /// The window being filled, if any.
    pub fn open_window(&self) -> Option<&Window> {
        self.open.as_ref()
    }

    /// Adds one chunk (in chunk order); returns the windows it closes (at
    /// most one).
    pub fn push(&mut self, chunk: ChunkResult) -> Vec<Window> {
        let (Some(d), Some(w)) = (self.duration, self.window_index(chunk.start)) else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        let slot = self.open_slot;
        match &mut self.open {
            Some(open) if w <= slot => {
                // Same window, or time went backwards: join the open one.
                let bound = (slot as f64 + 1.0) * d;
                open.end = open.end.max(chunk.end.min(bound));
                open.chunks.push(chunk);
                return closed;
            }
            _ => {}
        }
        closed.extend(self.open.take());
        if std::mem::take(&mut self.rebase) {
            self.offset = self
                .last_index
                .map_or(0, |l| l.saturating_add(1).saturating_sub(w));
        }
        let index = w.saturating_add(self.offset);
        self.last_index = Some(index);
        self.open_slot = w;
        let start = w as f64 * d;
        let end = chunk.end.min(start + d).max(start);
        self.open = Some(Window {
            index,
            start,
            end,
            chunks: vec![chunk],
        });
        closed
    }

    /// EOS: closes the open window.
    pub fn finish(&mut self) -> Vec<Window> {
        self.open.take().into_iter().collect()
    }

    /// Flush/seek: discards the open window (its chunks are discarded with
    /// the captions).
    pub fn reset(&mut self) {
        self.open = None;
        self.rebase = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(idx: u64, start: f64, end: f64, ok: bool) -> ChunkResult {
        ChunkResult {
            chunk_index: idx,
            start,
            end,
            caption: ok.then(|| format!("caption #{idx}")),
            start_label: format!("{start:.2}"),
            end_label: format!("{end:.2}"),
            same_as: None,
        }
    }

    /// Unchanged chunks continue the caption they point to: its line is
    /// extended, never repeated; without it in the window, a short line.
    #[test]
    fn unchanged_chunks_extend_their_caption_line() {
        let gated = |idx: u64, start: f64, same_as: u64| ChunkResult {
            caption: Some(String::new()),
            same_as: Some(same_as),
            ..chunk(idx, start, start + 10.0, true)
        };
        let w = Window::whole(vec![
            chunk(0, 0.0, 10.0, true),
            gated(1, 10.0, 0),
            gated(2, 20.0, 0),
            chunk(3, 30.0, 40.0, true),
            chunk(4, 40.0, 50.0, false),
        ]);
        assert_eq!(
            w.lines(),
            vec!["<0.00> <30.00> caption #0", "<30.00> <40.00> caption #3"]
        );
        assert_eq!(w.chunk_indices(), vec![0, 1, 2, 3]);
        assert_eq!(w.missing_chunks(), vec![4]);
        let w = Window::whole(vec![gated(7, 70.0, 5), gated(8, 80.0, 5)]);
        assert_eq!(
            w.lines(),
            vec!["<70.00> <90.00> (no visible change since chunk 5)"]
        );
    }

    /// Chunks of `len` seconds at `stride`, `n` of them, all good.
    fn run(w: &mut Windows, n: u64, stride: f64, len: f64) -> Vec<Window> {
        let mut out = Vec::new();
        for k in 0..n {
            let s = k as f64 * stride;
            out.extend(w.push(chunk(k, s, s + len, true)));
        }
        out.extend(w.finish());
        out
    }

    /// Round 3: a backward flushing seek must not repeat `summary-index`
    /// (it is unique like `chunk-index`); a forward one keeps time indices.
    #[test]
    fn summary_index_stays_unique_across_seeks() {
        let mut w = Windows::new(Some(10.0)).unwrap();
        let mut got = Vec::new();
        let feed = |w: &mut Windows, starts: &[f64], idx0: u64| {
            let mut out = Vec::new();
            for (i, s) in starts.iter().enumerate() {
                out.extend(w.push(chunk(idx0 + i as u64, *s, *s + 10.0, true)));
            }
            out.extend(w.finish());
            out.into_iter()
                .map(|x| (x.index, x.start))
                .collect::<Vec<_>>()
        };
        got.extend(feed(&mut w, &[0.0, 10.0, 20.0], 0));
        assert_eq!(got, vec![(0, 0.0), (1, 10.0), (2, 20.0)]);
        // Back to 10 s: new indices, the same times.
        w.reset();
        let back = feed(&mut w, &[10.0, 20.0, 30.0], 3);
        assert_eq!(back, vec![(3, 10.0), (4, 20.0), (5, 30.0)]);
        // Forward, past what was used: time indices again.
        w.reset();
        let fwd = feed(&mut w, &[100.0, 110.0], 6);
        assert_eq!(fwd, vec![(10, 100.0), (11, 110.0)]);
    }

    #[test]
    fn duration_values() {
        assert_eq!(parse_summary_duration(-1.0), Ok(None));
        assert_eq!(parse_summary_duration(60.0), Ok(Some(60.0)));
        for bad in [0.0, -0.5, -2.0, f64::NAN, f64::INFINITY] {
            let e = parse_summary_duration(bad).unwrap_err();
            assert!(e.contains("summary-duration"), "{e}");
        }
        // Round 3, F8: values that overflow window indices are refused.
        for tiny in [1e-19, 1e-300, f64::MIN_POSITIVE, 0.099] {
            let e = parse_summary_duration(tiny).unwrap_err();
            assert!(e.contains("at least 0.1 seconds"), "{e}");
            assert!(Windows::new(Some(tiny)).is_err());
        }
        assert_eq!(parse_summary_duration(0.1), Ok(Some(0.1)));
        assert_eq!(parse_summary_duration(1e300), Ok(Some(1e300)));
        assert!(Windows::new(Some(0.0)).is_err());
        assert!(Windows::new(Some(-1.0)).is_err()); // -1 is the property's sentinel, not a D
        assert!(Windows::new(None).is_ok());
    }

    #[test]
    fn multiple_of_chunk_length() {
        let mut w = Windows::new(Some(60.0)).unwrap();
        // 35 chunks of 10 s: windows of 6, 6, 6, 6, 6 and 5 chunks.
        let mut closed_early = Vec::new();
        for k in 0..35u64 {
            let s = k as f64 * 10.0;
            let c = w.push(chunk(k, s, s + 10.0, true));
            if k % 6 == 0 && k > 0 {
                // Chunk 6k closes window k-1, and only it.
                assert_eq!(c.len(), 1);
                assert_eq!(c[0].index, k / 6 - 1);
            } else {
                assert!(c.is_empty(), "chunk {k}");
            }
            closed_early.extend(c);
        }
        assert_eq!(closed_early.len(), 5);
        let last = w.finish();
        assert!(w.finish().is_empty());
        let all: Vec<Window> = closed_early.into_iter().chain(last).collect();
        assert_eq!(all.len(), 6);
        for (i, win) in all.iter().enumerate() {
            assert_eq!(win.index, i as u64);
            assert_eq!(win.start, i as f64 * 60.0);
            let n = if i < 5 { 6 } else { 5 };
            assert_eq!(win.chunk_indices().len(), n);
            assert_eq!(win.chunk_indices()[0], i as u64 * 6);
            assert!(win.missing_chunks().is_empty());
        }
        assert_eq!(all[0].end, 60.0);
        // Last window clipped to the stream's end (350 s), not 360 s.
        assert_eq!(all[5].end, 350.0);
    }

    #[test]
    fn not_a_multiple_of_the_stride() {
        let mut w = Windows::new(Some(25.0)).unwrap();
        let all = run(&mut w, 10, 10.0, 10.0);
        let got: Vec<Vec<u64>> = all.iter().map(Window::chunk_indices).collect();
        // Starts 0,10,20 | 30,40 | 50,60,70 | 80,90.
        assert_eq!(
            got,
            vec![vec![0, 1, 2], vec![3, 4], vec![5, 6, 7], vec![8, 9]]
        );
        // Chunk 2 [20,30) crosses 25 s: only in window 0, which ends at 25.
        assert_eq!((all[0].start, all[0].end), (0.0, 25.0));
        assert_eq!((all[1].start, all[1].end), (25.0, 50.0));
        assert_eq!((all[3].start, all[3].end), (75.0, 100.0));
    }

    #[test]
    fn overlapping_chunks_belong_to_their_start() {
        // 10 s chunks every 5 s (overlap 5), D = 20: 4 chunks per window.
        let mut w = Windows::new(Some(20.0)).unwrap();
        let all = run(&mut w, 9, 5.0, 10.0);
        let got: Vec<Vec<u64>> = all.iter().map(Window::chunk_indices).collect();
        assert_eq!(got, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8]]);
        assert_eq!(all[0].end, 20.0);
        // Last chunk [40,50): window 2 = [40, 50).
        assert_eq!((all[2].start, all[2].end), (40.0, 50.0));
    }

    #[test]
    fn gaps_produce_no_empty_windows() {
        let mut w = Windows::new(Some(60.0)).unwrap();
        let mut all = Vec::new();
        // Chunks 0..=2, then a gap (indices 3..=20 skipped: no frames) up to
        // 210 s, then chunks 21, 22.
        for (k, s) in [(0, 0.0), (1, 10.0), (2, 20.0), (21, 210.0), (22, 220.0)] {
            all.extend(w.push(chunk(k, s, s + 10.0, true)));
        }
        all.extend(w.finish());
        let idx: Vec<u64> = all.iter().map(|w| w.index).collect();
        assert_eq!(idx, vec![0, 3]); // windows 1 and 2 held no chunk: nothing
        assert_eq!(all[0].chunk_indices(), vec![0, 1, 2]);
        assert_eq!(all[0].end, 30.0);
        assert_eq!(all[1].chunk_indices(), vec![21, 22]);
        assert_eq!((all[1].start, all[1].end), (180.0, 230.0));
        // Skipped indices are not missing chunks.
        assert!(all.iter().all(|w| w.missing_chunks().is_empty()));
    }

    #[test]
    fn late_start_and_boundary_rounding() {
        let w = Windows::new(Some(60.0)).unwrap();
        assert_eq!(w.window_index(100.0), Some(1));
        assert_eq!(w.window_index(59.999_999_9), Some(1)); // within 1 µs
        assert_eq!(w.window_index(59.99), Some(0));
        assert_eq!(w.window_index(-3.0), Some(0));
        assert_eq!(w.window_index(f64::NAN), Some(0));
        assert_eq!(Windows::new(None).unwrap().window_index(5.0), None);
        // 0.1 s chunks: 600 of them fill window 0 exactly despite f64 sums.
        let mut w = Windows::new(Some(60.0)).unwrap();
        let mut t = 0.0f64;
        let mut closed = Vec::new();
        for k in 0..601u64 {
            closed.extend(w.push(chunk(k, t, t + 0.1, true)));
            t += 0.1;
        }
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].chunks.len(), 600);
    }

    #[test]
    fn errors_are_missing_chunks() {
        let mut w = Windows::new(Some(30.0)).unwrap();
        let mut all = Vec::new();
        for (k, ok) in [
            (0, true),
            (1, false),
            (2, true),
            (3, false),
            (4, false),
            (5, false),
        ] {
            let s = k as f64 * 10.0;
            all.extend(w.push(chunk(k, s, s + 10.0, ok)));
        }
        all.extend(w.finish());
        assert_eq!(all[0].chunk_indices(), vec![0, 2]);
        assert_eq!(all[0].missing_chunks(), vec![1]);
        assert_eq!(
            all[0].lines(),
            vec!["<0.00> <10.00> caption #0", "<20.00> <30.00> caption #2"]
        );
        // A window of only errors is still a window.
        assert!(all[1].chunk_indices().is_empty());
        assert_eq!(all[1].missing_chunks(), vec![3, 4, 5]);
        assert!(all[1].lines().is_empty());
    }

    #[test]
    fn no_windows_and_reset() {
        let mut w = Windows::new(None).unwrap();
        assert!(run(&mut w, 20, 10.0, 10.0).is_empty());

        let mut w = Windows::new(Some(60.0)).unwrap();
        w.push(chunk(0, 0.0, 10.0, true));
        w.reset();
        assert!(w.open_window().is_none() && w.finish().is_empty());
        // Time going backwards without a reset joins the open window.
        w.push(chunk(1, 70.0, 80.0, true));
        assert!(w.push(chunk(2, 10.0, 20.0, true)).is_empty());
        let last = w.finish();
        assert_eq!(last[0].index, 1);
        assert_eq!(last[0].chunk_indices(), vec![1, 2]);
        assert_eq!(last[0].end, 80.0);
    }

    #[test]
    fn whole_stream_window() {
        let chunks: Vec<ChunkResult> = (0..5)
            .map(|k| chunk(k, 5.0 + k as f64 * 10.0, 15.0 + k as f64 * 10.0, k != 3))
            .collect();
        let w = Window::whole(chunks);
        assert_eq!((w.index, w.start, w.end), (0, 5.0, 55.0));
        assert_eq!(w.missing_chunks(), vec![3]);
        assert_eq!(w.labels(), ("5.00".to_string(), "55.00".to_string()));
        let empty = Window::whole(Vec::new());
        assert_eq!((empty.start, empty.end), (0.0, 0.0));
        assert_eq!(empty.labels(), (String::new(), String::new()));
    }
}
