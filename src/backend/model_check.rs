// SPDX-License-Identifier: MPL-2.0
//! Start-up check of an OpenAI-compatible endpoint: `GET {base}/models`,
//! where `{base}` is the endpoint without its `/chat/completions`.
//!
//! It tells whether the server is up, whether it takes the API key, and
//! whether it serves the configured model, before the first chunk is
//! captioned. Blocking; called from the application thread at NULL→READY
//! (never from a tokio worker): the request runs on the plugin's runtime.
//! Free of GStreamer types.
//!
//! Only the model list is handled here. Servers that lack one (some gateways)
//! give [`ProbeOutcome::NoModelList`], which is not an error; a wrong model
//! is then reported by the chat requests themselves (vLLM: HTTP 404,
//! Hugging Face `transformers serve`: HTTP 400 "Server is pinned to …").

use std::time::Duration;

use serde_json::Value;

use crate::config::{visible, ApiKey, EndpointConfig};
use crate::redact;
use crate::runtime::RUNTIME;

/// Largest model list read (bytes); a larger answer counts as no model list.
pub const MODEL_LIST_LIMIT: usize = 1 << 20;
/// Used when the caller passes a zero timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many served model names a message lists.
const LISTED: usize = 10;
/// Longest model name shown in a message (characters).
const NAME_CHARS: usize = 100;

/// What the start-up check found. Every `String` in it is ready to log: it
/// never contains the API key, URL credentials or the URL's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Not checked: Azure OpenAI (the deployment is part of the URL), or the
    /// request could not be built.
    Skipped { reason: String },
    /// The server lists its models and the configured one is among them (or
    /// it is api.openai.com's default model, which is not checked).
    /// `models` are the served names as shown in messages.
    Served { models: Vec<String> },
    /// model-name was not set and the server serves exactly one model, not
    /// the default: use it instead.
    UseModel { model: String },
    /// An error: the model set with model-name /
    /// VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME is not served.
    ModelNotServed { message: String },
    /// A warning: model-name was not set and the default model is not among
    /// the several models the server serves.
    DefaultNotServed { message: String },
    /// The server has no usable model list (404, 405, another non-2xx status,
    /// a redirect, or a body that is not a model list). Not an error.
    NoModelList { reason: String },
    /// A warning: HTTP 401 or 403.
    Unauthorized { message: String },
    /// A warning: connection refused, timeout, DNS failure; chunks will wait
    /// for the server.
    Unreachable { message: String },
}

impl ProbeOutcome {
    /// Whether the element should fail to start.
    pub fn is_error(&self) -> bool {
        matches!(self, ProbeOutcome::ModelNotServed { .. })
    }

    /// Whether the outcome is worth a warning.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            ProbeOutcome::DefaultNotServed { .. }
                | ProbeOutcome::Unauthorized { .. }
                | ProbeOutcome::Unreachable { .. }
        )
    }

    /// One line for the log.
    pub fn message(&self) -> String {
        match self {
            ProbeOutcome::Skipped { reason } => format!("endpoint check skipped: {reason}"),
            ProbeOutcome::Served { models } => {
                format!("the endpoint serves {}", listing(models))
            }
            ProbeOutcome::UseModel { model } => format!(
                "model-name is not set and the endpoint serves only '{}': using it",
                shown_name(None, model)
            ),
            ProbeOutcome::NoModelList { reason } => {
                format!("the endpoint has no model list ({reason}); the model is not checked")
            }
            ProbeOutcome::ModelNotServed { message }
            | ProbeOutcome::DefaultNotServed { message }
            | ProbeOutcome::Unauthorized { message }
            | ProbeOutcome::Unreachable { message } => message.clone(),
        }
    }
}

/// `GET` URL of the model list: the chat-completions URL with its
/// `/chat/completions` replaced by `/models` (query kept, fragment dropped).
pub fn models_url(chat_url: &url::Url) -> url::Url {
    let mut u = chat_url.clone();
    let path = u.path().trim_end_matches('/');
    let base = path.strip_suffix("/chat/completions").unwrap_or(path);
    let path = format!("{}/models", base.trim_end_matches('/'));
    u.set_path(&path);
    u.set_fragment(None);
    u
}

