// SPDX-License-Identifier: MPL-2.0
//! The text sent with a chunk's frames (VSS's layout, with proper spacing).

/// The caption prompt used when the `prompt` property is empty: VSS's dense
/// caption prompt without its warehouse-specific wording.
pub const DEFAULT_PROMPT: &str = "Write a concise and clear dense caption for the provided video, \
describing the events in the order they happen. Start and end each sentence with a time stamp.";

/// How frame times are written in the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeStyle {
    /// Stream time in seconds with 2 decimals (files): `<12.34>`.
    Seconds,
    /// RFC 3339 UTC wall-clock time (live sources): `<2024-05-30T01:41:25.123Z>`.
    /// The value is the Unix time in seconds of the frame.
    Rfc3339,
}

/// One frame's time label.
pub fn time_label(style: TimeStyle, value: f64) -> String {
    match style {
        TimeStyle::Seconds => format!("{value:.2}"),
        TimeStyle::Rfc3339 => rfc3339(value),
    }
}

/// `These are images sampled from a video at timestamps in seconds: <0.00> <1.00>. {prompt} Make sure the answer contains correct timestamps.`
pub fn chunk_prompt(style: TimeStyle, labels: &[String], user_prompt: &str) -> String {
    let unit = match style {
        TimeStyle::Seconds => "in seconds",
        TimeStyle::Rfc3339 => "in RFC3339 format",
    };
    let stamps: Vec<String> = labels.iter().map(|l| format!("<{l}>")).collect();
    let user_prompt = user_prompt.trim();
    let user_prompt = if user_prompt.is_empty() {
        DEFAULT_PROMPT
    } else {
        user_prompt
    };
    format!(
        "These are images sampled from a video at timestamps {unit}: {}. {user_prompt} Make sure the answer contains correct timestamps.",
        stamps.join(" ")
    )
}

/// The values of the prompt placeholders for one chunk.
///
/// `{timestamps}` (every frame's time, `<t0> <t1> …`), `{first_ts}`,
/// `{last_ts}`, `{num_frames}` and `{stream_id}` are replaced in `prompt`
/// and `system-prompt` by every backend; times are written as in the
/// timestamp line (stream seconds for files, RFC 3339 for live). Any other
/// `{…}` is left as written.
#[derive(Clone, Copy, Debug)]
pub struct PromptVars<'a> {
    /// The frames' time labels ([`time_label`]).
    pub labels: &'a [String],
    pub stream_id: &'a str,
}

impl PromptVars<'_> {
    /// `template` with the placeholders replaced.
    pub fn fill(&self, template: &str) -> String {
        if !template.contains('{') {
            return template.to_string();
        }
        let stamps: Vec<String> = self.labels.iter().map(|l| format!("<{l}>")).collect();
        let first = self.labels.first().map(String::as_str).unwrap_or("");
        let last = self.labels.last().map(String::as_str).unwrap_or("");
        template
            .replace("{timestamps}", &stamps.join(" "))
            .replace("{first_ts}", first)
            .replace("{last_ts}", last)
            .replace("{num_frames}", &self.labels.len().to_string())
            .replace("{stream_id}", self.stream_id)
    }
}

