// SPDX-License-Identifier: MPL-2.0
//! `openai-compat`: one chat-completions request per chunk (OpenAI, Azure
//! OpenAI, NVIDIA endpoints, vLLM, …).
//!
//! Frames are converted and JPEG-encoded on the calling dispatcher worker
//! thread; only the HTTP exchange runs on the plugin's tokio runtime.
//!
//! Everything a server sends is untrusted: redirects are never followed (the
//! key would go with them), answers are read up to [`MAX_RESPONSE_BYTES`],
//! error texts are redacted before they are cut, and a bad field of an
//! otherwise good answer costs only that field.

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::vision::{self, VisionMode, VisionOptions};
use super::{Backend, BackendError, Caption, ChunkJob, FrameOptions, GenParams};
use crate::config::{ApiKey, BackendKind, EndpointConfig};
use crate::endpoints::{Outcome, Pick, Servers};
use crate::prompt::{chunk_text, split_reasoning, PromptVars};
use crate::redact;
use crate::retry::{self, Attempt, Stop};
use crate::runtime::RUNTIME;

/// Default of [`OpenAiOptions::server_wait`] (`server-wait`): how long
/// requests keep retrying while the server refuses connections, e.g. while
/// `vllm serve` is still loading the model (it opens its port only then).
pub const DEFAULT_SERVER_WAIT: Duration = Duration::from_secs(120);

/// The most bytes read from one answer. A longer one (a runaway or hostile
/// server) ends the chunk with an error record instead of growing without
/// bound; a chat completion is far smaller.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Of an error answer (non-2xx), only this much is read: enough for any
/// error message.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Characters of raw server text (a body that is not a known error form)
/// kept in an error record.
const SNIPPET_CHARS: usize = 200;

/// Characters of a server's own error message kept in an error record.
const MESSAGE_CHARS: usize = 1000;

/// Pooled keep-alive connections idle this long are dropped. It must stay
/// well below the keep-alive timeouts of common servers (uvicorn, behind
/// vLLM and most FastAPI servers: 5 s; nginx 75 s; Node 5 s): reusing a
/// connection at the moment the server closes it makes the request fail
/// (`connection closed before message completed` / `Connection reset by
/// peer`). Such failures are retried, but each costs a backoff.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// `Retry-After` values are capped at this before they are converted.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct OpenAiOptions {
    pub endpoint: EndpointConfig,
    pub gen: GenParams,
    pub frames: FrameOptions,
    /// Where frames are converted and resized (`device` property).
    pub prep: crate::prep::FramePrep,
    /// Per attempt.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx, timeouts and failed
    /// connections.
    pub max_retries: u32,
    /// While connections are refused (the server is not up yet), requests
    /// keep retrying, beyond `max_retries`, until the server has been
    /// unreachable this long (`server-wait`); the time counts from the first
    /// refused connection of any chunk and restarts once the server
    /// answers. Zero: refused connections are retried like other failures.
    pub server_wait: Duration,
    /// Images or video, image detail and cap, `extra-body`, timestamp line
    /// (see [`super::vision`]).
    pub vision: VisionOptions,
}

/// Backoff between attempts (see [`crate::retry`]): 0.5 s, 1 s, 2 s, 4 s,
/// 8 s, 8 s …; a server's `Retry-After` up to 60 s.
pub type RetryTiming = retry::Backoff;

pub struct OpenAiBackend {
    net: Arc<Net>,
    /// `auto` gave up on video for this session (the server refused it).
    video_off: std::sync::atomic::AtomicBool,
    /// The image cap was announced.
    cap_said: std::sync::atomic::AtomicBool,
    /// Where the one-time warnings go (the element's log and bus).
    warn: Arc<dyn Fn(&str) + Send + Sync>,
}

/// What one chunk's media is, ready for the request.
pub enum Media<'a> {
    /// JPEGs, each sent with `detail`.
    Images(&'a [Vec<u8>], vision::ImageDetail),
    /// One MP4.
    Video(&'a [u8]),
}

/// What the request futures on the runtime share with the backend.
struct Net {
    opts: OpenAiOptions,
    client: reqwest::Client,
    /// The key's header, built (and checked) once.
    auth: Option<(&'static str, reqwest::header::HeaderValue)>,
    timing: RetryTiming,
    /// Since when connections to the server have been refused, with no HTTP
    /// answer since; shared by all chunks (see `server_wait`).
    unreachable_since: Mutex<Option<Instant>>,
    /// The servers `endpoint` lists and their health ([`crate::endpoints`]).
    servers: Servers,
}

impl OpenAiBackend {
    pub fn new(opts: OpenAiOptions) -> Result<Self, BackendError> {
        Ok(OpenAiBackend {
            net: Net::new(opts)?,
            video_off: Default::default(),
            cap_said: Default::default(),
            warn: Arc::new(|_| {}),
        })
    }

    /// Replaces the backoff (tests use short ones).
    pub fn with_retry_timing(self, timing: RetryTiming) -> Self {
        OpenAiBackend {
            net: self.net.with_timing(timing),
            ..self
        }
    }

    /// Where one-time warnings (video refused, image cap) go.
    pub fn with_warnings(self, warn: Arc<dyn Fn(&str) + Send + Sync>) -> Self {
        OpenAiBackend { warn, ..self }
    }

    /// Whether `auto` has fallen back to images for the rest of the session.
    pub fn video_refused(&self) -> bool {
        self.video_off.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Net {
    fn new(opts: OpenAiOptions) -> Result<Arc<Net>, BackendError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vsssummarize/", env!("CARGO_PKG_VERSION")))
            // Never: a redirect would carry the key (the Azure `api-key`
            // header survives reqwest's cross-host redirects) and, for
            // 307/308, the whole request to wherever the server points.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        if !opts.request_timeout.is_zero() {
            builder = builder.timeout(opts.request_timeout);
        }
        let client = builder
            .build()
            .map_err(|e| BackendError::Fatal(format!("cannot create the HTTP client: {e}")))?;
        let auth = auth_header(&opts.endpoint).map_err(BackendError::Fatal)?;
        let servers = Servers::new(opts.endpoint.chat_urls());
        Ok(Arc::new(Net {
            servers,
            opts,
            client,
            auth,
            timing: RetryTiming {
                retry_after_cap: RETRY_AFTER_CAP,
                ..RetryTiming::default()
            },
            unreachable_since: Mutex::new(None),
        }))
    }

    fn with_timing(&self, timing: RetryTiming) -> Arc<Net> {
        Arc::new(Net {
            opts: self.opts.clone(),
            client: self.client.clone(),
            auth: self.auth.clone(),
            timing,
            unreachable_since: Mutex::new(None),
            servers: self.servers.clone(),
        })
    }
}

impl Net {
    fn key(&self) -> Option<&ApiKey> {
        self.opts.endpoint.api_key.as_ref()
    }

    /// Server text for an error record: redacted, then cut (see
    /// [`crate::redact`]).
    fn snippet(&self, s: &str, max_chars: usize) -> String {
        redact::trimmed_snippet(s, max_chars, self.key())
    }

    /// The instant the server was first found unreachable (now, if it was not).
    fn mark_unreachable(&self) -> Instant {
        let mut g = self
            .unreachable_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *g.get_or_insert_with(Instant::now)
    }

    /// The server answered (any HTTP status): it is reachable.
    fn mark_reachable(&self) {
        *self
            .unreachable_since
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The request body for one chunk (images with `detail: auto`).
pub fn build_body(model: &str, gen: &GenParams, jpegs: &[Vec<u8>], text: &str) -> Value {
    build_media_body(
        model,
        gen,
        Media::Images(jpegs, vision::ImageDetail::Auto),
        text,
        None,
    )
}

/// The request body for one chunk: its media, then the text; the system
/// prompt with its placeholders filled by `vars`.
pub fn build_media_body(
    model: &str,
    gen: &GenParams,
    media: Media,
    text: &str,
    vars: Option<PromptVars>,
) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut content: Vec<Value> = match media {
        Media::Images(jpegs, detail) => jpegs
            .iter()
            .map(|j| {
                json!({
                    "type": "image_url",
                    "image_url": {"url": format!("data:image/jpeg;base64,{}", b64.encode(j)), "detail": detail.as_str()}
                })
            })
            .collect(),
        Media::Video(mp4) => vec![json!({
            "type": "video_url",
            "video_url": {"url": format!("data:video/mp4;base64,{}", b64.encode(mp4))}
        })],
    };
    content.push(json!({"type": "text", "text": text}));
    let mut messages = Vec::new();
    if let Some(sys) = gen
        .system_prompt
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        let sys = match vars {
            Some(v) => v.fill(sys),
            None => sys.to_string(),
        };
        messages.push(json!({"role": "system", "content": sys}));
    }
    messages.push(json!({"role": "user", "content": content}));
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": gen.max_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "stream": false,
    });
    if let Some(seed) = gen.seed {
        body["seed"] = json!(seed);
    }
    if gen.top_k > 0 {
        body["top_k"] = json!(gen.top_k);
    }
    body
}

