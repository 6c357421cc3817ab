// SPDX-License-Identifier: MPL-2.0
//! How `openai-compat` shows a chunk's frames to the model: as images or as
//! one MP4 video, and the request fields that go with them. Plain Rust, no
//! GStreamer types (the MP4 itself comes from [`crate::mp4`]).
//!
//! Rules (one test each, `tests` below):
//! 1. `vision-mode` is `images`, `video` or `auto` (default `images`); `auto`
//!    starts with images on endpoints known to take images only (OpenAI's
//!    own API, Azure OpenAI) and with video everywhere else.
//! 2. `auto` falls back to images, for the rest of the session, on the
//!    first refusal of a video request: an HTTP 4xx other than 401, 403,
//!    404, 408 and 429 (those say nothing about the content). `video` never
//!    falls back.
//! 3. `image-detail` is `auto`, `low` or `high`, sent as each image's
//!    `detail`.
//! 4. `max-images-per-request` N > 0 keeps N uniformly chosen frames of a
//!    larger chunk, always the first and the last (images mode only); 0
//!    keeps all.
//! 5. `extra-body` is a JSON object (empty: none). Its keys become top-level
//!    keys of every caption request and win over the element's own, except
//!    `model`, `messages` and `stream`, which are refused. A key whose name
//!    looks like a credential (a word such as `key`, `token`, `secret`,
//!    `password`, `authorization`), at any depth, is refused, and so is any
//!    value holding the API key: secrets go through `api-key` only, which is
//!    redacted everywhere. Error texts name the key, never the value, and
//!    the property reads back with such values (and the API key) as
//!    `<redacted>`.

use serde_json::{Map, Value};

use super::BackendError;

/// `vision-mode`. The default is `images`: every OpenAI-compatible server
/// takes images as sent, while what a server does with a video (vLLM
/// re-samples it to its own frame count, some models refuse it) has to be
/// checked per deployment; see docs/video-mode.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VisionMode {
    #[default]
    Images,
    Video,
    Auto,
}

impl VisionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VisionMode::Images => "images",
            VisionMode::Video => "video",
            VisionMode::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Result<VisionMode, String> {
        match s.trim() {
            "images" => Ok(VisionMode::Images),
            "video" => Ok(VisionMode::Video),
            "auto" => Ok(VisionMode::Auto),
            "" => Ok(VisionMode::default()),
            o => Err(format!(
                "vision-mode '{o}' is not one of images, video, auto"
            )),
        }
    }

    /// Whether the session starts by sending video (rule 1).
    pub fn starts_with_video(self, images_only_endpoint: bool) -> bool {
        match self {
            VisionMode::Images => false,
            VisionMode::Video => true,
            VisionMode::Auto => !images_only_endpoint,
        }
    }
}

/// `image-detail`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageDetail {
    #[default]
    Auto,
    Low,
    High,
}

impl ImageDetail {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageDetail::Auto => "auto",
            ImageDetail::Low => "low",
            ImageDetail::High => "high",
        }
    }

    pub fn parse(s: &str) -> Result<ImageDetail, String> {
        match s.trim() {
            "auto" | "" => Ok(ImageDetail::Auto),
            "low" => Ok(ImageDetail::Low),
            "high" => Ok(ImageDetail::High),
            o => Err(format!("image-detail '{o}' is not one of auto, low, high")),
        }
    }
}

/// The vision settings of an `openai-compat` session.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionOptions {
    pub mode: VisionMode,
    pub detail: ImageDetail,
    /// 0 = no cap.
    pub max_images: u32,
    /// Validated `extra-body` (rule 5).
    pub extra_body: Map<String, Value>,
    /// Add the timestamp line to the prompt (`timestamp-line`).
    pub timestamp_line: bool,
}

impl Default for VisionOptions {
    fn default() -> Self {
        VisionOptions {
            mode: VisionMode::default(),
            detail: ImageDetail::default(),
            max_images: 0,
            extra_body: Map::new(),
            timestamp_line: true,
        }
    }
}

