// SPDX-License-Identifier: MPL-2.0
//! Token sampling as Hugging Face's `generate` does it: repetition penalty
//! over prompt and output, then temperature, top-k and top-p (nucleus)
//! warping, then a draw from a seeded generator; temperature 0 is greedy.
//! Defaults come from the checkpoint's `generation_config.json`.
//!
//! No-repeat n-grams (`no_repeat_ngram_size` n > 0), as transformers'
//! `NoRepeatNGramLogitsProcessor`, over the same ids as the penalty (prompt
//! and generated): a token that would complete an n-gram already present in
//! the sequence is banned (its logit becomes −∞) before the penalty and the
//! warpers. Nothing is banned while the sequence is shorter than n − 1.
//! 0 is off. Should every token be banned, the ban is dropped for that step
//! (transformers would sample from NaNs).

use serde_json::Value;

use super::error::CosmosError;

/// `generation_config.json` values the sampler uses.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationDefaults {
    pub do_sample: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub eos: Vec<u32>,
}

impl Default for GenerationDefaults {
    fn default() -> Self {
        GenerationDefaults {
            do_sample: false,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 50,
            repetition_penalty: 1.0,
            eos: vec![],
        }
    }
}

impl GenerationDefaults {
    pub fn from_json(text: &str) -> Result<GenerationDefaults, CosmosError> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            CosmosError::Checkpoint(format!("generation_config.json is not JSON: {e}"))
        })?;
        let d = GenerationDefaults::default();
        let f = |k: &str, dflt: f64| v.get(k).and_then(Value::as_f64).unwrap_or(dflt);
        let eos = match v.get("eos_token_id") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64().map(|n| n as u32))
                .collect(),
            Some(x) => x.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            None => vec![],
        };
        Ok(GenerationDefaults {
            do_sample: v
                .get("do_sample")
                .and_then(Value::as_bool)
                .unwrap_or(d.do_sample),
            temperature: f("temperature", d.temperature),
            top_p: f("top_p", d.top_p),
            top_k: v
                .get("top_k")
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .unwrap_or(d.top_k),
            repetition_penalty: f("repetition_penalty", d.repetition_penalty),
            eos,
        })
    }
}

/// What one generation uses, after the element's settings are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleParams {
    /// 0 (or `do_sample` false) = greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = off.
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub seed: u64,
    pub max_tokens: usize,
    /// Bans a token that would repeat an n-gram of this size; 0 = off.
    pub no_repeat_ngram_size: usize,
}

/// The tokens that would complete an `n`-gram already in `seen` (the
/// module's rule), sorted, without duplicates.
pub fn banned_ngram_tokens(seen: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || seen.len() + 1 < n {
        return Vec::new();
    }
    if n == 1 {
        let mut all = seen.to_vec();
        all.sort_unstable();
        all.dedup();
        return all;
    }
    let prefix = &seen[seen.len() + 1 - n..];
    let mut out: Vec<u32> = seen
        .windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// SplitMix64: small, seedable, reproducible everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, x) in v.iter().enumerate() {
        if *x > best.1 {
            best = (i, *x);
        }
    }
    best.0 as u32
}

