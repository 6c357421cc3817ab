// SPDX-License-Identifier: MPL-2.0
//! The Qwen3-VL text decoder's own parts: its layer shape (the shared
//! [`crate::backend::cosmos::decoder`] with q/k/v and o biases as the
//! config says, per-head RMS norm of q and k before RoPE) and the
//! interleaved M-RoPE. The DeepStack features added at the visual positions
//! after the first decoder layers are in the model's forward loop.

use super::config::TextConfig;
use crate::backend::cosmos::decoder::LayerSpec;

/// Qwen3's decoder layer.
pub fn layer_spec(t: &TextConfig) -> LayerSpec {
    LayerSpec {
        hidden: t.hidden_size,
        intermediate: t.intermediate_size,
        heads: t.num_attention_heads,
        kv_heads: t.num_key_value_heads,
        head_dim: t.head_dim,
        rms_norm_eps: t.rms_norm_eps,
        qkv_bias: t.attention_bias,
        o_bias: t.attention_bias,
        qk_norm: true,
    }
}

/// Which M-RoPE axis (0 = t, 1 = h, 2 = w) rotary frequency `i` follows:
/// t, except `i ≡ 1 (mod 3)` below `3 · section[1]` (h) and `i ≡ 2 (mod 3)`
/// below `3 · section[2]` (w) — transformers' `recomposition_frequencies`.
pub fn interleaved_axis(i: usize, section: [usize; 3]) -> usize {
    match i % 3 {
        1 if i < 3 * section[1] => 1,
        2 if i < 3 * section[2] => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_follows_transformers() {
        // [24, 20, 20] over 64 frequencies: h at 1, 4, …, 58; w at 2, 5, …, 59; t elsewhere.
        let s = [24, 20, 20];
        let axes: Vec<usize> = (0..64).map(|i| interleaved_axis(i, s)).collect();
        assert_eq!(&axes[..6], &[0, 1, 2, 0, 1, 2]);
        assert_eq!(axes[58], 1);
        assert_eq!(axes[59], 2);
        assert_eq!(&axes[60..], &[0, 0, 0, 0]);
        assert_eq!(axes.iter().filter(|&&a| a == 0).count(), 24);
        assert_eq!(axes.iter().filter(|&&a| a == 1).count(), 20);
        // The tiny fixture's [2, 3, 3] over 8.
        let axes: Vec<usize> = (0..8).map(|i| interleaved_axis(i, [2, 3, 3])).collect();
        assert_eq!(axes, vec![0, 1, 2, 0, 1, 2, 0, 1]);
    }
}
