// SPDX-License-Identifier: MPL-2.0
//! The Qwen3-VL video prompt and its multimodal positions (plain Rust).
//!
//! Rules:
//! 1. A video of `n` frames is `ceil(n / temporal_patch_size)` temporal
//!    patches (pairs); an odd count repeats the last frame, as the
//!    processor pads.
//! 2. Each pair is stamped with the mean of its first and last frame's time
//!    (seconds), written `<{t:.1f} seconds>` with Python's rounding of the
//!    binary value (Rust's `{:.1}` rounds the same way).
//! 3. The chat template's `<|vision_start|><|video_pad|><|vision_end|>` is
//!    replaced whole by, per pair, the time tag, `<|vision_start|>`, one
//!    `<|video_pad|>` and `<|vision_end|>` (vLLM's and transformers ≤ 4.57's
//!    replacement: no nested `<|vision_start|>`, which transformers 5.24's
//!    processor would produce); each `<|video_pad|>` then becomes the pair's
//!    `H/2 · W/2` video tokens.
//! 4. Positions (3 axes): a text token takes `cur` on all three axes and
//!    `cur += 1`; a pair's video tokens take `(cur, cur + h, cur + w)` over
//!    the pair's merged grid and then `cur += max(H, W) / 2` (transformers'
//!    Qwen3-VL `get_rope_index`; with one temporal patch per block this is
//!    also the original "max + 1" rule). The rope delta is `max + 1 − L`,
//!    and decode steps take `cache_len + delta` on all three axes.
//! 5. The frame times are the chunk's real stream times (VSS passes
//!    absolute times to vLLM for the same reason): a chunk that starts at
//!    12 s says `<12.2 seconds>`, not `<0.2 seconds>`.

use crate::backend::cosmos::error::CosmosError;

/// The template's video entry that rule 3 replaces.
pub const VIDEO_ENTRY: &str = "<|vision_start|><|video_pad|><|vision_end|>";

/// Rule 1 and 2: the time of each temporal patch, seconds.
pub fn pair_times(times: &[f64], temporal_patch_size: usize) -> Vec<f64> {
    let tps = temporal_patch_size.max(1);
    let n = times.len();
    (0..n.div_ceil(tps))
        .map(|k| {
            let first = times[k * tps];
            let last = times[(k * tps + tps - 1).min(n - 1)];
            (first + last) / 2.0
        })
        .collect()
}

/// Rule 2: the tag of one pair.
pub fn time_tag(t: f64) -> String {
    format!("<{t:.1} seconds>")
}

/// Rule 3: the rendered template with its one video entry replaced by the
/// per-pair blocks (one `<|video_pad|>` each, expanded by [`expand_pads`]).
pub fn replace_video_entry(text: &str, pair_times: &[f64]) -> Result<String, CosmosError> {
    let found = text.matches(VIDEO_ENTRY).count();
    if found != 1 {
        return Err(CosmosError::Prompt(format!(
            "the chat template produced {found} '{VIDEO_ENTRY}' entries; expected 1"
        )));
    }
    let blocks: String = pair_times
        .iter()
        .map(|&t| format!("{}{VIDEO_ENTRY}", time_tag(t)))
        .collect();
    Ok(text.replacen(VIDEO_ENTRY, &blocks, 1))
}