// ---- Lenient parsing of a chat.completion ----
//
// Only the fields used are deserialized; everything else is skipped with
// `IgnoredAny`, which does not range-check numbers, so e.g. a `1e400` in
// `logprobs` or `usage` cannot discard the caption. The token counts are
// read in passes of their own for the same reason.

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: LooseStr,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Content,
    #[serde(default)]
    reasoning_content: LooseStr,
}

/// A string, or `None` for anything else (skipped, not an error).
#[derive(Default)]
struct LooseStr(Option<String>);

impl<'de> Deserialize<'de> for LooseStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LooseStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<LooseStr, E> {
                Ok(LooseStr(Some(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<LooseStr, E> {
                Ok(LooseStr(Some(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<LooseStr, E> {
                Ok(LooseStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<LooseStr, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LooseStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<LooseStr, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LooseStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `message.content`: a string, or content parts whose `text`s are joined;
/// anything else is no text.
#[derive(Default)]
struct Content(String);

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One content part: its `text`, if it is an object with one.
        struct Part(Option<String>);
        impl<'de> Deserialize<'de> for Part {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                struct P {
                    #[serde(default)]
                    text: LooseStr,
                }
                // Objects are read as `P`; other values give no text.
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Part;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a content part")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Part, A::Error> {
                        let p = P::deserialize(de::value::MapAccessDeserializer::new(a))?;
                        Ok(Part(p.text.0))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Part, A::Error> {
                        while a.next_element::<IgnoredAny>()?.is_some() {}
                        Ok(Part(None))
                    }
                    fn visit_str<E: de::Error>(self, _: &str) -> Result<Part, E> {
                        Ok(Part(None))
                    }
                    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Part, E> {
                        Ok(Part(None))
                    }
                    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Part, E> {
                        Ok(Part(None))
                    }
                    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Part, E> {
                        Ok(Part(None))
                    }
                    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Part, E> {
                        Ok(Part(None))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<Part, E> {
                        Ok(Part(None))
                    }
                }
                d.deserialize_any(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("message content")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Content, E> {
                Ok(Content(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Content, A::Error> {
                let mut text = String::new();
                while let Some(Part(t)) = a.next_element::<Part>()? {
                    text.push_str(t.as_deref().unwrap_or_default());
                }
                Ok(Content(text))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Content, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Content::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Content, E> {
                Ok(Content::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A token count: a non-negative integer (or integral float); anything
/// else counts as 0.
#[derive(Default)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Anything but a number is an error here, and the pass that reads
        // this count yields 0.
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                // `as` saturates; NaN gives 0.
                Ok(Count(if v.is_finite() && v >= 0.0 {
                    v as u64
                } else {
                    0
                }))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct PromptUsage {
    #[serde(default)]
    usage: Option<PromptTokens>,
}
#[derive(Deserialize)]
struct PromptTokens {
    #[serde(default)]
    prompt_tokens: Option<Count>,
}
#[derive(Deserialize)]
struct CompletionUsage {
    #[serde(default)]
    usage: Option<CompletionTokens>,
}
#[derive(Deserialize)]
struct CompletionTokens {
    #[serde(default)]
    completion_tokens: Option<Count>,
}

/// Replaces `\uXXXX` escapes of lone UTF-16 surrogates (which serde_json
/// rejects, discarding the whole answer) with `\ufffd`. Valid pairs and
/// escaped backslashes are left alone.
fn repair_lone_surrogates(s: &str) -> Cow<'_, str> {
    fn hex4(b: &[u8], at: usize) -> Option<u32> {
        let h = b.get(at..at + 4)?;
        let h = std::str::from_utf8(h).ok()?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    }
    let b = s.as_bytes();
    let mut out: Option<String> = None;
    let mut done = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            // Any other escape, `\\` included: skip both characters.
            i += 2;
            continue;
        }
        let Some(cp) = hex4(b, i + 2) else {
            i += 2;
            continue;
        };
        let lone = match cp {
            0xD800..=0xDBFF => {
                let low = b.get(i + 6) == Some(&b'\\')
                    && b.get(i + 7) == Some(&b'u')
                    && hex4(b, i + 8).is_some_and(|c| (0xDC00..=0xDFFF).contains(&c));
                if low {
                    i += 12;
                    continue;
                }
                true
            }
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[done..i]);
            o.push_str("\\ufffd");
            done = i + 6;
        }
        i += 6;
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(&s[done..]);
            Cow::Owned(o)
        }
    }
}

/// The text of a body as the JSON parsers get it: invalid UTF-8 and lone
/// surrogate escapes replaced by U+FFFD.
fn repaired_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    repair_lone_surrogates(&text).into_owned()
}

/// Parses a chat.completion response body.
pub fn parse_response(body: &[u8]) -> Result<Caption, BackendError> {
    parse_completion(body, None)
}

/// [`parse_response`], with server text in errors redacted of `key`.
fn parse_completion(body: &[u8], key: Option<&ApiKey>) -> Result<Caption, BackendError> {
    let bad = BackendError::BadAnswer;
    let text = repaired_text(body);
    let r: Completion = serde_json::from_str(&text).map_err(|e| {
        // serde's message can quote a value from the body.
        let why = redact::trimmed_snippet(&e.to_string(), SNIPPET_CHARS, key);
        let body = redact::trimmed_snippet(&text, SNIPPET_CHARS, key);
        bad(match e.classify() {
            serde_json::error::Category::Data => format!("malformed response ({why}): {body}"),
            _ => format!("malformed response (not JSON: {why}): {body}"),
        })
    })?;
    let Some(choices) = r.choices else {
        // Some servers answer 200 with an error object.
        let v = serde_json::from_str::<Value>(&text).ok();
        return Err(bad(match v.as_ref().and_then(json_error_message) {
            Some(m) => format!(
                "malformed response: no 'choices' array; the server says: {}",
                redact::trimmed_snippet(&m, MESSAGE_CHARS, key)
            ),
            None => format!(
                "malformed response: no 'choices' array: {}",
                redact::trimmed_snippet(&text, SNIPPET_CHARS, key)
            ),
        }));
    };
    let choice = choices
        .into_iter()
        .next()
        .ok_or_else(|| bad("empty response: 'choices' is empty".into()))?;
    let (content, extra_reasoning) = match choice.message {
        Some(m) => (m.content.0, m.reasoning_content.0),
        None => (String::new(), None),
    };
    // vLLM's reasoning parsers put the thinking in a separate field.
    let extra_reasoning = extra_reasoning
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let (text_out, reasoning) = split_reasoning(&content);
    if text_out.is_empty() {
        let why = choice
            .finish_reason
            .0
            .map(|f| {
                format!(
                    " (finish_reason: {})",
                    redact::trimmed_snippet(&f, SNIPPET_CHARS, key)
                )
            })
            .unwrap_or_default();
        return Err(bad(format!(
            "empty response: the model returned no text{why}"
        )));
    }
    let input_tokens = serde_json::from_str::<PromptUsage>(&text)
        .ok()
        .and_then(|u| u.usage?.prompt_tokens)
        .unwrap_or_default()
        .0;
    let output_tokens = serde_json::from_str::<CompletionUsage>(&text)
        .ok()
        .and_then(|u| u.usage?.completion_tokens)
        .unwrap_or_default()
        .0;
    Ok(Caption {
        text: text_out,
        reasoning: extra_reasoning.or(reasoning),
        input_tokens,
        output_tokens,
        ..Default::default()
    })
}

/// The message in a JSON error body: `error.message` (OpenAI, vLLM), `error`
/// as a string (TGI, some proxies), `message`, or `detail` (FastAPI; its
/// 422 list reads `body.top_k: Extra inputs are not permitted`).
pub fn json_error_message(v: &Value) -> Option<String> {
    fn text(v: Option<&Value>) -> Option<String> {
        v?.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
    fn detail(d: &Value) -> Option<String> {
        match d {
            Value::String(_) => text(Some(d)),
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .filter_map(|it| match it {
                        Value::String(_) => text(Some(it)),
                        Value::Object(_) => {
                            let msg = text(it.get("msg")).or_else(|| text(it.get("message")))?;
                            let loc = it
                                .get("loc")
                                .and_then(Value::as_array)
                                .map(|l| {
                                    l.iter()
                                        .map(|p| match p {
                                            Value::String(s) => s.clone(),
                                            other => other.to_string(),
                                        })
                                        .collect::<Vec<_>>()
                                        .join(".")
                                })
                                .filter(|l| !l.is_empty());
                            Some(match loc {
                                Some(l) => format!("{l}: {msg}"),
                                None => msg,
                            })
                        }
                        _ => None,
                    })
                    .collect();
                (!parts.is_empty()).then(|| parts.join("; "))
            }
            Value::Object(_) => text(d.get("message")).or_else(|| text(d.get("msg"))),
            _ => None,
        }
    }
    text(v.pointer("/error/message"))
        .or_else(|| text(v.get("error")))
        .or_else(|| text(v.get("message")))
        .or_else(|| detail(v.get("detail")?))
}

/// Request fields we send, and the element property each comes from.
const SENT_FIELDS: [(&str, &str); 6] = [
    ("top_k", "top-k: set top-k=0 to stop sending it"),
    ("seed", "seed: set seed=-1 to stop sending it"),
    ("max_tokens", "max-tokens"),
    ("temperature", "temperature"),
    ("top_p", "top-p"),
    ("model", "model-name"),
];

/// Whether `word` occurs in `text` as a whole identifier (`model's` is not
/// the field `model`).
fn names_field(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let mut after = text[at + word.len()..].chars();
        let next = after.next();
        let possessive = next == Some('\'') && after.next().is_some_and(|c| c.is_alphabetic());
        !before.is_some_and(is_ident) && !next.is_some_and(is_ident) && !possessive
    })
}

/// What to do about an HTTP error status, given the server's message.
fn status_hint(status: u16, azure: bool, message: &str) -> String {
    match status {
        401 | 403 if azure => {
            " (check api-key / AZURE_OPENAI_API_KEY / VIA_VLM_API_KEY / OPENAI_API_KEY)".into()
        }
        401 | 403 => " (check api-key / VIA_VLM_API_KEY / OPENAI_API_KEY)".into(),
        404 => " (check endpoint and model-name: the endpoint is the API's base URL, for vLLM, NIM and transformers serve http://host:port/v1)".into(),
        400 | 422 => {
            let named: Vec<String> = SENT_FIELDS
                .iter()
                .filter(|(f, _)| names_field(message, f))
                .map(|(f, p)| format!("`{f}` comes from the property {p}"))
                .collect();
            if named.is_empty() {
                String::new()
            } else {
                format!(" ({})", named.join("; "))
            }
        }
        _ => String::new(),
    }
}

/// The request fields a 400/422's message names (as whole words): the
/// fields we send, and `response_format`.
fn named_fields(status: u16, message: &str) -> Vec<&'static str> {
    if !matches!(status, 400 | 422) {
        return Vec::new();
    }
    SENT_FIELDS
        .iter()
        .map(|(f, _)| *f)
        .chain(["response_format"])
        .filter(|f| names_field(message, f))
        .collect()
}

/// Durations for error texts, meaningful at any scale: `0.1 ms`, `250 ms`,
/// `1.5 s`, `120 s`.
pub fn format_duration(d: Duration) -> String {
    fn trimmed(x: f64, decimals: usize) -> String {
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
    if d.is_zero() {
        return "0 s".into();
    }
    let s = d.as_secs_f64();
    if s >= 1.0 {
        return format!("{} s", trimmed(s, 1));
    }
    let ms = s * 1e3;
    if ms >= 10.0 {
        format!("{} ms", trimmed(ms, 0))
    } else if ms >= 1.0 {
        format!("{} ms", trimmed(ms, 1))
    } else if ms >= 0.001 {
        format!("{} ms", trimmed(ms, 3))
    } else {
        format!("{} ns", d.as_nanos())
    }
}

/// `n` bytes, in MiB when whole.
fn format_bytes(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

fn too_large(url: &str) -> String {
    format!(
        "the response from {url} exceeded {}, the most vsssummarize reads of an answer (is endpoint a chat-completions API?)",
        format_bytes(MAX_RESPONSE_BYTES)
    )
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the APIs we
/// target). Not a finite number ≥ 0: ignored; capped at 60 s.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    retry::parse_retry_after(v, RETRY_AFTER_CAP)
}

/// What one request attempt found.
enum Step {
    Done(Result<Caption, BackendError>),
    /// A transient failure: retried up to `max_retries`.
    Retry(BackendError, Option<Duration>),
    /// The connection was refused: the server (named) is not (yet)
    /// listening.
    Refused(String, String),
}

/// How a transport error is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Refused,
    Transient,
    Permanent,
}

/// hyper's errors for a connection the server closed around the request
/// (hyper is not a direct dependency, so by their stable texts):
/// `IncompleteMessage`, a kept-alive connection closed as the request went
/// out; `Canceled` ("operation was canceled: connection was not ready" /
/// "connection closed"), a connection that died before the request could be
/// sent at all, seen when a server accepts and closes at once.
fn closed_early(t: &str) -> bool {
    t.contains("connection closed before message completed")
        || t.contains("IncompleteMessage")
        || t.contains("operation was canceled")
}

fn classify(e: &reqwest::Error) -> Failure {
    use std::io::ErrorKind as K;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut closed = false;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                K::ConnectionRefused => return Failure::Refused,
                K::ConnectionReset
                | K::ConnectionAborted
                | K::BrokenPipe
                | K::UnexpectedEof
                | K::NotConnected
                | K::TimedOut
                | K::Interrupted => return Failure::Transient,
                // TLS and other protocol errors: retrying will not help.
                K::InvalidData => return Failure::Permanent,
                _ => {}
            }
        }
        if closed_early(&err.to_string()) {
            closed = true;
        }
        cur = err.source();
    }
    if closed || e.is_connect() {
        // DNS failures, unreachable networks, connections closed early.
        Failure::Transient
    } else {
        Failure::Permanent
    }
}

/// Reads the body up to `limit` bytes. `Ok((bytes, false))`: all of it;
/// `Ok((first limit bytes, true))`: there was more (not read).
async fn read_limited(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > limit {
            let room = limit - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

impl Net {
    /// A failed send or body read.
    fn transport_error(&self, e: reqwest::Error, reading: bool, pick: &mut Pick) -> Step {
        let kind = classify(&e);
        let timeout = e.is_timeout();
        let e = e.without_url();
        let cause = redact::redact(&root_cause(&e), self.key());
        let url = url_for_log(pick.url());
        // A timeout says nothing about the server's health (rule 3 of
        // crate::endpoints); a failed connection does.
        let outcome = if timeout || kind == Failure::Permanent {
            Outcome::Unknown
        } else {
            Outcome::Failed
        };
        pick.report(outcome, Instant::now());
        if timeout {
            let what = if reading {
                "timed out reading the response"
            } else {
                "timed out"
            };
            return Step::Retry(
                BackendError::Timeout(format!(
                    "{what} after {} (request-timeout)",
                    format_duration(self.opts.request_timeout)
                )),
                None,
            );
        }
        let msg = if reading {
            format!("reading the response from {url} failed: {cause}")
        } else if e.is_connect() || kind == Failure::Refused {
            let hint = match kind {
                // `send` adds it: it knows whether the server was waited for.
                Failure::Refused => "",
                Failure::Transient => " (is the server running? check endpoint / VIA_VLM_ENDPOINT)",
                Failure::Permanent => " (check endpoint / VIA_VLM_ENDPOINT)",
            };
            format!("cannot connect to {url}: {cause}{hint}")
        } else {
            format!("the request to {url} failed: {cause}")
        };
        match kind {
            Failure::Refused => Step::Refused(msg, pick.name().to_string()),
            Failure::Transient => Step::Retry(BackendError::Transient(msg), None),
            Failure::Permanent => Step::Done(Err(BackendError::Failed(msg))),
        }
    }

    async fn attempt(&self, body: &[u8]) -> Step {
        let ep = &self.opts.endpoint;
        // Each attempt picks its server: a retry may go to another one.
        let mut pick = self.servers.pick(Instant::now());
        let mut req = self
            .client
            .post(pick.url().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some((name, hv)) = &self.auth {
            req = req.header(*name, hv.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return self.transport_error(e, false, &mut pick),
        };
        self.mark_reachable();
        let url = url_for_log(pick.url());
        let status = resp.status();
        let outcome = if status.is_server_error() {
            Outcome::Failed
        } else {
            Outcome::Answered
        };
        pick.report(outcome, Instant::now());
        if status.is_redirection() {
            let location = resp.headers().get(reqwest::header::LOCATION).map(|v| {
                match v.to_str().ok().map(|l| pick.url().join(l.trim())) {
                    Some(Ok(u)) => self.snippet(&url_for_log(&u), MESSAGE_CHARS),
                    _ => "an unreadable Location".to_string(),
                }
            });
            return Step::Done(Err(BackendError::Failed(match location {
                Some(l) => format!(
                    "HTTP {status} from {url} redirects to {l}; vsssummarize does not follow redirects: set endpoint to the final URL"
                ),
                None => format!(
                    "HTTP {status} from {url} (a redirect without a Location); vsssummarize does not follow redirects: set endpoint to the final URL"
                ),
            })));
        }
        let retry_after = retry::retry_after(resp.headers(), RETRY_AFTER_CAP);
        let limit = if status.is_success() {
            MAX_RESPONSE_BYTES
        } else {
            MAX_ERROR_BODY_BYTES
        };
        if status.is_success() && resp.content_length().is_some_and(|n| n > limit as u64) {
            return Step::Done(Err(BackendError::BadAnswer(too_large(&url))));
        }
        let (bytes, more) = match read_limited(&mut resp, limit).await {
            Ok(r) => r,
            Err(e) => return self.transport_error(e, true, &mut pick),
        };
        drop(resp);
        if status.is_success() {
            if more {
                return Step::Done(Err(BackendError::BadAnswer(too_large(&url))));
            }
            return Step::Done(parse_completion(&bytes, self.key()).map(|mut c| {
                c.endpoint = Some(pick.name().to_string());
                c
            }));
        }
        let text = repaired_text(&bytes);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .as_ref()
            .and_then(json_error_message);
        let detail = match &message {
            Some(m) => self.snippet(m, MESSAGE_CHARS),
            None if text.trim().is_empty() => "(empty body)".to_string(),
            None => self.snippet(&text, SNIPPET_CHARS),
        };
        let msg = format!("HTTP {status} from {url}: {detail}");
        if status.as_u16() == 429 || status.is_server_error() {
            Step::Retry(BackendError::Transient(msg), retry_after)
        } else {
            let hint = status_hint(status.as_u16(), ep.azure, &detail);
            Step::Done(Err(BackendError::Refused {
                status: status.as_u16(),
                fields: named_fields(status.as_u16(), &detail),
                message: format!("{msg}{hint}"),
            }))
        }
    }

    /// One request with its retries (see [`crate::retry`]): refused
    /// connections wait for the server within `server-wait` without spending
    /// a retry.
    async fn send(&self, body: Vec<u8>) -> Result<Caption, BackendError> {
        let wait = self.opts.server_wait;
        let body = &body;
        let r = retry::run(&self.timing, self.opts.max_retries, |tries| async move {
            let msg = match self.attempt(body).await {
                Step::Done(r) => return Attempt::Done(r),
                Step::Retry(error, retry_after) => return Attempt::Retry { error, retry_after },
                Step::Refused(msg, server) => {
                    if self.servers.other_healthy(&server, Instant::now()) {
                        // Another server can take it: at once, no retry
                        // spent (this one is out after a few of these).
                        return Attempt::Wait(Duration::ZERO);
                    }
                    msg
                }
            };
            let transient = |m| Attempt::Retry {
                error: BackendError::Transient(m),
                retry_after: None,
            };
            if wait.is_zero() {
                return transient(format!(
                    "{msg} (is the server running? check endpoint / VIA_VLM_ENDPOINT)"
                ));
            }
            let down = self.mark_unreachable().elapsed();
            if down < wait {
                return Attempt::Wait(self.timing.delay(tries.waits + 1, None).min(wait - down));
            }
            if tries.waits > 0 {
                // This chunk waited out server-wait itself.
                return Attempt::Done(Err(BackendError::Transient(format!(
                    "{msg}; the server did not come up within server-wait ({}) (is it running? check endpoint / VIA_VLM_ENDPOINT)",
                    format_duration(wait)
                ))));
            }
            // Down longer than server-wait already: normal retries.
            transient(format!(
                "{msg}; the server has been unreachable for {}, longer than server-wait ({}) (is it running? check endpoint / VIA_VLM_ENDPOINT)",
                format_duration(Duration::from_millis(down.as_millis() as u64)),
                format_duration(wait)
            ))
        })
        .await;
        match r {
            Ok(c) => Ok(c),
            Err(Stop::Permanent(e))
            | Err(Stop::Exhausted {
                error: e,
                attempts: 1,
            }) => Err(e),
            Err(Stop::Exhausted { error, attempts }) => {
                Err(error.map_text(|m| format!("{m} (gave up after {attempts} attempts)")))
            }
        }
    }

    /// [`Net::send`] on the plugin runtime, from a worker thread, until
    /// `cancel` fires; the key is redacted from any error text.
    fn send_cancellable(
        self: &Arc<Self>,
        body: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<Caption, BackendError> {
        let cancel = cancel.clone();
        let this = self.clone();
        run_on_runtime(async move {
            tokio::select! {
                _ = cancel.cancelled() => Err(BackendError::Cancelled),
                r = this.send(body) => r,
            }
        })
        .map_err(|e| e.map_text(|m| redact::redact(&m, self.key())))
    }
}

/// The key's header: `Authorization: Bearer KEY`, or Azure's `api-key:
/// KEY`; marked sensitive. A key that cannot be a header value is refused
/// without quoting it.
pub(crate) fn auth_header(
    endpoint: &EndpointConfig,
) -> Result<Option<(&'static str, reqwest::header::HeaderValue)>, String> {
    let Some(key) = &endpoint.api_key else {
        return Ok(None);
    };
    let (name, value) = if endpoint.azure {
        ("api-key", key.expose().to_string())
    } else {
        ("authorization", format!("Bearer {}", key.expose()))
    };
    let mut hv = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
        "the API key contains characters that are not allowed in an HTTP header (check api-key / VIA_VLM_API_KEY / OPENAI_API_KEY)".to_string()
    })?;
    hv.set_sensitive(true);
    Ok(Some((name, hv)))
}

/// The URL without user info, query and fragment (which could carry
/// credentials).
pub(crate) fn url_for_log(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Runs a request future on the plugin runtime and waits for it on this
/// (non-runtime) thread. A panic inside it becomes an error (the runtime
/// goes on).
fn run_on_runtime(
    fut: impl Future<Output = Result<Caption, BackendError>> + Send + 'static,
) -> Result<Caption, BackendError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = RUNTIME.spawn(fut);
    RUNTIME.spawn(async move {
        let _ = tx.send(task.await);
    });
    match rx.recv() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_panic() => {
            let p = e.into_panic();
            let p = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(BackendError::Failed(format!(
                "internal error in the openai-compat request: {p} (a bug: please report it)"
            )))
        }
        _ => Err(BackendError::Failed(
            "the request task ended unexpectedly".into(),
        )),
    }
}

/// The text LLM of summaries and event checks (`llm-*` properties) over
/// the same HTTP code as the captions: the same retries, redirect refusal,
/// size caps, redaction and `server-wait`.
///
/// `response_format: {"type": "json_object"}` is sent for event checks; a
/// server that rejects it (HTTP 400/422 naming `response_format`) gets the
/// request again without it, and never again after that.
pub struct OpenAiText {
    net: Arc<Net>,
    no_json: std::sync::atomic::AtomicBool,
}

impl OpenAiText {
    /// `opts.gen` and `opts.frames` are not used.
    pub fn new(opts: OpenAiOptions) -> Result<OpenAiText, BackendError> {
        Ok(OpenAiText {
            net: Net::new(opts)?,
            no_json: Default::default(),
        })
    }

    /// Replaces the backoff (tests use short ones).
    pub fn with_retry_timing(self, timing: RetryTiming) -> Self {
        OpenAiText {
            net: self.net.with_timing(timing),
            no_json: Default::default(),
        }
    }

    fn call(&self, body: &Value, cancel: &CancellationToken) -> Result<Caption, BackendError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| BackendError::Failed(format!("cannot serialize: {e}")))?;
        self.net.send_cancellable(body, cancel)
    }
}

/// The request body of one text-only call.
pub fn build_text_body(model: &str, req: &crate::summary::TextRequest, json_format: bool) -> Value {
    let mut messages = Vec::new();
    if let Some(sys) = req.system.as_deref().filter(|s| !s.trim().is_empty()) {
        messages.push(json!({"role": "system", "content": sys}));
    }
    messages.push(json!({"role": "user", "content": req.user}));
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stream": false,
    });
    if json_format {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

impl crate::summary::TextLlm for OpenAiText {
    fn model(&self) -> &str {
        &self.net.opts.endpoint.model
    }

    fn complete(
        &self,
        req: &crate::summary::TextRequest,
        cancel: &CancellationToken,
    ) -> Result<crate::summary::TextAnswer, BackendError> {
        use std::sync::atomic::Ordering;
        let model = &self.net.opts.endpoint.model;
        let json_format = req.json && !self.no_json.load(Ordering::Relaxed);
        let mut r = self.call(&build_text_body(model, req, json_format), cancel);
        if json_format && matches!(&r, Err(e) if e.refuses_field("response_format")) {
            self.no_json.store(true, Ordering::Relaxed);
            r = self.call(&build_text_body(model, req, false), cancel);
        }
        r.map(|c| crate::summary::TextAnswer {
            text: c.text,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
        })
    }
}

impl OpenAiBackend {
    /// The chunk's frames (prepared as for images) as one MP4 at their
    /// stream times.
    fn encode_video(
        &self,
        job: &ChunkJob,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>, BackendError> {
        let opts = &self.net.opts;
        let fo = opts.frames;
        let mut rgbs = Vec::with_capacity(job.frames.len());
        for f in &job.frames {
            if cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            rgbs.push(
                opts.prep
                    .rgb(f, fo.width, fo.height)
                    .map_err(|e| BackendError::Failed(format!("cannot prepare frame: {e}")))?,
            );
        }
        let frames: Vec<crate::mp4::Mp4Frame> = rgbs
            .iter()
            .enumerate()
            .map(|(i, img)| crate::mp4::Mp4Frame {
                pixels: crate::mp4::Mp4Pixels::Rgb,
                width: img.width,
                height: img.height,
                data: &img.data,
                pts_ns: job
                    .frame_times
                    .get(i)
                    .map(|t| (t.max(0.0) * 1e9).round() as u64)
                    .unwrap_or(i as u64 * 1_000_000_000),
            })
            .collect();
        crate::mp4::encode(&frames, &crate::mp4::Mp4Options::default())
            .map(|v| v.bytes)
            .map_err(|e| BackendError::Failed(format!("cannot encode the chunk as MP4: {e}")))
    }

    /// Images mode: every frame, or `max-images-per-request` of them chosen
    /// uniformly (said once; the record's frame_times lists those sent).
    fn caption_images(
        &self,
        job: &ChunkJob,
        cancel: &CancellationToken,
    ) -> Result<Caption, BackendError> {
        use std::sync::atomic::Ordering;
        let opts = &self.net.opts;
        let fo = opts.frames;
        let pick = vision::uniform_pick(job.frames.len(), opts.vision.max_images);
        let capped = pick.len() < job.frames.len();
        if capped && !self.cap_said.swap(true, Ordering::Relaxed) {
            (self.warn)(&format!(
                "vsssummarize: chunk {} has {} frames, more than max-images-per-request={}: each request sends {} uniformly chosen frames (the records' frame_times list those sent)",
                job.chunk_index,
                job.frames.len(),
                opts.vision.max_images,
                pick.len()
            ));
        }
        let mut jpegs = Vec::with_capacity(pick.len());
        for &i in &pick {
            if cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            jpegs.push(
                opts.prep
                    .jpeg(&job.frames[i], fo.width, fo.height, fo.jpeg_quality)
                    .map_err(|e| BackendError::Failed(format!("cannot prepare frame: {e}")))?,
            );
        }
        let labels: Vec<String> = pick
            .iter()
            .filter_map(|&i| job.frame_labels.get(i).cloned())
            .collect();
        let sub = ChunkJob {
            chunk_index: job.chunk_index,
            frames: Vec::new(),
            frame_labels: labels,
            frame_times: Vec::new(),
            time_style: job.time_style,
            stream_id: job.stream_id.clone(),
            prompts: job.prompts.clone(),
        };
        let r = self.send_media(
            &sub,
            Media::Images(&jpegs, opts.vision.detail),
            false,
            cancel,
        );
        r.map(|mut c| {
            if capped {
                c.frames_sent = Some(pick);
            }
            c
        })
    }

    /// Builds the body (prompt placeholders, `extra-body`) and sends it.
    fn send_media(
        &self,
        job: &ChunkJob,
        media: Media,
        video: bool,
        cancel: &CancellationToken,
    ) -> Result<Caption, BackendError> {
        let opts = &self.net.opts;
        // Prompts changed while running (steering) replace the ones set at
        // start.
        let steered = job.prompts.as_ref().map(|p| GenParams {
            prompt: p.prompt.clone(),
            system_prompt: p.system_prompt.clone(),
            ..opts.gen.clone()
        });
        let gen = steered.as_ref().unwrap_or(&opts.gen);
        let vars = PromptVars {
            labels: &job.frame_labels,
            stream_id: &job.stream_id,
        };
        let text = chunk_text(
            job.time_style,
            vars,
            &gen.prompt,
            opts.vision.timestamp_line,
            video,
        );
        let mut body = build_media_body(&opts.endpoint.model, gen, media, &text, Some(vars));
        vision::merge_extra(&mut body, &opts.vision.extra_body);
        let body = serde_json::to_vec(&body)
            .map_err(|e| BackendError::Failed(format!("cannot serialize: {e}")))?;
        self.net.send_cancellable(body, cancel)
    }
}

impl Backend for OpenAiBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::OpenAiCompat
    }

    fn model(&self) -> &str {
        &self.net.opts.endpoint.model
    }

    fn budget_key(&self) -> Option<(String, usize)> {
        let ep = &self.net.opts.endpoint;
        Some((
            crate::budget::key(ep.chat_urls(), &ep.model),
            self.net.servers.len(),
        ))
    }

    /// Video first when the mode and the session allow it; `auto` falls
    /// back to images (see [`super::vision`], rules 1 and 2).
    fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, BackendError> {
        use std::sync::atomic::Ordering;
        let opts = &self.net.opts;
        let mode = opts.vision.mode;
        if mode.starts_with_video(opts.endpoint.is_openai())
            && !self.video_off.load(Ordering::Relaxed)
        {
            let mp4 = match self.encode_video(job, cancel) {
                Ok(v) => Some(v),
                Err(BackendError::Cancelled) => return Err(BackendError::Cancelled),
                Err(e) if mode == VisionMode::Video => {
                    return Err(e.map_text(|m| {
                        format!(
                        "{m} (vision-mode=video; vision-mode=images sends the frames as images)"
                    )
                    }))
                }
                Err(e) => {
                    // auto: this chunk goes as images (the encoder may
                    // work for the next one).
                    (self.warn)(&format!(
                        "vsssummarize: chunk {} sent as images: {e}",
                        job.chunk_index
                    ));
                    None
                }
            };
            if let Some(mp4) = mp4 {
                match self.send_media(job, Media::Video(&mp4), true, cancel) {
                    Err(e) if vision::refuses_video(&e) => {
                        if mode == VisionMode::Video {
                            return Err(e.map_text(|m| {
                                format!("{m} (the server refused the chunk as video; set vision-mode=images or auto)")
                            }));
                        }
                        if !self.video_off.swap(true, Ordering::Relaxed) {
                            (self.warn)(&format!(
                                "vsssummarize: the server refused video ({e}); vision-mode=auto sends images for the rest of the session, starting with chunk {}",
                                job.chunk_index
                            ));
                        }
                    }
                    r => return r,
                }
            }
        }
        self.caption_images(job, cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_layout() {
        let gen = GenParams {
            prompt: "p".into(),
            system_prompt: Some("sys".into()),
            top_k: 0,
            seed: None,
            ..GenParams::default()
        };
        let b = build_body("m", &gen, &[vec![1, 2, 3], vec![4]], "hello");
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][0]["content"], "sys");
        let content = b["messages"][1]["content"].as_array().unwrap();
        assert_eq!(content.len(), 3);
        assert_eq!(content[0]["type"], "image_url");
        assert_eq!(
            content[0]["image_url"]["url"],
            "data:image/jpeg;base64,AQID"
        );
        assert_eq!(content[2]["text"], "hello");
        assert_eq!(b["max_tokens"], 1024);
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["top_p"], 1.0);
        assert!(b.get("top_k").is_none());
        assert!(b.get("seed").is_none());

        let gen = GenParams {
            top_k: 20,
            seed: Some(7),
            ..GenParams::default()
        };
        let b = build_body("m", &gen, &[], "t");
        assert_eq!(b["top_k"], 20);
        assert_eq!(b["seed"], 7);
        assert_eq!(b["messages"][0]["role"], "user");
    }

    #[test]
    fn text_body_layout() {
        let req = crate::summary::TextRequest {
            system: Some("sys".into()),
            user: "<0.00> <10.00> a caption".into(),
            max_tokens: 300,
            temperature: 0.2,
            top_p: 0.7,
            json: true,
        };
        let b = build_text_body("m", &req, true);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][1]["content"], "<0.00> <10.00> a caption");
        assert_eq!(b["max_tokens"], 300);
        assert_eq!(b["response_format"]["type"], "json_object");
        assert!(build_text_body("m", &req, false)
            .get("response_format")
            .is_none());
        assert_eq!(
            named_fields(400, "response_format is not supported"),
            ["response_format"]
        );
        assert_eq!(
            named_fields(422, "body.top_k: Extra inputs are not permitted"),
            ["top_k"]
        );
        assert!(named_fields(404, "response_format").is_empty());
        let refused = BackendError::Refused {
            status: 400,
            fields: named_fields(400, "response_format is not supported"),
            message: "HTTP 400 Bad Request from http://x/v1/chat/completions: response_format is not supported".into(),
        };
        assert!(refused.refuses_field("response_format"));
        assert_eq!(
            refused.to_string(),
            "HTTP 400 Bad Request from http://x/v1/chat/completions: response_format is not supported"
        );
        assert!(
            !BackendError::Transient("HTTP 500 from x: response_format".into())
                .refuses_field("response_format")
        );
    }

    #[test]
    fn response_parsing() {
        let ok = br#"{"choices":[{"message":{"content":"<think>hm</think><answer>A cat.</answer>"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
        let c = parse_response(ok).unwrap();
        assert_eq!(c.text, "A cat.");
        assert_eq!(c.reasoning.as_deref(), Some("hm"));
        assert_eq!((c.input_tokens, c.output_tokens), (12, 3));
        assert!(parse_response(b"<html>")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(parse_response(br#"{"choices":[]}"#)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_response(
            br#"{"choices":[{"message":{"content":null},"finish_reason":"length"}]}"#
        )
        .unwrap_err()
        .to_string()
        .contains("finish_reason: length"));
        assert!(parse_response(br#"{"id":1}"#)
            .unwrap_err()
            .to_string()
            .contains("choices"));
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"reasoning_content":"r"}}]}"#;
        let c = parse_response(parts).unwrap();
        assert_eq!((c.text.as_str(), c.reasoning.as_deref()), ("ab", Some("r")));
        // Parts that are not text objects add nothing.
        let parts = br#"{"choices":[{"message":{"content":["x",1,null,{"type":"image_url"},{"text":"c"},{"text":5}]}}]}"#;
        assert_eq!(parse_response(parts).unwrap().text, "c");
        // A 200 that carries an error object.
        let e = parse_response(br#"{"error":{"message":"model overloaded"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no 'choices' array; the server says: model overloaded"),
            "{e}"
        );
        // Wrong types are "malformed", not "not JSON".
        let e = parse_response(br#"{"choices":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("malformed response (invalid type"), "{e}");
        // Server text quoted by serde or taken from a field is cut and redacted.
        let key = ApiKey::new("sk-0123456789abcdefghij").unwrap();
        let body = format!(
            r#"{{"choices":"{}sk-0123456789abcdefghij"}}"#,
            "v".repeat(100_000)
        );
        let e = parse_completion(body.as_bytes(), Some(&key))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 1000 && !e.contains("sk-0123"), "{e}");
        let body = format!(
            r#"{{"choices":[{{"message":{{"content":""}},"finish_reason":"{}"}}]}}"#,
            "f".repeat(100_000)
        );
        let e = parse_response(body.as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with("empty response") && e.len() < 1000, "{e}");
    }

    #[test]
    fn a_bad_field_does_not_discard_the_caption() {
        // An out-of-range token count: the caption stays, the count is 0.
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"A cat."}}],"usage":{"prompt_tokens":7,"completion_tokens":1e400}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.text.as_str(), c.input_tokens, c.output_tokens),
            ("A cat.", 7, 0)
        );
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"A cat."}}],"usage":{"prompt_tokens":-1e999,"completion_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!((c.input_tokens, c.output_tokens), (0, 3));
        // Odd but harmless count forms.
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":12.0,"completion_tokens":"3"}}"#,
        )
        .unwrap();
        assert_eq!((c.input_tokens, c.output_tokens), (12, 0));
        let c =
            parse_response(br#"{"choices":[{"message":{"content":"x"}}],"usage":null}"#).unwrap();
        assert_eq!((c.input_tokens, c.output_tokens), (0, 0));
        // Huge numbers in fields we do not read.
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"x","extra":1e400},"logprobs":{"content":[{"logprob":-1e999}]}}],"created":1e400}"#,
        )
        .unwrap();
        assert_eq!(c.text, "x");
        // A lone surrogate (high or low) becomes U+FFFD; the rest is kept.
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"a\ud800b \udc00c \ud83d\ude00 \\ud800"}}]}"#,
        )
        .unwrap();
        assert_eq!(c.text, "a\u{FFFD}b \u{FFFD}c \u{1F600} \\ud800");
        // A high surrogate at the very end of a string, and invalid UTF-8.
        let mut body = br#"{"choices":[{"message":{"content":"q\uD800"}}]}"#.to_vec();
        assert_eq!(parse_response(&body).unwrap().text, "q\u{FFFD}");
        body.splice(36..36, [0xff]);
        assert_eq!(parse_response(&body).unwrap().text, "q\u{FFFD}\u{FFFD}");
        // Non-string reasoning / finish_reason are ignored.
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"x","reasoning_content":{"a":1}},"finish_reason":7}]}"#,
        )
        .unwrap();
        assert_eq!((c.text.as_str(), c.reasoning), ("x", None));
    }

    #[test]
    fn surrogate_repair() {
        assert!(matches!(repair_lone_surrogates("plain"), Cow::Borrowed(_)));
        assert!(matches!(
            repair_lone_surrogates(r#""\ud83d\ude00 \u00e9""#),
            Cow::Borrowed(_)
        ));
        assert_eq!(repair_lone_surrogates(r#""\uDBFF""#), r#""\ufffd""#);
        assert_eq!(
            repair_lone_surrogates(r#""\ud800\u0041""#),
            r#""\ufffd\u0041""#
        );
        assert_eq!(
            repair_lone_surrogates(r#""\ud800\ud800\udc00""#),
            r#""\ufffd\ud800\udc00""#
        );
        assert_eq!(repair_lone_surrogates(r#""\\ud800""#), r#""\\ud800""#);
        assert_eq!(repair_lone_surrogates(r#""\\\ud800""#), r#""\\\ufffd""#);
        assert_eq!(repair_lone_surrogates(r#""é\udfff""#), r#""é\ufffd""#);
        assert_eq!(repair_lone_surrogates("\\u12"), "\\u12");
        assert_eq!(repair_lone_surrogates("\\"), "\\");
    }

    #[test]
    fn connections_closed_around_the_request_are_transient() {
        // Seen from CI (tests/openai_hostile.rs, a server that accepts and
        // closes at once): hyper's Canceled, which was treated as permanent.
        assert!(closed_early(
            "client error (Canceled): operation was canceled: connection was not ready"
        ));
        assert!(closed_early("connection closed before message completed"));
        assert!(!closed_early("invalid HTTP version parsed"));
    }

    #[test]
    fn retry_timing() {
        let retry_delay = |n, ra| RetryTiming::default().delay(n, ra);
        assert_eq!(retry_delay(1, None), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None), Duration::from_millis(1000));
        assert_eq!(retry_delay(3, None), Duration::from_millis(2000));
        assert_eq!(retry_delay(4, None), Duration::from_millis(4000));
        assert_eq!(retry_delay(5, None), Duration::from_millis(8000));
        assert_eq!(retry_delay(10, None), Duration::from_millis(8000));
        assert_eq!(retry_delay(u32::MAX, None), Duration::from_millis(8000));
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        let t = RetryTiming {
            first: Duration::from_millis(10),
            max: Duration::from_millis(25),
            retry_after_cap: Duration::from_millis(5),
        };
        assert_eq!(t.delay(1, None), Duration::from_millis(10));
        assert_eq!(t.delay(2, None), Duration::from_millis(20));
        assert_eq!(t.delay(3, None), Duration::from_millis(25));
        assert_eq!(
            t.delay(1, Some(Duration::from_secs(60))),
            Duration::from_millis(5)
        );
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn absurd_retry_after_values_neither_panic_nor_wait_long() {
        // 1e30 s used to reach Duration::from_secs_f64 and panic.
        assert_eq!(parse_retry_after("1e30"), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("1e400"), None); // parses as inf
        assert_eq!(parse_retry_after("inf"), None);
        assert_eq!(parse_retry_after("infinity"), None);
        assert_eq!(parse_retry_after("-inf"), None);
        assert_eq!(parse_retry_after("nan"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("-0.0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("3600"), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_panic_in_the_request_becomes_an_error() {
        let e = run_on_runtime(async {
            if std::hint::black_box(true) {
                panic!("boom at the wire");
            }
            Ok(Caption::default())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("internal error in the openai-compat request: boom at the wire"),
            "{e}"
        );
        // The runtime is still usable.
        assert_eq!(
            run_on_runtime(async { Ok(Caption::default()) }).unwrap(),
            Caption::default()
        );
    }

    #[test]
    fn error_message_forms() {
        let m = |s: &str| json_error_message(&serde_json::from_str(s).unwrap());
        assert_eq!(
            m(r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#)
                .as_deref(),
            Some("Incorrect API key")
        );
        assert_eq!(
            m(r#"{"error":"Unexpected fields in the request: {'top_k'}"}"#).as_deref(),
            Some("Unexpected fields in the request: {'top_k'}")
        );
        assert_eq!(
            m(r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","code":404}"#)
                .as_deref(),
            Some("The model `x` does not exist.")
        );
        assert_eq!(m(r#"{"detail":"Not Found"}"#).as_deref(), Some("Not Found"));
        assert_eq!(
            m(r#"{"detail":[{"type":"extra_forbidden","loc":["body","top_k"],"msg":"Extra inputs are not permitted","input":20},{"loc":["body","messages",0,"content"],"msg":"Field required"}]}"#)
                .as_deref(),
            Some("body.top_k: Extra inputs are not permitted; body.messages.0.content: Field required")
        );
        assert_eq!(
            m(r#"{"detail":[{"msg":"bad"}, "also bad", 3]}"#).as_deref(),
            Some("bad; also bad")
        );
        assert_eq!(
            m(r#"{"detail":{"message":"nested"}}"#).as_deref(),
            Some("nested")
        );
        // `error.message` wins over the others; empty strings do not count.
        assert_eq!(
            m(r#"{"error":{"message":"first"},"message":"second"}"#).as_deref(),
            Some("first")
        );
        assert_eq!(
            m(r#"{"error":{"message":"  "},"message":"second"}"#).as_deref(),
            Some("second")
        );
        assert_eq!(m(r#"{"error":{"code":500}}"#), None);
        assert_eq!(m(r#"{"detail":[]}"#), None);
        assert_eq!(m(r#"[1,2]"#), None);
    }

    #[test]
    fn hints_name_the_property_behind_a_rejected_field() {
        let h = |m: &str| status_hint(400, false, m);
        let e = h("Unexpected fields in the request: {'top_k'}");
        assert!(
            e.contains("(`top_k` comes from the property top-k: set top-k=0 to stop sending it)"),
            "{e}"
        );
        let e = status_hint(422, false, "body.seed: Extra inputs are not permitted");
        assert!(
            e.contains("`seed` comes from the property seed: set seed=-1 to stop sending it"),
            "{e}"
        );
        let e = h(
            "'max_tokens' is too large: 5000. This model's maximum context length is 4096 tokens",
        );
        assert!(e.contains("max-tokens") && !e.contains("model-name"), "{e}");
        assert!(h("temperature must be in [0, 2]").contains("property temperature"));
        assert!(h("top_p must be <= 1").contains("property top-p"));
        assert!(h("'model' is a required property").contains("model-name"));
        let e = h("Unexpected fields: {'top_k', 'seed'}");
        assert!(e.contains("top-k=0") && e.contains("seed=-1"), "{e}");
        // Not whole words, or not a field: no hint.
        assert_eq!(h("max_completion_tokens is not supported; use top_kx"), "");
        assert_eq!(h("This model's context is full"), "");
        assert_eq!(status_hint(500, false, "top_k"), "");
        // Keys and endpoints.
        assert!(status_hint(401, false, "").contains("api-key / VIA_VLM_API_KEY / OPENAI_API_KEY"));
        assert!(!status_hint(401, false, "").contains("AZURE"));
        for s in [401, 403] {
            let e = status_hint(s, true, "");
            assert!(
                e.contains("api-key") && e.contains("AZURE_OPENAI_API_KEY"),
                "{e}"
            );
        }
        assert!(status_hint(404, false, "").contains("endpoint and model-name"));
    }

    #[test]
    fn snippets_are_redacted_before_and_at_the_cut() {
        let key_text = "sk-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL";
        let key = ApiKey::new(key_text).unwrap();
        // The whole key across character 200.
        let body = format!("{}{key_text} tail", "x".repeat(180));
        let s = redact::trimmed_snippet(&body, SNIPPET_CHARS, Some(&key));
        assert!(s.contains("<redacted>") && !s.contains("sk-0123"), "{s}");
        // A part of the key cut at character 200: its 10 characters at the
        // cut are redacted too ...
        let body = format!("{}{}!!!", "y".repeat(190), &key_text[..30]);
        let s = redact::trimmed_snippet(&body, SNIPPET_CHARS, Some(&key));
        assert_eq!(s, format!("{}<redacted>…", "y".repeat(190)));
        // ... but not fewer than 8.
        let body = format!("{}{}!!!", "y".repeat(193), &key_text[..30]);
        let s = redact::trimmed_snippet(&body, SNIPPET_CHARS, Some(&key));
        assert_eq!(s, format!("{}sk-0123…", "y".repeat(193)));
        // Without a key: just cut.
        let s = redact::trimmed_snippet(&"z".repeat(300), SNIPPET_CHARS, None);
        assert_eq!(s.chars().count(), 201);
        assert_eq!(
            redact::trimmed_snippet("  short  ", SNIPPET_CHARS, None),
            "short"
        );
    }

    #[test]
    fn durations_stay_meaningful_when_small() {
        let f = format_duration;
        assert_eq!(f(Duration::from_micros(100)), "0.1 ms");
        assert_eq!(f(Duration::from_secs_f64(0.0001)), "0.1 ms");
        assert_eq!(f(Duration::from_micros(1)), "0.001 ms");
        assert_eq!(f(Duration::from_nanos(5)), "5 ns");
        assert_eq!(f(Duration::from_micros(1500)), "1.5 ms");
        assert_eq!(f(Duration::from_millis(250)), "250 ms");
        assert_eq!(f(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(f(Duration::from_secs(120)), "120 s");
        assert_eq!(f(Duration::from_secs(2)), "2 s");
        assert_eq!(f(Duration::ZERO), "0 s");
        assert_eq!(format_bytes(MAX_RESPONSE_BYTES), "8 MiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
    }

    #[test]
    fn field_names_are_whole_words() {
        assert!(names_field("{'top_k'}", "top_k"));
        assert!(names_field("body.top_k: x", "top_k"));
        assert!(names_field("top_k", "top_k"));
        assert!(!names_field("top_kk", "top_k"));
        assert!(!names_field("my_top_k", "top_k"));
        assert!(!names_field("model's", "model"));
        assert!(names_field("'model'", "model"));
    }

    #[test]
    fn log_url_drops_credentials() {
        let u = url::Url::parse("http://user:pw@h:1/v1/chat/completions?api-version=1#f").unwrap();
        assert_eq!(url_for_log(&u), "http://h:1/v1/chat/completions");
    }
}
