// SPDX-License-Identifier: MPL-2.0
//! `openai-compat`: one chat-completions request per chunk (OpenAI, Azure
//! OpenAI, NVIDIA endpoints, vLLM, …).
//!
//! Frames are converted and JPEG-encoded on the calling dispatcher worker
//! thread; only the HTTP exchange runs on the plugin's tokio runtime.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{Backend, Caption, ChunkJob, FrameOptions, GenParams};
use crate::config::{BackendKind, EndpointConfig};
use crate::prompt::{chunk_prompt, split_reasoning};
use crate::runtime::RUNTIME;

#[derive(Clone, Debug)]
pub struct OpenAiOptions {
    pub endpoint: EndpointConfig,
    pub gen: GenParams,
    pub frames: FrameOptions,
    /// Where frames are converted and resized (`device` property).
    pub prep: crate::gpu::FramePrep,
    /// Per attempt.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx and timeouts.
    pub max_retries: u32,
}

pub struct OpenAiBackend {
    net: std::sync::Arc<Net>,
}

/// What the request futures on the runtime share with the backend.
struct Net {
    opts: OpenAiOptions,
    client: reqwest::Client,
}

impl OpenAiBackend {
    pub fn new(opts: OpenAiOptions) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vsssummarize/", env!("CARGO_PKG_VERSION")));
        if !opts.request_timeout.is_zero() {
            builder = builder.timeout(opts.request_timeout);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        if let Some(key) = &opts.endpoint.api_key {
            // Reject keys that cannot be an HTTP header value, without quoting them.
            reqwest::header::HeaderValue::from_str(key.expose()).map_err(|_| {
                "the API key contains characters that are not allowed in an HTTP header (check api-key / VIA_VLM_API_KEY / OPENAI_API_KEY)".to_string()
            })?;
        }
        Ok(OpenAiBackend {
            net: std::sync::Arc::new(Net { opts, client }),
        })
    }
}

impl Net {
    fn scrub(&self, s: String) -> String {
        match &self.opts.endpoint.api_key {
            Some(k) => k.scrub(&s),
            None => s,
        }
    }
}

/// The request body for one chunk.
pub fn build_body(model: &str, gen: &GenParams, jpegs: &[Vec<u8>], text: &str) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut content: Vec<Value> = jpegs
        .iter()
        .map(|j| {
            json!({
                "type": "image_url",
                "image_url": {"url": format!("data:image/jpeg;base64,{}", b64.encode(j)), "detail": "auto"}
            })
        })
        .collect();
    content.push(json!({"type": "text", "text": text}));
    let mut messages = Vec::new();
    if let Some(sys) = gen
        .system_prompt
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
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

/// Parses a chat.completion response body.
pub fn parse_response(body: &[u8]) -> Result<Caption, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "malformed response (not JSON: {e}): {}",
            snippet(&String::from_utf8_lossy(body))
        )
    })?;
    let choice = v
        .get("choices")
        .and_then(|c| c.as_array())
        .ok_or_else(|| {
            format!(
                "malformed response: no 'choices' array: {}",
                snippet(&v.to_string())
            )
        })?
        .first()
        .ok_or("empty response: 'choices' is empty")?;
    let content = match choice.pointer("/message/content") {
        Some(Value::String(s)) => s.clone(),
        // Some servers answer with content parts.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    // vLLM's reasoning parsers put the thinking in a separate field.
    let extra_reasoning = choice
        .pointer("/message/reasoning_content")
        .and_then(|r| r.as_str())
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let (text, reasoning) = split_reasoning(&content);
    if text.is_empty() {
        let why = choice
            .get("finish_reason")
            .and_then(|f| f.as_str())
            .map(|f| format!(" (finish_reason: {f})"))
            .unwrap_or_default();
        return Err(format!("empty response: the model returned no text{why}"));
    }
    let usage = |k: &str| {
        v.pointer(&format!("/usage/{k}"))
            .and_then(|x| x.as_u64())
            .unwrap_or(0)
    };
    Ok(Caption {
        text,
        reasoning: extra_reasoning.or(reasoning),
        input_tokens: usage("prompt_tokens"),
        output_tokens: usage("completion_tokens"),
        ..Default::default()
    })
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 200 {
        s.chars().take(200).collect::<String>() + "…"
    } else {
        s.to_string()
    }
}

/// Backoff before retry `attempt` (1-based): 0.5 s, 1 s, 2 s … capped at 8 s,
/// or the server's `Retry-After` (capped at 60 s) when it sent one.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(Duration::from_secs(60));
    }
    let ms = 500u64.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(4));
    Duration::from_millis(ms.min(8000))
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the APIs we target).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

enum Attempt {
    Done(Result<Caption, String>),
    Retry(String, Option<Duration>),
}