/// Checks the endpoint; see [`ProbeOutcome`]. Blocks for at most about
/// `timeout` (zero: [`DEFAULT_PROBE_TIMEOUT`]). Redirects are not followed.
pub fn probe_models(endpoint: &EndpointConfig, timeout: Duration) -> ProbeOutcome {
    if endpoint.azure {
        return ProbeOutcome::Skipped {
            reason: "Azure OpenAI names the deployment in the URL".into(),
        };
    }
    let timeout = if timeout.is_zero() {
        DEFAULT_PROBE_TIMEOUT
    } else {
        timeout
    };
    let url = models_url(&endpoint.chat_url);
    let shown = url_for_log(&url);
    let key = endpoint.api_key.as_ref();

    let client = match reqwest::Client::builder()
        .user_agent(concat!("vsssummarize/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return ProbeOutcome::Skipped {
                reason: format!("cannot create the HTTP client: {}", cause(key, &e)),
            }
        }
    };
    let auth = match auth_header(endpoint) {
        Ok(a) => a,
        Err(reason) => return ProbeOutcome::Skipped { reason },
    };

    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    RUNTIME.spawn(async move {
        let _ = tx.send(fetch(client, url, auth).await);
    });
    // The client's timeout ends the request; this only guards against a
    // runtime that cannot run it.
    let fetched = match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(f) => f,
        Err(_) => {
            return ProbeOutcome::Unreachable {
                message: format!(
                    "no answer from {shown} within {:.1} s (is the server running? check endpoint / VIA_VLM_ENDPOINT)",
                    timeout.as_secs_f64()
                ),
            }
        }
    };

    match fetched {
        Fetched::Failed(e) if e.is_timeout() => ProbeOutcome::Unreachable {
            message: format!(
                "no answer from {shown} within {:.1} s (is the server running? check endpoint / VIA_VLM_ENDPOINT)",
                timeout.as_secs_f64()
            ),
        },
        Fetched::Failed(e) if e.is_connect() => ProbeOutcome::Unreachable {
            message: format!(
                "cannot connect to {shown}: {} (is the server running? check endpoint / VIA_VLM_ENDPOINT)",
                cause(key, &e)
            ),
        },
        Fetched::Failed(e) => ProbeOutcome::Unreachable {
            message: format!("request to {shown} failed: {}", cause(key, &e)),
        },
        Fetched::Answer { status, body } => match status {
            200..=299 => {
                let Some(body) = body else {
                    return ProbeOutcome::NoModelList {
                        reason: format!(
                            "the answer from {shown} is larger than {} MiB",
                            MODEL_LIST_LIMIT >> 20
                        ),
                    };
                };
                match model_ids(&body) {
                    Some(ids) if !ids.is_empty() => classify_models(endpoint, &ids),
                    Some(_) => ProbeOutcome::NoModelList {
                        reason: format!("{shown} lists no models"),
                    },
                    None => ProbeOutcome::NoModelList {
                        reason: format!(
                            "{shown} answered HTTP {status} but not with an OpenAI model list"
                        ),
                    },
                }
            }
            401 | 403 => {
                let detail = body
                    .as_deref()
                    .map(|b| error_detail(key, b))
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                let hint = if key.is_some() {
                    "the server refused the API key: check api-key / VIA_VLM_API_KEY / OPENAI_API_KEY"
                } else {
                    "the server wants an API key: set the api-key property or VIA_VLM_API_KEY / OPENAI_API_KEY"
                };
                ProbeOutcome::Unauthorized {
                    message: format!("HTTP {status} from {shown}{detail}; {hint}"),
                }
            }
            300..=399 => ProbeOutcome::NoModelList {
                reason: format!("{shown} answered HTTP {status}, a redirect, not followed"),
            },
            _ => ProbeOutcome::NoModelList {
                reason: format!("{shown} answered HTTP {status}"),
            },
        },
    }
}

