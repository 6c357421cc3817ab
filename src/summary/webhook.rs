// SPDX-License-Identifier: MPL-2.0
//! Alert delivery to `alert-webhook`: one `POST` of the alert's JSON body
//! (see [`super::Alert::webhook_body`]) per alert, with
//! `Authorization: Bearer <alert-webhook-token>` when a token is set.
//!
//! * Never blocks the caller: [`Webhook::send`] hands the body to the
//!   plugin's tokio runtime and returns.
//! * Bounded: at most [`MAX_PENDING`] deliveries are pending; beyond that an
//!   alert is not delivered, and that is logged and counted as failed (the
//!   alert record and the `vss-alert` message still exist).
//! * Retried a little ([`crate::retry`]): connection failures, timeouts, 429
//!   and 5xx are tried [`ATTEMPTS`] times in all, 0.5 s then 1 s apart, or
//!   after the receiver's `Retry-After` (up to [`RETRY_AFTER_CAP`]); each
//!   attempt may take [`ATTEMPT_TIMEOUT`]. Other statuses fail at once.
//!   Redirects are not followed (the token would go with them).
//! * Failures are logged through the given function and counted
//!   (`alerts-webhook-failed`); the token never appears in a message.
//! * EOS waits for pending deliveries ([`Webhook::wait_idle`], within
//!   `drain-timeout`); PAUSED→READY cancels them ([`Webhook::cancel_all`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::backend::openai::url_for_log;
use crate::config::ApiKey;
use crate::retry::{self, Attempt, Backoff};
use crate::runtime::RUNTIME;

/// Deliveries pending at most.
pub const MAX_PENDING: usize = 64;
/// Tries per alert.
pub const ATTEMPTS: u32 = 3;
/// Per try.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A receiver's `Retry-After` is honoured up to this (a delivery still
/// pending at EOS holds the drain, within `drain-timeout`).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

/// A webhook that cannot be set up: `alert-webhook` or its token is unfit.
/// Its text names the property.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WebhookConfigError(String);

#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Webhook {
    url: url::Url,
    auth: Option<reqwest::header::HeaderValue>,
    token: Option<ApiKey>,
    client: reqwest::Client,
    pending: Arc<(Mutex<usize>, Condvar)>,
    stats: Arc<WebhookStats>,
    log: LogFn,
    cancel: Mutex<CancellationToken>,
    retry_first: Duration,
}

impl Webhook {
    /// `url` must be `http://` or `https://`.
    pub fn new(
        url: &str,
        token: Option<ApiKey>,
        stats: Arc<WebhookStats>,
        log: LogFn,
    ) -> Result<Webhook, WebhookConfigError> {
        let err = WebhookConfigError;
        let u = url::Url::parse(url.trim())
            .map_err(|e| err(format!("alert-webhook '{}' is not a URL: {e}", url.trim())))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(err(format!(
                "alert-webhook must be an http:// or https:// URL (got '{}')",
                url_for_log(&u)
            )));
        }
        let auth = match &token {
            Some(t) => {
                let mut hv = reqwest::header::HeaderValue::from_str(&format!(
                    "Bearer {}",
                    t.expose()
                ))
                .map_err(|_| {
                    err("alert-webhook-token contains characters that are not allowed in an HTTP header"
                        .to_string())
                })?;
                hv.set_sensitive(true);
                Some(hv)
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("vsssummarize/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .build()
            .map_err(|e| err(format!("cannot create the HTTP client: {e}")))?;
        Ok(Webhook {
            url: u,
            auth,
            token,
            client,
            pending: Arc::new((Mutex::new(0), Condvar::new())),
            stats,
            log,
            cancel: Mutex::new(CancellationToken::new()),
            retry_first: Duration::from_millis(500),
        })
    }

    /// Shorter backoff (tests).
    pub fn with_retry_first(mut self, d: Duration) -> Webhook {
        self.retry_first = d;
        self
    }

    /// The URL as logged (no credentials, no query).
    pub fn url_for_log(&self) -> String {
        url_for_log(&self.url)
    }

    /// Queues one delivery (never blocks).
    pub fn send(&self, id: String, body: Value) {
        {
            let mut n = self.pending.0.lock().unwrap_or_else(|e| e.into_inner());
            if *n >= MAX_PENDING {
                drop(n);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                (self.log)(&format!(
                    "alert {id} not delivered to {}: {MAX_PENDING} deliveries are already pending (the webhook is slow or down)",
                    self.url_for_log()
                ));
                return;
            }
            *n += 1;
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let job = Delivery {
            url: self.url.clone(),
            auth: self.auth.clone(),
            token: self.token.clone(),
            client: self.client.clone(),
            stats: self.stats.clone(),
            log: self.log.clone(),
            retry_first: self.retry_first,
        };
        let pending = self.pending.clone();
        let cancel = self
            .cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        RUNTIME.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = job.run(&id, body) => {}
            }
            let mut n = pending.0.lock().unwrap_or_else(|e| e.into_inner());
            *n = n.saturating_sub(1);
            pending.1.notify_all();
        });
    }