/// The user text of a chunk: the prompt with its placeholders filled, and,
/// when `timestamp_line` is set, VSS's timestamp line around it
/// ([`chunk_prompt`]; worded for a video when `video`).
pub fn chunk_text(
    style: TimeStyle,
    vars: PromptVars,
    user_prompt: &str,
    timestamp_line: bool,
    video: bool,
) -> String {
    let filled = vars.fill(user_prompt);
    if !timestamp_line {
        let t = filled.trim();
        return if t.is_empty() { DEFAULT_PROMPT } else { t }.to_string();
    }
    let text = chunk_prompt(style, vars.labels, &filled);
    if video {
        text.replacen(
            "These are images sampled from a video at timestamps",
            "This video's frames are at timestamps",
            1,
        )
    } else {
        text
    }
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(unix_secs: f64) -> String {
    let total_ms = (unix_secs * 1000.0).round() as i64;
    let ms = total_ms.rem_euclid(1000);
    let secs = total_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil-from-days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Splits a model answer into (text, reasoning): text inside `<think>…</think>`
/// becomes the reasoning, `<answer>` / `</answer>` (and `<summary>`) tags are
/// removed, and the result is trimmed. An unclosed `<think>` takes the rest.
pub fn split_reasoning(content: &str) -> (String, Option<String>) {
    let mut text = String::new();
    let mut reasoning: Vec<String> = Vec::new();
    let mut rest = content;
    while let Some(i) = rest.find("<think>") {
        text.push_str(&rest[..i]);
        let after = &rest[i + "<think>".len()..];
        match after.find("</think>") {
            Some(j) => {
                reasoning.push(after[..j].trim().to_string());
                rest = &after[j + "</think>".len()..];
            }
            None => {
                reasoning.push(after.trim().to_string());
                rest = "";
            }
        }
    }
    text.push_str(rest);
    // A lone closing tag (reasoning models whose template opened <think>).
    if let Some(j) = text.find("</think>") {
        let r = text[..j].trim().to_string();
        let t = text[j + "</think>".len()..].to_string();
        reasoning.insert(0, r);
        text = t;
    }
    for tag in ["<answer>", "</answer>", "<summary>", "</summary>"] {
        text = text.replace(tag, "");
    }
    reasoning.retain(|r| !r.is_empty());
    let reasoning = if reasoning.is_empty() {
        None
    } else {
        Some(reasoning.join("\n"))
    };
    (text.trim().to_string(), reasoning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_layout_has_spacing() {
        let labels: Vec<String> = [0.0, 1.5, 3.0]
            .iter()
            .map(|t| time_label(TimeStyle::Seconds, *t))
            .collect();
        let p = chunk_prompt(TimeStyle::Seconds, &labels, "  Describe the scene.  ");
        assert_eq!(
            p,
            "These are images sampled from a video at timestamps in seconds: <0.00> <1.50> <3.00>. Describe the scene. Make sure the answer contains correct timestamps."
        );
        let p = chunk_prompt(TimeStyle::Seconds, &labels, "");
        assert!(p.contains(DEFAULT_PROMPT));
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_717_033_285.123), "2024-05-30T01:41:25.123Z");
        assert_eq!(rfc3339(951_782_400.5), "2000-02-29T00:00:00.500Z");
        let p = chunk_prompt(TimeStyle::Rfc3339, &[rfc3339(0.0)], "x");
        assert!(p.contains("in RFC3339 format: <1970-01-01T00:00:00.000Z>."));
    }

    #[test]
    fn reasoning_split() {
        assert_eq!(split_reasoning(" plain "), ("plain".into(), None));
        assert_eq!(
            split_reasoning("<think>\nwhy\n</think>\n\n<answer>\nA person walks.\n</answer>"),
            ("A person walks.".into(), Some("why".into()))
        );
        assert_eq!(
            split_reasoning("because</think>answer"),
            ("answer".into(), Some("because".into()))
        );
        assert_eq!(
            split_reasoning("x <think>unclosed"),
            ("x".into(), Some("unclosed".into()))
        );
        assert_eq!(
            split_reasoning("<think></think><summary>s</summary>"),
            ("s".into(), None)
        );
    }

    #[test]
    fn placeholders_are_filled() {
        let labels: Vec<String> = [1.0, 2.5]
            .iter()
            .map(|t| time_label(TimeStyle::Seconds, *t))
            .collect();
        let v = PromptVars {
            labels: &labels,
            stream_id: "cam-7",
        };
        assert_eq!(
            v.fill(
                "{stream_id}: {num_frames} frames {first_ts}..{last_ts} at {timestamps} {other}"
            ),
            "cam-7: 2 frames 1.00..2.50 at <1.00> <2.50> {other}"
        );
        let t = chunk_text(TimeStyle::Seconds, v, "From {first_ts}.", false, false);
        assert_eq!(t, "From 1.00.");
        let t = chunk_text(TimeStyle::Seconds, v, "From {first_ts}.", true, false);
        assert!(t.starts_with("These are images sampled from a video at timestamps in seconds: <1.00> <2.50>. From 1.00."), "{t}");
        let t = chunk_text(TimeStyle::Seconds, v, "", true, true);
        assert!(
            t.starts_with("This video's frames are at timestamps in seconds: <1.00> <2.50>."),
            "{t}"
        );
        let live = [rfc3339(0.0)];
        let v = PromptVars {
            labels: &live,
            stream_id: "s",
        };
        assert_eq!(v.fill("{last_ts}"), "1970-01-01T00:00:00.000Z");
    }
}