/// The decision once the server listed `ids` (non-empty, as served).
pub fn classify_models(endpoint: &EndpointConfig, ids: &[String]) -> ProbeOutcome {
    let key = endpoint.api_key.as_ref();
    let shown = url_for_log(&models_url(&endpoint.chat_url));
    let names: Vec<String> = ids.iter().map(|i| shown_name(key, i)).collect();
    if ids.is_empty() {
        return ProbeOutcome::NoModelList {
            reason: format!("{shown} lists no models"),
        };
    }
    let model = &endpoint.model;
    let served = ids.iter().any(|i| i == model);
    let fix = "set model-name or VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME to one of them";
    if endpoint.model_explicit {
        if served {
            ProbeOutcome::Served { models: names }
        } else {
            ProbeOutcome::ModelNotServed {
                message: format!(
                    "model '{}' is not served by {shown}, which serves {}; {fix}",
                    shown_name(key, model),
                    listing(&names)
                ),
            }
        }
    } else if served || endpoint.is_openai() {
        // api.openai.com serves many models; its default is fine.
        ProbeOutcome::Served { models: names }
    } else if ids.len() == 1 && names[0] == ids[0] && !ids[0].trim().is_empty() {
        ProbeOutcome::UseModel {
            model: ids[0].clone(),
        }
    } else {
        ProbeOutcome::DefaultNotServed {
            message: format!(
                "model-name is not set and {shown} does not serve the default model '{}'; it serves {}; {fix}",
                shown_name(key, model),
                listing(&names)
            ),
        }
    }
}

enum Fetched {
    /// `body` is None when it was larger than [`MODEL_LIST_LIMIT`].
    Answer {
        status: u16,
        body: Option<Vec<u8>>,
    },
    Failed(reqwest::Error),
}

async fn fetch(
    client: reqwest::Client,
    url: url::Url,
    auth: Option<(&'static str, reqwest::header::HeaderValue)>,
) -> Fetched {
    let mut req = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Fetched::Failed(e),
    };
    let status = resp.status().as_u16();
    if resp
        .content_length()
        .is_some_and(|n| n > MODEL_LIST_LIMIT as u64)
    {
        return Fetched::Answer { status, body: None };
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > MODEL_LIST_LIMIT {
                    return Fetched::Answer { status, body: None };
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => break,
            Err(e) => return Fetched::Failed(e),
        }
    }
    Fetched::Answer {
        status,
        body: Some(body),
    }
}

/// The ids of an OpenAI model list `{"data":[{"id":…},…]}`; None when the
/// body is not one.
fn model_ids(body: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let data = v.get("data")?.as_array()?;
    let ids: Vec<String> = data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    if ids.is_empty() && !data.is_empty() {
        return None;
    }
    Some(ids)
}

/// A server's error text: `error.message` (OpenAI), `detail` (FastAPI) or
/// the start of the body; scrubbed.
fn error_detail(key: Option<&ApiKey>, body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let text = v
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("detail"))
                .or_else(|| v.get("message"))
        })
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    visible(&redact::snippet(text.trim(), 200, key))
}

/// A name from the server (or the configuration) as shown in a message.
fn shown_name(key: Option<&ApiKey>, name: &str) -> String {
    visible(&redact::snippet(name, NAME_CHARS, key))
}

/// `'a', 'b', … and N more`.
fn listing(names: &[String]) -> String {
    let mut s = names
        .iter()
        .take(LISTED)
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED {
        s.push_str(&format!(" and {} more", names.len() - LISTED));
    }
    s
}

use super::openai::{auth_header, url_for_log};

