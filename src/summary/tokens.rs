// SPDX-License-Identifier: MPL-2.0
//! A conservative token estimate for text, without a tokenizer.
//!
//! The budget `llm-context-tokens` must never be exceeded, whatever model is
//! behind the endpoint, so the estimate is meant to be **at least** the real
//! count of the usual BPE tokenizers (cl100k/o200k, Llama 3, Qwen2/2.5 —
//! Cosmos-Reason1 uses Qwen2.5's) for typical text, at the price of
//! over-estimating English prose by roughly 30–60 %. It is computed in one
//! pass, character by character:
//!
//! | characters | tokens | why |
//! |---|---|---|
//! | ASCII digit | 1 each | Qwen2/2.5 split every number into single digits; cl100k and Llama 3 group up to 3. Our inputs are full of times (`<12.34>`, RFC 3339 stamps), so `bytes/3` would under-count them about 3×. |
//! | run of ASCII letters (a word) | ⌈len / 3⌉ | English words average 4–6 letters per token; every word is at least one token, short ones (`a`, `the`) exactly one. |
//! | other ASCII (punctuation, symbols, controls) | 1 each | punctuation is usually its own token (or merges with neighbours, which only lowers the real count). |
//! | a space followed by an ASCII letter or punctuation | 0 | every BPE pre-tokenizer attaches it to the next token (` the`, ` <`). |
//! | any other whitespace (newline, tab, a space before a digit or at the end, runs of spaces) | 1 each | |
//! | non-ASCII character | ⌈utf8 bytes / 2⌉ each | 1 for 2-byte scripts (accents, Cyrillic, Greek, Arabic), 2 for CJK and emoji: common CJK characters are ~1 token in these tokenizers and rare ones up to 3 in cl100k, so typical CJK text is over-estimated. |
//!
//! Known under-estimates: random letter strings (hashes, base64) can reach
//! 2 letters per token; they do not occur in captions and summaries.
//!
//! The estimate is exactly additive across a newline:
//! `estimate(a + "\n" + b) == estimate(a) + 1 + estimate(b)` (no rule looks
//! across a newline), which lets the aggregation pack lines into batches by
//! adding their estimates.
//!
//! A request adds [`REQUEST_OVERHEAD`] (the chat template's preamble, e.g.
//! Llama 3.1's "Cutting Knowledge Date…" block or Qwen's default system
//! prompt, and the assistant header) and [`MESSAGE_OVERHEAD`] per message (role
//! markers and separators).

use super::llm::TextRequest;

/// Tokens per chat message for role markers and separators
/// (`<|im_start|>user\n … <|im_end|>\n`: ~5 in Qwen and Llama 3).
pub const MESSAGE_OVERHEAD: u64 = 8;
/// Tokens per request for the chat template's fixed text (default system
/// text, date header) and the assistant header.
pub const REQUEST_OVERHEAD: u64 = 32;

/// The marker appended to a text that was cut to fit a budget.
pub const CUT_MARKER: &str = " …[cut]";

/// Conservative token count of `text` (see the module docs).
pub fn estimate(text: &str) -> u64 {
    let mut total = 0u64;
    let mut letters = 0u64;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphabetic() {
            letters += 1;
            continue;
        }
        total += letters.div_ceil(3);
        letters = 0;
        total += if c.is_ascii_digit() {
            1
        } else if c == ' ' {
            match chars.peek() {
                Some(n) if n.is_ascii_alphabetic() || n.is_ascii_punctuation() => 0,
                _ => 1,
            }
        } else if c.is_ascii() {
            1
        } else {
            (c.len_utf8() as u64).div_ceil(2)
        };
    }
    total + letters.div_ceil(3)
}

/// The tokens of a request besides its user text: template, messages and
/// the system text.
pub fn request_fixed(system: Option<&str>) -> u64 {
    REQUEST_OVERHEAD + MESSAGE_OVERHEAD + system.map_or(0, |s| MESSAGE_OVERHEAD + estimate(s))
}

/// Conservative token count of a whole request's input.
pub fn estimate_request(req: &TextRequest) -> u64 {
    request_fixed(req.system.as_deref()) + estimate(&req.user)
}