/// Picks the next token from one row of logits.
pub fn sample(logits: &[f32], seen: &[u32], p: &SampleParams, rng: &mut Rng) -> u32 {
    let mut l: Vec<f32> = logits.to_vec();
    if p.no_repeat_ngram_size > 0 {
        let banned = banned_ngram_tokens(seen, p.no_repeat_ngram_size);
        let allowed = l.len() - banned.iter().filter(|&&t| (t as usize) < l.len()).count();
        if allowed > 0 {
            for t in banned {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
    if p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0 {
        let r = p.repetition_penalty as f32;
        let mut done = vec![false; l.len()];
        for &t in seen {
            let t = t as usize;
            if t < l.len() && !done[t] {
                done[t] = true;
                l[t] = if l[t] < 0.0 { l[t] * r } else { l[t] / r };
            }
        }
    }
    if p.temperature <= 0.0 {
        return argmax(&l);
    }
    let t = p.temperature as f32;
    let mut idx: Vec<usize> = (0..l.len()).collect();
    // Descending by logit; ties keep the lower id first.
    let order = |a: &usize, b: &usize| l[*b].total_cmp(&l[*a]).then(a.cmp(b));
    if p.top_k > 0 && p.top_k < idx.len() {
        // Only the k best need sorting (not the whole vocabulary, per token).
        idx.select_nth_unstable_by(p.top_k - 1, order);
        idx.truncate(p.top_k);
    }
    idx.sort_unstable_by(order);
    let max = l[idx[0]] / t;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| f64::from(l[i] / t - max).exp())
        .collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= sum);
    if p.top_p < 1.0 {
        // Keep the smallest prefix whose mass reaches top_p (at least one).
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (k, x) in probs.iter().enumerate() {
            acc += x;
            if acc >= p.top_p {
                keep = k + 1;
                break;
            }
        }
        idx.truncate(keep);
        probs.truncate(keep);
        let s: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= s);
    }
    let u = rng.next_f64();
    let mut acc = 0.0;
    for (k, x) in probs.iter().enumerate() {
        acc += x;
        if u < acc {
            return idx[k] as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_p: f64, top_k: usize, rep: f64) -> SampleParams {
        SampleParams {
            temperature,
            top_p,
            top_k,
            repetition_penalty: rep,
            seed: 1,
            max_tokens: 8,
            no_repeat_ngram_size: 0,
        }
    }

    /// The no-repeat rule: a token completing an n-gram already in prompt +
    /// output is banned; shorter sequences ban nothing; 0 is off.
    #[test]
    fn no_repeat_ngrams_ban_the_completing_token() {
        // "5 6 7 … 5 6": 7 would repeat the trigram 5 6 7.
        let seen = [5, 6, 7, 1, 5, 6];
        assert_eq!(banned_ngram_tokens(&seen, 3), vec![7]);
        // Bigrams ending in 6: 6 was followed by 7 once.
        assert_eq!(banned_ngram_tokens(&seen, 2), vec![7]);
        // Unigrams: every seen token.
        assert_eq!(banned_ngram_tokens(&[3, 1, 3], 1), vec![1, 3]);
        // Two candidates for one prefix; too short a sequence; off.
        assert_eq!(
            banned_ngram_tokens(&[1, 2, 3, 1, 2, 4, 1, 2], 3),
            vec![3, 4]
        );
        assert!(banned_ngram_tokens(&[1], 3).is_empty());
        assert!(banned_ngram_tokens(&seen, 0).is_empty());
        // transformers' boundary: with len + 1 == n the last n-1 ids are the
        // whole sequence and no n-gram exists yet.
        assert!(banned_ngram_tokens(&[1, 2], 3).is_empty());

        // In `sample`: greedy would pick 7, the ban makes it 2.
        let mut logits = vec![0.0f32; 8];
        logits[7] = 5.0;
        logits[2] = 4.0;
        let mut p = params(0.0, 1.0, 0, 1.0);
        let mut rng = Rng::new(1);
        assert_eq!(sample(&logits, &seen, &p, &mut rng), 7);
        p.no_repeat_ngram_size = 3;
        assert_eq!(sample(&logits, &seen, &p, &mut rng), 2);
        // Sampling never draws a banned token.
        p.temperature = 1.0;
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            assert_ne!(sample(&logits, &seen, &p, &mut rng), 7);
        }
        // Everything banned: the ban is dropped rather than sampling NaNs.
        let tiny = [1.0f32, 2.0];
        let mut p = params(0.0, 1.0, 0, 1.0);
        p.no_repeat_ngram_size = 1;
        assert_eq!(sample(&tiny, &[0, 1], &p, &mut rng), 1);
    }

    #[test]
    fn greedy_penalty_and_filters() {
        let logits = [1.0f32, 3.0, 2.9, -1.0];
        let mut rng = Rng::new(1);
        assert_eq!(sample(&logits, &[], &params(0.0, 1.0, 0, 1.0), &mut rng), 1);
        // Penalty 1.5 on token 1: 3.0/1.5 = 2.0 < 2.9.
        assert_eq!(
            sample(&logits, &[1, 1], &params(0.0, 1.0, 0, 1.5), &mut rng),
            2
        );
        // Negative logits get multiplied (more negative).
        let neg = [-1.0f32, -1.2];
        assert_eq!(sample(&neg, &[0], &params(0.0, 1.0, 0, 1.5), &mut rng), 1);
        // top_k 1 and a tiny top_p are greedy whatever the temperature.
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            assert_eq!(sample(&logits, &[], &params(5.0, 1.0, 1, 1.0), &mut rng), 1);
            assert_eq!(
                sample(&logits, &[], &params(5.0, 0.001, 0, 1.0), &mut rng),
                1
            );
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let p = params(1.0, 1.0, 0, 1.0);
        let mut rng = Rng::new(42);
        let draws: Vec<u32> = (0..4000)
            .map(|_| sample(&logits, &[], &p, &mut rng))
            .collect();
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
        assert!(draws.iter().all(|&t| t != 2));
        let mut again = Rng::new(42);
        let redo: Vec<u32> = (0..4000)
            .map(|_| sample(&logits, &[], &p, &mut again))
            .collect();
        assert_eq!(draws, redo, "same seed, same tokens");
    }

    #[test]
    fn generation_config_defaults() {
        let g = GenerationDefaults::from_json(
            r#"{"do_sample":true,"temperature":0.1,"top_p":0.001,"top_k":1,"repetition_penalty":1.05,"eos_token_id":[258,256]}"#,
        )
        .unwrap();
        assert!(g.do_sample);
        assert_eq!((g.top_k, g.eos.clone()), (1, vec![258, 256]));
        let g = GenerationDefaults::from_json(r#"{"eos_token_id":151645}"#).unwrap();
        assert_eq!(g.eos, vec![151645]);
        assert_eq!(g.repetition_penalty, 1.0);
    }
}