/// The error and its sources, without the URL; scrubbed.
fn cause(key: Option<&ApiKey>, e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    // reqwest's own text names the URL (credentials and query included).
    let top = match e.url() {
        Some(_) => {
            if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection failed".to_string()
            } else if e.is_body() || e.is_decode() {
                "reading the answer failed".to_string()
            } else {
                "request failed".to_string()
            }
        }
        None => e.to_string(),
    };
    parts.push(top);
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    visible(&redact::redact(&parts.join(": "), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{chat_completions_url, DEFAULT_MODEL};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    const KEY: &str = "sk-probe-secret-1234";

    fn ep(url: &str, model: Option<&str>, key: Option<&str>) -> EndpointConfig {
        EndpointConfig {
            chat_url: chat_completions_url(&url::Url::parse(url).unwrap()),
            azure: false,
            api_key: key.and_then(ApiKey::new),
            model: model.unwrap_or(DEFAULT_MODEL).to_string(),
            model_explicit: model.is_some(),
            more_urls: Vec::new(),
        }
    }

    fn read_head(s: &mut TcpStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A one-request HTTP server on 127.0.0.1: answers `response` (raw
    /// bytes) and hands back the request head.
    fn serve(response: Vec<u8>) -> (String, mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let head = read_head(&mut s);
                let _ = tx.send(head);
                let _ = s.write_all(&response);
                let _ = s.flush();
            }
        });
        (base, rx)
    }

    fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn list(ids: &[&str]) -> String {
        let data: Vec<Value> = ids
            .iter()
            .map(|i| serde_json::json!({"id": i, "object": "model", "owned_by": "x"}))
            .collect();
        serde_json::json!({"object": "list", "data": data}).to_string()
    }

    fn probe(e: &EndpointConfig) -> ProbeOutcome {
        probe_models(e, Duration::from_secs(5))
    }

    fn msg(o: &ProbeOutcome) -> String {
        o.message()
    }

    #[test]
    fn models_url_replaces_chat_completions() {
        let u =
            |s: &str| models_url(&chat_completions_url(&url::Url::parse(s).unwrap())).to_string();
        assert_eq!(u("http://h:8000/v1"), "http://h:8000/v1/models");
        assert_eq!(u("http://h:8000/v1/"), "http://h:8000/v1/models");
        assert_eq!(
            u("http://h:8000/v1/chat/completions"),
            "http://h:8000/v1/models"
        );
        assert_eq!(
            u("http://h:8000/v1/chat/completions/"),
            "http://h:8000/v1/models"
        );
        assert_eq!(u("http://h"), "http://h/models");
        assert_eq!(u("http://h/x/v1?t=1"), "http://h/x/v1/models?t=1");
    }

    #[test]
    fn explicit_model_served_sends_bearer_and_gets_the_list() {
        let (base, req) = serve(http("200 OK", "", &list(&["other", "qwen-vl"])));
        let o = probe(&ep(&format!("{base}/v1"), Some("qwen-vl"), Some(KEY)));
        assert_eq!(
            o,
            ProbeOutcome::Served {
                models: vec!["other".into(), "qwen-vl".into()]
            }
        );
        assert!(!o.is_error() && !o.is_warning());
        let head = req.recv().unwrap();
        assert!(head.starts_with("GET /v1/models HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "authorization: bearer {}",
                KEY.to_ascii_lowercase()
            )),
            "{head}"
        );
    }

    #[test]
    fn explicit_model_not_served_is_an_error_naming_the_served_ones() {
        let ids: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
        let mut refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let echo = format!("key-{KEY}");
        refs.push(&echo);
        let (base, _req) = serve(http("200 OK", "", &list(&refs)));
        let o = probe(&ep(
            &format!("{base}/v1/chat/completions"),
            Some("wrong"),
            Some(KEY),
        ));
        let ProbeOutcome::ModelNotServed { message } = &o else {
            panic!("{o:?}")
        };
        assert!(o.is_error());
        for want in [
            "'wrong'",
            "'m0'",
            "'m9'",
            "and 3 more",
            "model-name",
            "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME",
            "/v1/models",
        ] {
            assert!(message.contains(want), "{want}: {message}");
        }
        assert!(!message.contains("'m10'"), "{message}");

        // A served name that contains the key is shown scrubbed.
        let (base, _req) = serve(http("200 OK", "", &list(&["a", &echo])));
        let o = probe(&ep(&format!("{base}/v1"), Some("b"), Some(KEY)));
        let m = msg(&o);
        assert!(m.contains("key-<redacted>") && !m.contains(KEY), "{m}");
    }

    #[test]
    fn default_model_adopts_a_single_served_model() {
        let (base, _req) = serve(http("200 OK", "", &list(&["/models/Qwen2.5-VL-7B"])));
        let o = probe(&ep(&format!("{base}/v1"), None, None));
        assert_eq!(
            o,
            ProbeOutcome::UseModel {
                model: "/models/Qwen2.5-VL-7B".into()
            }
        );
        assert!(msg(&o).contains("'/models/Qwen2.5-VL-7B'"), "{}", msg(&o));
        // The default itself, served alone: nothing to adopt.
        let (base, _req) = serve(http("200 OK", "", &list(&[DEFAULT_MODEL])));
        let o = probe(&ep(&format!("{base}/v1"), None, None));
        assert!(matches!(o, ProbeOutcome::Served { .. }), "{o:?}");
    }

    #[test]
    fn default_model_among_several_is_a_warning() {
        let (base, _req) = serve(http("200 OK", "", &list(&["a", "b"])));
        let o = probe(&ep(&format!("{base}/v1"), None, None));
        let ProbeOutcome::DefaultNotServed { message } = &o else {
            panic!("{o:?}")
        };
        assert!(o.is_warning() && !o.is_error());
        for want in [
            "'gpt-4o'",
            "'a', 'b'",
            "model-name",
            "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME",
        ] {
            assert!(message.contains(want), "{want}: {message}");
        }
        let (base, _req) = serve(http("200 OK", "", &list(&["a", DEFAULT_MODEL])));
        let o = probe(&ep(&format!("{base}/v1"), None, None));
        assert!(matches!(o, ProbeOutcome::Served { .. }), "{o:?}");
    }

    #[test]
    fn openai_default_is_neither_adopted_nor_questioned() {
        let e = ep("https://api.openai.com/v1", None, Some(KEY));
        assert!(e.is_openai());
        let one = vec!["gpt-4.1".to_string()];
        assert!(matches!(
            classify_models(&e, &one),
            ProbeOutcome::Served { .. }
        ));
        let many = vec!["gpt-4.1".to_string(), "o3".to_string()];
        assert!(matches!(
            classify_models(&e, &many),
            ProbeOutcome::Served { .. }
        ));
        // An explicit model is still checked.
        let e = ep("https://api.openai.com/v1", Some("gpt-5-typo"), Some(KEY));
        assert!(classify_models(&e, &many).is_error());
        // An empty list says nothing.
        assert!(matches!(
            classify_models(&e, &[]),
            ProbeOutcome::NoModelList { .. }
        ));
    }

    #[test]
    fn no_model_list_outcomes() {
        for (resp, want) in [
            (
                http("404 Not Found", "", r#"{"detail":"Not Found"}"#),
                "HTTP 404",
            ),
            (http("405 Method Not Allowed", "", ""), "HTTP 405"),
            (http("500 Internal Server Error", "", "boom"), "HTTP 500"),
            (
                http("200 OK", "", "<html>hello</html>"),
                "not with an OpenAI model list",
            ),
            (
                http("200 OK", "", r#"{"data":"x"}"#),
                "not with an OpenAI model list",
            ),
            (
                http("200 OK", "", r#"{"data":[{"name":"x"}]}"#),
                "not with an OpenAI model list",
            ),
            (
                http("200 OK", "", r#"{"object":"list","data":[]}"#),
                "lists no models",
            ),
        ] {
            let (base, _req) = serve(resp);
            let o = probe(&ep(&format!("{base}/v1"), Some("m"), None));
            let ProbeOutcome::NoModelList { reason } = &o else {
                panic!("{want}: {o:?}")
            };
            assert!(reason.contains(want), "{want}: {reason}");
            assert!(!o.is_error() && !o.is_warning());
        }
    }

    #[test]
    fn redirects_are_not_followed() {
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        other.set_nonblocking(true).unwrap();
        let loc = format!(
            "Location: http://127.0.0.1:{}/v1/models\r\n",
            other.local_addr().unwrap().port()
        );
        let (base, _req) = serve(http("302 Found", &loc, ""));
        let o = probe(&ep(&format!("{base}/v1"), Some("m"), None));
        let ProbeOutcome::NoModelList { reason } = &o else {
            panic!("{o:?}")
        };
        assert!(
            reason.contains("HTTP 302") && reason.contains("not followed"),
            "{reason}"
        );
        assert!(other.accept().is_err(), "the redirect was followed");
    }

    #[test]
    fn large_bodies_are_cut() {
        // Announced by Content-Length.
        let big = format!(
            r#"{{"data":[{{"id":"{}"}}]}}"#,
            "x".repeat(MODEL_LIST_LIMIT)
        );
        let (base, _req) = serve(http("200 OK", "", &big));
        let o = probe(&ep(&format!("{base}/v1"), Some("m"), None));
        assert!(msg(&o).contains("larger than 1 MiB"), "{o:?}");
        // Not announced: read until the cap.
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{big}"
        );
        let (base, _req) = serve(resp.into_bytes());
        let o = probe(&ep(&format!("{base}/v1"), Some("m"), None));
        assert!(msg(&o).contains("larger than 1 MiB"), "{o:?}");
    }

    #[test]
    fn unauthorized_names_the_key_settings_and_hides_the_key() {
        let body = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error"}}}}"#
        );
        let (base, _req) = serve(http("401 Unauthorized", "", &body));
        let o = probe(&ep(&format!("{base}/v1"), Some("m"), Some(KEY)));
        let ProbeOutcome::Unauthorized { message } = &o else {
            panic!("{o:?}")
        };
        assert!(o.is_warning() && !o.is_error());
        for want in [
            "HTTP 401",
            "api-key",
            "VIA_VLM_API_KEY",
            "OPENAI_API_KEY",
            "<redacted>",
        ] {
            assert!(message.contains(want), "{want}: {message}");
        }
        assert!(!message.contains(KEY), "{message}");

        let (base, _req) = serve(http("403 Forbidden", "", "no"));
        let o = probe(&ep(&format!("{base}/v1"), Some("m"), None));
        let m = msg(&o);
        assert!(
            matches!(o, ProbeOutcome::Unauthorized { .. })
                && m.contains("HTTP 403")
                && m.contains("set the api-key property"),
            "{m}"
        );
    }

    #[test]
    fn messages_carry_no_url_credentials() {
        let (base, req) = serve(http("404 Not Found", "", ""));
        let with_creds = base.replace("http://", "http://user:urlsecret@");
        let o = probe(&ep(
            &format!("{with_creds}/v1?token=querysecret"),
            Some("m"),
            None,
        ));
        let m = msg(&o);
        assert!(matches!(o, ProbeOutcome::NoModelList { .. }), "{o:?}");
        assert!(
            !m.contains("urlsecret") && !m.contains("querysecret") && !m.contains("user@"),
            "{m}"
        );
        let head = req.recv().unwrap();
        assert!(
            head.starts_with("GET /v1/models?token=querysecret "),
            "{head}"
        );

        // Unreachable, with credentials in the URL.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let o = probe(&ep(
            &format!("http://u:urlsecret@127.0.0.1:{port}/v1?k=querysecret"),
            Some("m"),
            Some(KEY),
        ));
        let m = msg(&o);
        assert!(
            !m.contains("urlsecret") && !m.contains("querysecret") && !m.contains(KEY),
            "{m}"
        );
    }

    #[test]
    fn unreachable_servers() {
        // Connection refused.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let o = probe(&ep(&format!("http://127.0.0.1:{port}/v1"), Some("m"), None));
        let ProbeOutcome::Unreachable { message } = &o else {
            panic!("{o:?}")
        };
        assert!(o.is_warning());
        assert!(
            message.contains("cannot connect")
                && message.contains(&format!("127.0.0.1:{port}/v1/models")),
            "{message}"
        );
        assert!(
            message.to_ascii_lowercase().contains("refused"),
            "{message}"
        );

        // Accepted, never answered: the timeout.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = read_head(&mut s);
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        let t0 = std::time::Instant::now();
        let o = probe_models(
            &ep(&format!("{base}/v1"), Some("m"), None),
            Duration::from_millis(300),
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let ProbeOutcome::Unreachable { message } = &o else {
            panic!("{o:?}")
        };
        assert!(
            message.contains("no answer") && message.contains("0.3 s"),
            "{message}"
        );

        // A name that does not resolve (or no DNS at all: then a timeout).
        let o = probe_models(
            &ep("http://no-such-host.invalid/v1", Some("m"), None),
            Duration::from_secs(2),
        );
        assert!(matches!(o, ProbeOutcome::Unreachable { .. }), "{o:?}");
    }

    #[test]
    fn azure_is_skipped_without_a_request() {
        let e = EndpointConfig {
            chat_url: url::Url::parse(
                "http://127.0.0.1:9/openai/deployments/d/chat/completions?api-version=1",
            )
            .unwrap(),
            azure: true,
            api_key: ApiKey::new(KEY),
            model: "d".into(),
            model_explicit: true,
            more_urls: Vec::new(),
        };
        let o = probe(&e);
        assert!(matches!(o, ProbeOutcome::Skipped { .. }), "{o:?}");
        assert!(!o.is_error() && !o.is_warning() && msg(&o).contains("Azure"));
    }

    #[test]
    fn a_key_unfit_for_a_header_skips_the_check() {
        let o = probe(&ep("http://127.0.0.1:9/v1", Some("m"), Some("bad\nkey")));
        let ProbeOutcome::Skipped { reason } = &o else {
            panic!("{o:?}")
        };
        assert!(
            reason.contains("api-key") && !reason.contains("bad"),
            "{reason}"
        );
    }
}