/// `text` when its estimate is at most `max`; else its longest prefix (cut at
/// a word boundary when one lies near the end) followed by [`CUT_MARKER`]
/// whose estimate is at most `max`; `""` when not even the marker fits.
/// The result's estimate is always `<= max`.
pub fn cut_to_tokens(text: &str, max: u64) -> String {
    if estimate(text) <= max {
        return text.to_string();
    }
    let with_marker = |end: usize| format!("{}{CUT_MARKER}", text[..end].trim_end());
    let fits = |end: usize| estimate(&with_marker(end)) <= max;
    if !fits(0) {
        return String::new();
    }
    // Char boundaries; binary search for the last one that fits. Only ends
    // that were checked to fit are kept, so the result fits even where the
    // estimate is not monotonic in the prefix length.
    let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let (mut lo, mut hi) = (0usize, bounds.len()); // bounds[lo] fits
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if fits(bounds[mid]) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut end = bounds[lo];
    // Prefer not to cut inside a word: back off to whitespace within 40 bytes.
    if !text[end..].starts_with(char::is_whitespace) {
        if let Some(ws) = text[..end].rfind(char::is_whitespace) {
            if end - ws <= 40 && ws > 0 && fits(ws) {
                end = ws;
            }
        }
    }
    with_marker(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_prose_is_over_estimated() {
        // cl100k: 16 tokens; Qwen2.5: 16.
        let s = "A worker in a yellow vest walks to the forklift and picks up a box.";
        let e = estimate(s);
        assert!((16..=26).contains(&e), "{e}");
        assert_eq!(estimate("the"), 1);
        assert_eq!(estimate(" the"), 1);
        assert_eq!(estimate("a b c d"), 4);
        assert_eq!(estimate(""), 0);
    }

    #[test]
    fn digits_and_time_labels_count_one_each() {
        // Qwen2.5: "<", "1","2",".","3","4", ">" → 7.
        assert_eq!(estimate("<12.34>"), 7);
        // 17 digits, 5 punctuation marks, "T" and "Z".
        assert_eq!(estimate("2024-05-30T01:41:25.123Z"), 24);
        // A space before a digit is its own token in Qwen.
        assert_eq!(estimate("at 5"), 3);
        // Qwen2.5: "<" 1 2 . 3 4 ">" " <" 2 2 . 3 4 ">" " " → 15.
        assert_eq!(estimate("<12.34> <22.34> "), 15);
    }

    #[test]
    fn non_ascii_and_whitespace() {
        assert_eq!(estimate("é"), 1);
        assert_eq!(estimate("Привет"), 6);
        // 2 per CJK character, 2 per emoji.
        assert_eq!(estimate("一个人在走路"), 12);
        assert_eq!(estimate("🔥"), 2);
        assert_eq!(estimate("\n"), 1);
        assert_eq!(estimate("a\n\nb"), 4);
        assert_eq!(estimate("x "), 2);
        assert_eq!(estimate("    x"), 4); // 3 spaces + " x"
    }

    #[test]
    fn additive_across_newlines() {
        let samples = [
            "",
            "plain words here",
            "ends with space ",
            " starts with space",
            "<0.00> <10.00> A person walks in.",
            "2024-05-30T01:41:25.123Z ok",
            "一个人 walks",
            "tabs\tand  spaces  ",
            "punct!?",
            "x",
            "9",
        ];
        for a in samples {
            for b in samples {
                let joined = format!("{a}\n{b}");
                assert_eq!(
                    estimate(&joined),
                    estimate(a) + 1 + estimate(b),
                    "{a:?} + {b:?}"
                );
            }
        }
    }

    #[test]
    fn request_overheads() {
        let mut r = TextRequest {
            system: None,
            user: "the".into(),
            max_tokens: 10,
            temperature: 0.2,
            top_p: 0.7,
            json: false,
        };
        assert_eq!(
            estimate_request(&r),
            REQUEST_OVERHEAD + MESSAGE_OVERHEAD + 1
        );
        r.system = Some("the".into());
        assert_eq!(
            estimate_request(&r),
            REQUEST_OVERHEAD + 2 * MESSAGE_OVERHEAD + 2
        );
        assert_eq!(request_fixed(Some("the")), estimate_request(&r) - 1);
    }

    #[test]
    fn cutting_fits_and_marks() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        assert_eq!(cut_to_tokens(text, 1000), text);
        for max in 0..estimate(text) {
            let c = cut_to_tokens(text, max);
            assert!(estimate(&c) <= max, "{max}: {c:?}");
            if !c.is_empty() {
                assert!(c.ends_with(CUT_MARKER), "{c:?}");
                let kept = c.strip_suffix(CUT_MARKER).unwrap();
                assert!(text.starts_with(kept));
                // Cut at a word boundary.
                assert!(
                    kept.is_empty() || text[kept.len()..].starts_with(' '),
                    "{c:?}"
                );
            }
        }
        assert_eq!(cut_to_tokens(text, 2), "");
        // Multibyte text is cut at a character boundary.
        let cjk = "一个人在走路".repeat(20);
        let c = cut_to_tokens(&cjk, 30);
        assert!(estimate(&c) <= 30 && c.ends_with(CUT_MARKER) && c.len() > CUT_MARKER.len());
        // No whitespace at all: cut inside the word.
        let long = "a".repeat(3000);
        let c = cut_to_tokens(&long, 50);
        assert!(estimate(&c) <= 50 && c.starts_with("aaaa"));
    }
}
