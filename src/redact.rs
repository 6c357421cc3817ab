// SPDX-License-Identifier: MPL-2.0
//! Server text for error records, log lines and messages: the API key taken
//! out, then cut to a length.
//!
//! Rules:
//! 1. Redact before cutting: every occurrence of the key becomes
//!    `<redacted>` first (a cut first could split an echoed key so that no
//!    whole occurrence is left to find, and leave its start in the record).
//! 2. Then redact at the cut: a cut text that ends with the key's start, at
//!    least [`ApiKey::MIN_CUT_PREFIX`] characters of it, has that part
//!    redacted too.
//! 3. Cuts count characters, never split one, and end with `…`.
//! 4. A key shorter than 4 characters is not searched for (it would redact
//!    ordinary words); such a key is refused elsewhere anyway.

use crate::config::ApiKey;

/// The mark of a cut.
pub const ELLIPSIS: &str = "…";

/// `text` with every occurrence of `key` replaced by `<redacted>` (rule 1).
pub fn redact(text: &str, key: Option<&ApiKey>) -> String {
    match key {
        Some(k) => k.scrub(text),
        None => text.to_string(),
    }
}

/// The first `max_chars` characters of `text` and whether there were more.
fn cut(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

/// `text` redacted (rule 1), cut to `max_chars` characters (rule 3), and
/// redacted at the cut (rule 2).
pub fn snippet(text: &str, max_chars: usize, key: Option<&ApiKey>) -> String {
    let redacted = redact(text, key);
    let (kept, was_cut) = cut(&redacted, max_chars);
    if !was_cut {
        return kept.to_string();
    }
    let kept = match key {
        Some(k) => k.scrub_cut(kept),
        None => kept.to_string(),
    };
    kept + ELLIPSIS
}

/// [`snippet`] of `text` with its surrounding white space trimmed (the
/// trimming comes after the redaction, which cannot add any).
pub fn trimmed_snippet(text: &str, max_chars: usize, key: Option<&ApiKey>) -> String {
    snippet(redact(text, key).trim(), max_chars, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-HOSTILE0123456789abcdefghijklmnopqrstuvwxyzAB";

    fn key() -> ApiKey {
        ApiKey::new(KEY).unwrap()
    }

    #[test]
    fn every_occurrence_is_redacted() {
        let k = key();
        assert_eq!(
            redact(&format!("a {KEY} b {KEY}"), Some(&k)),
            "a <redacted> b <redacted>"
        );
        assert_eq!(redact("no key here", Some(&k)), "no key here");
        assert_eq!(redact(KEY, None), KEY);
    }

    #[test]
    fn short_texts_are_not_cut() {
        assert_eq!(snippet("  kept as is ", 100, None), "  kept as is ");
        assert_eq!(trimmed_snippet("  kept as is ", 100, None), "kept as is");
        assert_eq!(snippet("abc", 3, None), "abc");
        assert_eq!(snippet("abcd", 3, None), "abc…");
    }

    #[test]
    fn cuts_count_characters() {
        assert_eq!(snippet("ééééé", 2, None), "éé…");
        assert_eq!(snippet("日本語テキスト", 3, None), "日本語…");
    }

    /// Hardening round 2: cutting first left an echoed key's start (and a
    /// whole key past the cut was never searched for in the cut text).
    #[test]
    fn redaction_comes_before_the_cut_and_again_at_it() {
        let k = key();
        // A key straddling the cut: cut first, 30 of its characters would
        // stay; redacted first, the cut falls inside "<redacted>" or after.
        let text = format!("{}{KEY} tail", "x".repeat(20));
        let s = snippet(&text, 50, Some(&k));
        assert!(!s.contains("sk-HOSTILE"), "{s}");
        assert_eq!(s, format!("{}<redacted> tail", "x".repeat(20)));
        let s = snippet(&text, 25, Some(&k));
        assert!(!s.contains("sk-HOS"), "{s}");
        assert_eq!(s, format!("{}<reda…", "x".repeat(20)));
        // The key's start at the cut, not followed by the rest of the key
        // (so rule 1 finds nothing): rule 2 redacts it.
        let partial = format!("{}{} and more", "y".repeat(10), &KEY[..20]);
        let s = snippet(&partial, 30, Some(&k));
        assert_eq!(s, format!("{}<redacted>…", "y".repeat(10)));
        // Fewer than MIN_CUT_PREFIX characters of it are ordinary text.
        let s = snippet(&format!("{}sk-H rest", "z".repeat(6)), 10, Some(&k));
        assert_eq!(s, "zzzzzzsk-H…");
    }
}