/// Whether `e`, the answer to a video request, is the server refusing video
/// (rule 2).
pub fn refuses_video(e: &BackendError) -> bool {
    matches!(e, BackendError::Refused { status, .. }
        if (400..500).contains(status) && ![401, 403, 404, 408, 429].contains(status))
}

/// Indices of the frames sent when `n` frames meet a cap of `max` (rule 4):
/// `max` indices spread evenly over `0..n`, first and last included.
pub fn uniform_pick(n: usize, max: u32) -> Vec<usize> {
    let m = max as usize;
    if m == 0 || n <= m {
        return (0..n).collect();
    }
    if m == 1 {
        return vec![0];
    }
    (0..m)
        .map(|i| ((i * (n - 1)) as f64 / (m - 1) as f64).round() as usize)
        .collect()
}

/// Keys the element owns (rule 5).
pub const RESERVED_KEYS: [&str; 3] = ["model", "messages", "stream"];

/// Words that make a key name look like a credential (rule 5).
const SECRET_WORDS: [&str; 12] = [
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "bearer",
    "cookie",
];

fn looks_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| SECRET_WORDS.contains(&w))
        || lower.contains("api_key")
        || lower.contains("apikey")
}

fn check_value(path: &str, v: &Value, api_key: Option<&str>) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = format!("{path}.{k}");
                if looks_secret(k) {
                    return Err(format!(
                        "extra-body: '{p}' looks like a credential; secrets go through api-key only (redacted everywhere), never extra-body"
                    ));
                }
                check_value(&p, v, api_key)?;
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                check_value(&format!("{path}[{i}]"), v, api_key)?;
            }
        }
        Value::String(s) => {
            if let Some(k) = api_key.filter(|k| k.len() >= 4) {
                if s.contains(k) {
                    return Err(format!(
                        "extra-body: '{path}' holds the API key; secrets go through api-key only"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses and checks `extra-body` (rule 5). `api_key`: the key in effect,
/// which no value may hold.
pub fn parse_extra_body(text: &str, api_key: Option<&str>) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json's message quotes no input, only a position.
        format!("extra-body is not valid JSON: {e}")
    })?;
    let Value::Object(map) = v else {
        return Err("extra-body must be a JSON object, e.g. {\"top_k\": 20}".into());
    };
    for k in map.keys() {
        if RESERVED_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "extra-body: '{k}' is set by the element and cannot be overridden (use model-name / prompt)"
            ));
        }
    }
    check_value("", &Value::Object(map.clone()), api_key).map_err(|e| e.replace("'.", "'"))?;
    Ok(map)
}

/// `extra-body` as it reads back (rule 5): the value of every
/// credential-like key, at any depth, is `<redacted>`, and so is the API
/// key wherever it appears; text that is not JSON has the key scrubbed.
pub fn redacted_extra_body(text: &str, api_key: Option<&crate::config::ApiKey>) -> String {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if looks_secret(k) {
                        *v = Value::String("<redacted>".into());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let out = match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => text.to_string(),
    };
    crate::redact::redact(&out, api_key)
}