/// Rule 3: each `<|video_pad|>` token becomes `per_pair` of them; the count
/// of pads must equal the number of pairs.
pub fn expand_pads(
    ids: &[u32],
    video_token_id: u32,
    pairs: usize,
    per_pair: usize,
) -> Result<Vec<u32>, CosmosError> {
    let seen = ids.iter().filter(|&&t| t == video_token_id).count();
    if seen != pairs {
        return Err(CosmosError::Prompt(format!(
            "the prompt has {seen} video placeholders for {pairs} frame pairs"
        )));
    }
    let mut out = Vec::with_capacity(ids.len() + pairs * per_pair);
    for &t in ids {
        if t == video_token_id {
            out.extend(std::iter::repeat_n(video_token_id, per_pair));
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// Rule 4: position ids per axis and the rope delta. `llm_hw` is the merged
/// grid (H/2, W/2) of every pair; `None` for a text-only prompt.
pub fn positions(
    ids: &[u32],
    video_token_id: u32,
    llm_hw: Option<(usize, usize)>,
) -> Result<([Vec<i64>; 3], i64), CosmosError> {
    let mut pos: [Vec<i64>; 3] = std::array::from_fn(|_| Vec::with_capacity(ids.len()));
    let mut cur = 0i64;
    let mut max = -1i64;
    let mut i = 0;
    while i < ids.len() {
        if ids[i] != video_token_id {
            for p in pos.iter_mut() {
                p.push(cur);
            }
            max = max.max(cur);
            cur += 1;
            i += 1;
            continue;
        }
        let (h, w) = llm_hw.ok_or_else(|| {
            CosmosError::Prompt("video tokens in the prompt but no video grid".into())
        })?;
        let n = h * w;
        if i + n > ids.len() || ids[i..i + n].iter().any(|&t| t != video_token_id) {
            return Err(CosmosError::Prompt(format!(
                "a run of video tokens at {i} is not one pair of {h}x{w} tokens"
            )));
        }
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                pos[0].push(cur);
                pos[1].push(cur + y);
                pos[2].push(cur + x);
            }
        }
        max = max.max(cur + (h.max(w) as i64 - 1));
        cur += h.max(w) as i64;
        i += n;
    }
    let delta = max + 1 - ids.len() as i64;
    Ok((pos, delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_1_odd_counts_repeat_the_last_frame() {
        assert_eq!(pair_times(&[0.0, 0.5, 1.0], 2), vec![0.25, 1.0]);
        assert_eq!(pair_times(&[3.0], 2), vec![3.0]);
        assert_eq!(pair_times(&[0.0, 1.0, 2.0, 3.0], 2), vec![0.5, 2.5]);
    }

    #[test]
    fn rule_2_tags_round_like_python() {
        // Python: f"{0.25:.1f}" == '0.2', f"{0.35:.1f}" == '0.3' (0.35 is
        // below .35 in binary), f"{0.75:.1f}" == '0.8', f"{12.25:.1f}" == '12.2'.
        assert_eq!(time_tag(0.25), "<0.2 seconds>");
        assert_eq!(time_tag(0.35), "<0.3 seconds>");
        assert_eq!(time_tag(0.75), "<0.8 seconds>");
        assert_eq!(time_tag(12.25), "<12.2 seconds>");
        assert_eq!(time_tag(1.0), "<1.0 seconds>");
    }

    #[test]
    fn rule_3_the_entry_is_replaced_whole() {
        let t = format!("<|im_start|>user\n{VIDEO_ENTRY}Describe.<|im_end|>\n");
        let r = replace_video_entry(&t, &[0.25, 1.0]).unwrap();
        assert_eq!(
            r,
            "<|im_start|>user\n<0.2 seconds><|vision_start|><|video_pad|><|vision_end|>\
             <1.0 seconds><|vision_start|><|video_pad|><|vision_end|>Describe.<|im_end|>\n"
        );
        assert!(replace_video_entry("no video", &[0.0]).is_err());
        let two = format!("{VIDEO_ENTRY}{VIDEO_ENTRY}");
        assert!(replace_video_entry(&two, &[0.0]).is_err());
        // Pads expand per pair; a count that disagrees is an error.
        assert_eq!(
            expand_pads(&[1, 9, 2, 9], 9, 2, 3).unwrap(),
            vec![1, 9, 9, 9, 2, 9, 9, 9]
        );
        assert!(expand_pads(&[1, 9, 2], 9, 2, 3).is_err());
    }

    #[test]
    fn rule_4_positions_advance_by_the_larger_side() {
        // text(2) pair(2x3) text(1) pair(2x3) text(1)
        let v = 9;
        let mut ids = vec![1, 2];
        ids.extend([v; 6]);
        ids.push(3);
        ids.extend([v; 6]);
        ids.push(4);
        let (p, delta) = positions(&ids, v, Some((2, 3))).unwrap();
        assert_eq!(&p[0][..3], &[0, 1, 2]);
        assert_eq!(&p[1][2..8], &[2, 2, 2, 3, 3, 3]);
        assert_eq!(&p[2][2..8], &[2, 3, 4, 2, 3, 4]);
        // After the first pair cur = 2 + 3 = 5.
        assert_eq!(p[0][8], 5);
        assert_eq!(p[0][9], 6);
        assert_eq!(p[2][9..15], [6, 7, 8, 6, 7, 8]);
        assert_eq!(p[0][15], 9);
        assert_eq!(delta, 10 - 16);
        // A pair cut short is an error.
        assert!(positions(&[1, v, v], v, Some((2, 3))).is_err());
        assert!(positions(&[1, v], v, None).is_err());
    }

    #[test]
    fn rule_5_real_times_are_kept() {
        let p = pair_times(&[12.0, 12.5], 2);
        assert_eq!(time_tag(p[0]), "<12.2 seconds>");
    }
}
