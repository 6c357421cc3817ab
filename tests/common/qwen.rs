// SPDX-License-Identifier: MPL-2.0
//! Helpers for the Qwen2.5-VL fixture tests: the generators' deterministic
//! frames and safetensors readers.

use gstvsssummarize::frames::RgbImage;
use safetensors::SafeTensors;

/// Frame t of the fixture videos (the generators' `pattern`): gradients
/// plus hashed noise, in integer arithmetic so both sides agree exactly.
pub fn pattern(t: u64, h: u32, w: u32) -> RgbImage {
    let mut data = Vec::with_capacity((h * w * 3) as usize);
    for y in 0..u64::from(h) {
        for x in 0..u64::from(w) {
            for c in 0..3u64 {
                let smooth = match c {
                    0 => x * 255 / u64::from(w - 1).max(1),
                    1 => y * 255 / u64::from(h - 1).max(1),
                    _ => (x + y + 40 * t) % 256,
                };
                let hash =
                    ((x * 73_856_093) ^ (y * 19_349_663) ^ (t * 83_492_791) ^ (c * 2_654_435_761))
                        & 0xFFFF_FFFF;
                data.push((smooth * 7 / 8 + hash % 32) as u8);
            }
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn raw<'a>(st: &'a SafeTensors, name: &str) -> &'a [u8] {
    st.tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .data()
}

pub fn i64s(st: &SafeTensors, name: &str) -> Vec<i64> {
    raw(st, name)
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    raw(st, name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    raw(st, name)
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0 as u32
}

/// `n` greedy tokens after a prefill whose last-position logits are
/// `last_logits`: KV cache, positions `cache_len + delta` (the M-RoPE rule).
#[cfg(feature = "cosmos")]
pub fn greedy_tokens(
    model: &mut gstvsssummarize::backend::cosmos::qwen2_5::Qwen25Vl,
    last_logits: &[f32],
    delta: i64,
    n: usize,
) -> Vec<u32> {
    let mut next = argmax(last_logits);
    let mut tokens = vec![next];
    for _ in 1..n {
        let p = model.cache_len() as i64 + delta;
        let e = model.embed_prompt(&[next], None).unwrap();
        let lg = model.forward(&e, &[vec![p], vec![p], vec![p]]).unwrap();
        next = argmax(&lg.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        tokens.push(next);
    }
    tokens
}