    /// Deliveries not finished.
    pub fn pending(&self) -> usize {
        *self.pending.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no delivery is pending, or `deadline`; false on timeout.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        let (m, cv) = &*self.pending;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            n = cv
                .wait_timeout(n, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Cancels every pending delivery (they count as neither delivered nor
    /// failed); later ones are sent again.
    pub fn cancel_all(&self) {
        let mut c = self.cancel.lock().unwrap_or_else(|e| e.into_inner());
        c.cancel();
        *c = CancellationToken::new();
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

struct Delivery {
    url: url::Url,
    auth: Option<reqwest::header::HeaderValue>,
    token: Option<ApiKey>,
    client: reqwest::Client,
    stats: Arc<WebhookStats>,
    log: LogFn,
    retry_first: Duration,
}

impl Delivery {
    async fn run(&self, id: &str, body: Vec<u8>) {
        let backoff = Backoff {
            first: self.retry_first,
            max: self.retry_first.saturating_mul(1 << ATTEMPTS),
            retry_after_cap: RETRY_AFTER_CAP,
        };
        let body = &body;
        let last = match retry::run(&backoff, ATTEMPTS - 1, |_| self.attempt(body)).await {
            Ok(()) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(retry::Stop::Permanent(e) | retry::Stop::Exhausted { error: e, .. }) => e,
        };
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        let msg = format!(
            "alert {id} not delivered to {}: {last}",
            url_for_log(&self.url)
        );
        (self.log)(&crate::redact::redact(&msg, self.token.as_ref()));
    }

    /// One POST; a failure's text says what went wrong.
    async fn attempt(&self, body: &[u8]) -> Attempt<(), String> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(hv) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, hv.clone());
        }
        match req.send().await {
            Ok(r) => {
                let st = r.status();
                if st.is_success() {
                    return Attempt::Done(Ok(()));
                }
                let what = if st.is_redirection() {
                    " (redirects are not followed: set alert-webhook to the final URL)"
                } else {
                    ""
                };
                let error = format!("HTTP {st}{what}");
                if st.as_u16() == 429 || st.is_server_error() {
                    Attempt::Retry {
                        error,
                        retry_after: retry::retry_after(r.headers(), RETRY_AFTER_CAP),
                    }
                } else {
                    Attempt::Done(Err(error))
                }
            }
            Err(e) => {
                let e = e.without_url();
                if plain_port_for_tls(&e) {
                    // No retry helps (hardening round 3: rustls's
                    // "received corrupt message of type InvalidContentType").
                    return Attempt::Done(Err(NO_TLS_HERE.into()));
                }
                let what = if e.is_timeout() {
                    format!("timed out after {} s", ATTEMPT_TIMEOUT.as_secs())
                } else {
                    let mut s = e.to_string();
                    let mut cur = std::error::Error::source(&e);
                    while let Some(c) = cur {
                        s = format!("{s}: {c}");
                        cur = c.source();
                    }
                    s
                };
                Attempt::Retry {
                    error: what,
                    retry_after: None,
                }
            }
        }
    }
}

/// What an `https://` webhook pointed at a plain-HTTP port gets.
const NO_TLS_HERE: &str = "this port does not speak TLS (use http://)";

/// The TLS handshake got bytes that are no TLS record: the server answers
/// plain HTTP (or something else) on this port.
fn plain_port_for_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        // io::Error's source() skips the error it wraps (hyper wraps one
        // io::Error in another): look inside each layer too.
        let mut layer = Some(c);
        while let Some(x) = layer {
            if matches!(
                x.downcast_ref::<rustls::Error>(),
                Some(rustls::Error::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType
                ))
            ) {
                return true;
            }
            layer = x
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn std::error::Error + 'static));
        }
        cur = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-file HTTP receiver: answers the statuses given, in turn, and
    /// records each request.
    fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/alerts", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for (i, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                // Headers, then Content-Length bytes.
                loop {
                    let n = s.read(&mut tmp).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
                g.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).to_string());
                let code = statuses.get(i).copied().unwrap_or(200);
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, got)
    }

    fn hook(
        url: &str,
        token: Option<&str>,
    ) -> (Webhook, Arc<WebhookStats>, Arc<Mutex<Vec<String>>>) {
        let stats = Arc::new(WebhookStats::default());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let l = logs.clone();
        let w = Webhook::new(
            url,
            token.and_then(ApiKey::new),
            stats.clone(),
            Arc::new(move |m: &str| l.lock().unwrap().push(m.to_string())),
        )
        .unwrap()
        .with_retry_first(Duration::from_millis(10));
        (w, stats, logs)
    }

    #[test]
    fn delivers_the_body_with_the_token() {
        let (url, got) = receiver(vec![]);
        let (w, stats, _) = hook(&url, Some("hook-secret-123"));
        w.send("cam-1".into(), serde_json::json!({"alertId": "cam-1"}));
        assert!(w.wait_idle(Instant::now() + Duration::from_secs(10)));
        let reqs = got.lock().unwrap();
        assert_eq!(reqs.len(), 1);
        assert!(reqs[0].starts_with("POST /alerts "));
        assert!(reqs[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer hook-secret-123"));
        assert!(reqs[0].ends_with("{\"alertId\":\"cam-1\"}"));
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn retries_5xx_then_gives_up_logged_and_counted() {
        let (url, got) = receiver(vec![503, 200]);
        let (w, stats, _) = hook(&url, None);
        w.send("a".into(), serde_json::json!({}));
        assert!(w.wait_idle(Instant::now() + Duration::from_secs(10)));
        assert_eq!(got.lock().unwrap().len(), 2);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);

        let (url, got) = receiver(vec![500, 500, 500, 500]);
        let (w, stats, logs) = hook(&url, Some("hook-secret-123"));
        w.send("b".into(), serde_json::json!({}));
        assert!(w.wait_idle(Instant::now() + Duration::from_secs(10)));
        assert_eq!(got.lock().unwrap().len(), ATTEMPTS as usize);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
        let logs = logs.lock().unwrap();
        assert!(
            logs[0].contains("alert b not delivered") && logs[0].contains("500"),
            "{logs:?}"
        );
        assert!(!logs[0].contains("hook-secret-123"));
    }

    #[test]
    fn a_refused_connection_fails_after_the_retries_and_never_blocks() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (w, stats, logs) = hook(&format!("http://127.0.0.1:{port}/x"), None);
        let t = Instant::now();
        for i in 0..(MAX_PENDING + 5) {
            w.send(format!("a{i}"), serde_json::json!({}));
        }
        assert!(t.elapsed() < Duration::from_secs(1), "send never waits");
        assert!(w.wait_idle(Instant::now() + Duration::from_secs(20)));
        assert_eq!(
            stats.failed.load(Ordering::Relaxed),
            (MAX_PENDING + 5) as u64
        );
        assert!(logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("already pending")));
    }

    /// Round 3: `https://` at a plain-HTTP port said "received corrupt
    /// message of type InvalidContentType", three times.
    #[test]
    fn https_at_a_plain_port_says_so_once() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/alerts", l.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(0));
        let a = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                *a.lock().unwrap() += 1;
                let mut tmp = [0u8; 1024];
                let _ = s.read(&mut tmp);
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let (w, stats, logs) = hook(&url, Some("hook-secret-123"));
        w.send("cam-1".into(), serde_json::json!({}));
        assert!(w.wait_idle(Instant::now() + Duration::from_secs(30)));
        assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
        let logs = logs.lock().unwrap();
        assert!(logs[0].contains(NO_TLS_HERE), "{logs:?}");
        assert_eq!(*accepted.lock().unwrap(), 1, "not retried");
    }

    #[test]
    fn bad_urls_name_the_property() {
        let s = Arc::new(WebhookStats::default());
        let log: LogFn = Arc::new(|_: &str| {});
        for u in ["", "ftp://x/y", "not a url"] {
            let e = Webhook::new(u, None, s.clone(), log.clone())
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("alert-webhook"), "{e}");
        }
    }
}
