// SPDX-License-Identifier: MPL-2.0
//! Multimodal position ids (M-RoPE) with the original Qwen2.5-VL rule (as
//! vLLM and transformers ≤ 4.57): text runs take consecutive positions; a
//! video block of grid (T, H, W) merged tokens takes
//! `(start + ⌊t · second_per_grid · tokens_per_second⌋, start + h, start + w)`,
//! with `second_per_grid` kept as a float; the next text starts at the
//! largest position so far + 1.

use crate::backend::cosmos::error::CosmosError;

/// Position ids per axis (t, h, w) and the rope delta (max position + 1 − L).
pub fn rope_index(
    ids: &[u32],
    video_token_id: u32,
    llm_grid: Option<[usize; 3]>,
    second_per_grid: f64,
    tokens_per_second: f64,
) -> Result<([Vec<i64>; 3], i64), CosmosError> {
    let mut pos: [Vec<i64>; 3] = std::array::from_fn(|_| Vec::with_capacity(ids.len()));
    let mut next = 0i64;
    let mut i = 0;
    let mut seen_video = false;
    while i < ids.len() {
        if ids[i] != video_token_id {
            for p in pos.iter_mut() {
                p.push(next);
            }
            next += 1;
            i += 1;
            continue;
        }
        let [gt, gh, gw] = llm_grid.ok_or_else(|| {
            CosmosError::Prompt("video tokens in the prompt but no video grid".into())
        })?;
        if seen_video {
            return Err(CosmosError::Prompt(
                "more than one video block in the prompt".into(),
            ));
        }
        seen_video = true;
        let n = gt * gh * gw;
        if i + n > ids.len() || ids[i..i + n].iter().any(|&t| t != video_token_id) {
            return Err(CosmosError::Prompt(format!(
                "expected {n} video tokens at position {i}"
            )));
        }
        let start = next;
        let mut max = start - 1;
        for t in 0..gt {
            let tpos = (t as f64 * second_per_grid * tokens_per_second).floor() as i64;
            for h in 0..gh {
                for w in 0..gw {
                    let p = [start + tpos, start + h as i64, start + w as i64];
                    for (axis, v) in p.iter().enumerate() {
                        pos[axis].push(*v);
                        max = max.max(*v);
                    }
                }
            }
        }
        next = max + 1;
        i += n;
    }
    let delta = next - ids.len() as i64;
    Ok((pos, delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example() {
        // 2 text tokens, video T=12 H=8/2 W=12/2 at 2 fps (second_per_grid 1.0),
        // then 1 text token: it starts at max + 1 (4.57 rule).
        let v = 9;
        let (gt, gh, gw) = (12, 4, 6);
        let mut ids = vec![1, 2];
        ids.extend(std::iter::repeat_n(v, gt * gh * gw));
        ids.push(3);
        let (pos, delta) = rope_index(&ids, v, Some([gt, gh, gw]), 1.0, 2.0).unwrap();
        assert_eq!(pos[0][..2], [0, 1]);
        // Last video token: t = 11·1·2 = 22 → 2 + 22 = 24.
        let last = 2 + gt * gh * gw - 1;
        assert_eq!((pos[0][last], pos[1][last], pos[2][last]), (24, 5, 7));
        // The next text token: 25 on all axes.
        let end = ids.len() - 1;
        assert_eq!((pos[0][end], pos[1][end], pos[2][end]), (25, 25, 25));
        assert_eq!(delta, 26 - ids.len() as i64);
        // Fractional seconds stay fractional: 0.5 s per grid at 2 tokens/s → t.
        let (pos, _) = rope_index(&ids, v, Some([gt, gh, gw]), 0.25, 2.0).unwrap();
        assert_eq!(pos[0][2 + 3 * gh * gw], 2 + 1); // t=3 → ⌊1.5⌋
    }

    #[test]
    fn text_only_and_errors() {
        let (pos, delta) = rope_index(&[5, 6, 7], 9, None, 1.0, 2.0).unwrap();
        assert_eq!(pos[2], vec![0, 1, 2]);
        assert_eq!(delta, 0);
        assert!(rope_index(&[9, 9], 9, None, 1.0, 2.0).is_err());
        assert!(rope_index(&[9, 9], 9, Some([1, 1, 3]), 1.0, 2.0).is_err());
    }
}