/// Merges `extra` into the top level of `body` (its keys win).
pub fn merge_extra(body: &mut Value, extra: &Map<String, Value>) {
    if let Value::Object(b) = body {
        for (k, v) in extra {
            b.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rule1_modes_and_where_they_start() {
        for m in [VisionMode::Images, VisionMode::Video, VisionMode::Auto] {
            assert_eq!(VisionMode::parse(m.as_str()), Ok(m));
        }
        assert!(VisionMode::parse("movie").unwrap_err().contains("images"));
        assert_eq!(VisionMode::default(), VisionMode::Images);
        assert!(VisionMode::Auto.starts_with_video(false));
        assert!(!VisionMode::Auto.starts_with_video(true));
        assert!(VisionMode::Video.starts_with_video(true));
        assert!(!VisionMode::Images.starts_with_video(false));
    }

    #[test]
    fn rule2_which_answers_refuse_video() {
        let r = |status| BackendError::Refused {
            status,
            fields: vec![],
            message: "m".into(),
        };
        assert!(refuses_video(&r(400)));
        assert!(refuses_video(&r(415)));
        assert!(refuses_video(&r(422)));
        for s in [401, 403, 404, 408, 429] {
            assert!(!refuses_video(&r(s)), "{s}");
        }
        assert!(!refuses_video(&BackendError::Transient("503".into())));
        assert!(!refuses_video(&BackendError::Timeout("t".into())));
    }

    #[test]
    fn rule3_detail() {
        for d in [ImageDetail::Auto, ImageDetail::Low, ImageDetail::High] {
            assert_eq!(ImageDetail::parse(d.as_str()), Ok(d));
        }
        assert!(ImageDetail::parse("medium").is_err());
    }

    #[test]
    fn rule4_uniform_pick() {
        assert_eq!(uniform_pick(5, 0), vec![0, 1, 2, 3, 4]);
        assert_eq!(uniform_pick(5, 10), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            uniform_pick(32, 10),
            vec![0, 3, 7, 10, 14, 17, 21, 24, 28, 31]
        );
        assert_eq!(uniform_pick(11, 2), vec![0, 10]);
        assert_eq!(uniform_pick(11, 1), vec![0]);
        for (n, m) in [(100, 10), (13, 7), (64, 32)] {
            let p = uniform_pick(n, m);
            assert_eq!(p.len(), m as usize);
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
            assert_eq!((p[0], *p.last().unwrap()), (0, n - 1));
        }
    }

    #[test]
    fn rule5_extra_body() {
        let m = parse_extra_body(
            r#"{"top_k": 20, "mm_processor_kwargs": {"fps": 2}, "chat_template_kwargs": {"enable_thinking": false}, "max_tokens": 64}"#,
            Some("sk-secret-value"),
        )
        .unwrap();
        let mut body = json!({"model": "m", "max_tokens": 1024, "messages": []});
        merge_extra(&mut body, &m);
        assert_eq!(body["top_k"], 20);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["mm_processor_kwargs"]["fps"], 2);
        assert_eq!(body["model"], "m");
        assert!(parse_extra_body("", None).unwrap().is_empty());
        assert!(parse_extra_body("[1]", None)
            .unwrap_err()
            .contains("object"));
        assert!(parse_extra_body("{", None).unwrap_err().contains("JSON"));
        assert!(parse_extra_body(r#"{"model":"x"}"#, None)
            .unwrap_err()
            .contains("'model'"));
        for k in [
            "api_key",
            "x-api-key",
            "access_token",
            "Authorization",
            "client_secret",
        ] {
            let text = format!(r#"{{"a": {{"{k}": "hunter2-value"}}}}"#);
            let e = parse_extra_body(&text, None).unwrap_err();
            assert!(e.contains(k) && e.contains("credential"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        // Harmless names with similar letters pass.
        assert!(parse_extra_body(r#"{"max_tokens": 1, "top_k": 2, "keyframes": 3}"#, None).is_ok());
        let e =
            parse_extra_body(r#"{"x": ["sk-secret-value"]}"#, Some("sk-secret-value")).unwrap_err();
        assert!(e.contains("API key") && !e.contains("sk-secret"), "{e}");
        // Read back: credential-like values and the key are redacted.
        let key = crate::config::ApiKey::new("sk-secret-value").unwrap();
        let r = redacted_extra_body(
            r#"{"top_k": 2, "a": {"api_key": "hunter2"}, "b": "x sk-secret-value"}"#,
            Some(&key),
        );
        assert!(r.contains("\"top_k\":2") && r.contains("<redacted>"), "{r}");
        assert!(
            !r.contains("hunter2") && !r.contains("sk-secret-value"),
            "{r}"
        );
        assert_eq!(
            redacted_extra_body("not json sk-secret-value", Some(&key)),
            "not json <redacted>"
        );
    }
}