impl Net {
    async fn attempt(&self, body: &[u8]) -> Attempt {
        let ep = &self.opts.endpoint;
        let mut req = self
            .client
            .post(ep.chat_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &ep.api_key {
            let (name, value) = if ep.azure {
                ("api-key", key.expose().to_string())
            } else {
                ("authorization", format!("Bearer {}", key.expose()))
            };
            let mut hv = reqwest::header::HeaderValue::from_str(&value)
                .expect("checked when the backend was created");
            hv.set_sensitive(true);
            req = req.header(name, hv);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(
                    format!(
                        "timed out after {:.1} s (request-timeout)",
                        self.opts.request_timeout.as_secs_f64()
                    ),
                    None,
                )
            }
            Err(e) if e.is_connect() => {
                return Attempt::Done(Err(format!(
                    "cannot connect to {}: {} (is the server running? check endpoint / VIA_VLM_ENDPOINT)",
                    url_for_log(&ep.chat_url),
                    root_cause(&e)
                )))
            }
            Err(e) => return Attempt::Done(Err(format!("request failed: {}", root_cause(&e)))),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(
                    format!(
                        "timed out reading the response after {:.1} s (request-timeout)",
                        self.opts.request_timeout.as_secs_f64()
                    ),
                    None,
                )
            }
            Err(e) => {
                return Attempt::Done(Err(format!(
                    "reading the response failed: {}",
                    root_cause(&e)
                )))
            }
        };
        if status.is_success() {
            return Attempt::Done(parse_response(&bytes));
        }
        let detail = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| snippet(&String::from_utf8_lossy(&bytes)));
        let msg = format!(
            "HTTP {} from {}: {}",
            status,
            url_for_log(&ep.chat_url),
            detail
        );
        let hint = match status.as_u16() {
            401 | 403 => " (check api-key / VIA_VLM_API_KEY / OPENAI_API_KEY)",
            404 => " (check endpoint and model-name)",
            _ => "",
        };
        if status.as_u16() == 429 || status.is_server_error() {
            Attempt::Retry(msg, retry_after)
        } else {
            Attempt::Done(Err(format!("{msg}{hint}")))
        }
    }

    async fn send(&self, body: Vec<u8>) -> Result<Caption, String> {
        let mut attempt = 0u32;
        loop {
            match self.attempt(&body).await {
                Attempt::Done(r) => return r,
                Attempt::Retry(msg, retry_after) => {
                    if attempt >= self.opts.max_retries {
                        return Err(if attempt == 0 {
                            msg
                        } else {
                            format!("{msg} (gave up after {} attempts)", attempt + 1)
                        });
                    }
                    attempt += 1;
                    tokio::time::sleep(retry_delay(attempt, retry_after)).await;
                }
            }
        }
    }
}

/// The URL without user info (which could carry credentials).
fn url_for_log(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
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

impl Backend for OpenAiBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::OpenAiCompat
    }

    fn model(&self) -> &str {
        &self.net.opts.endpoint.model
    }

    fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, String> {
        let opts = &self.net.opts;
        let fo = opts.frames;
        let mut jpegs = Vec::with_capacity(job.frames.len());
        for f in &job.frames {
            if cancel.is_cancelled() {
                return Err("cancelled".into());
            }
            jpegs.push(
                opts.prep
                    .jpeg(f, fo.width, fo.height, fo.jpeg_quality)
                    .map_err(|e| format!("cannot prepare frame: {e}"))?,
            );
        }
        let text = chunk_prompt(job.time_style, &job.frame_labels, &opts.gen.prompt);
        let body = build_body(&opts.endpoint.model, &opts.gen, &jpegs, &text);
        drop(jpegs);
        let body = serde_json::to_vec(&body).map_err(|e| format!("cannot serialize: {e}"))?;

        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let cancel = cancel.clone();
        let this = self.net.clone();
        RUNTIME.spawn(async move {
            let r = tokio::select! {
                _ = cancel.cancelled() => Err("cancelled".to_string()),
                r = this.send(body) => r.map_err(|e| this.scrub(e)),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .unwrap_or_else(|_| Err("the request task ended unexpectedly".into()))
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
    fn response_parsing() {
        let ok = br#"{"choices":[{"message":{"content":"<think>hm</think><answer>A cat.</answer>"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
        let c = parse_response(ok).unwrap();
        assert_eq!(c.text, "A cat.");
        assert_eq!(c.reasoning.as_deref(), Some("hm"));
        assert_eq!((c.input_tokens, c.output_tokens), (12, 3));
        assert!(parse_response(b"<html>").unwrap_err().contains("not JSON"));
        assert!(parse_response(br#"{"choices":[]}"#)
            .unwrap_err()
            .contains("empty"));
        assert!(parse_response(
            br#"{"choices":[{"message":{"content":null},"finish_reason":"length"}]}"#
        )
        .unwrap_err()
        .contains("finish_reason: length"));
        assert!(parse_response(br#"{"id":1}"#)
            .unwrap_err()
            .contains("choices"));
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"reasoning_content":"r"}}]}"#;
        let c = parse_response(parts).unwrap();
        assert_eq!((c.text.as_str(), c.reasoning.as_deref()), ("ab", Some("r")));
    }

    #[test]
    fn retry_timing() {
        assert_eq!(retry_delay(1, None), Duration::from_millis(500));
        assert_eq!(retry_delay(2, None), Duration::from_millis(1000));
        assert_eq!(retry_delay(10, None), Duration::from_millis(8000));
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn log_url_drops_credentials() {
        let u = url::Url::parse("http://user:pw@h:1/v1/chat/completions?api-version=1").unwrap();
        assert_eq!(url_for_log(&u), "http://h:1/v1/chat/completions");
    }
}
