//! A local, OpenAI-compatible chat-completions mock for integration tests.
//!
//! The server listens on `127.0.0.1:<any free port>`, handles every request on
//! its own thread, records it (headers, JSON body, decoded images, text) and
//! answers according to a user-settable policy.  By default it answers with a
//! caption naming the palette colour of every image it received, in order
//! (`"colours: red red green"`), so a test can prove which frames were sent in
//! which request.
//!
//! `GET …/models` (the element's start-up check) is answered apart: it is not
//! recorded in [`MockServer::requests`], does not count as in flight, and does
//! not reach the policy. By default it answers 404 (no model list);
//! [`MockServer::set_models`] makes it serve an OpenAI model list.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

/// The colours the test videos are made of.
pub const PALETTE: &[(&str, [u8; 3])] = &[
    ("red", [255, 0, 0]),
    ("green", [0, 255, 0]),
    ("blue", [0, 0, 255]),
    ("white", [255, 255, 255]),
    ("black", [0, 0, 0]),
    ("yellow", [255, 255, 0]),
    ("cyan", [0, 255, 255]),
    ("magenta", [255, 0, 255]),
];

/// Colour name recorded for an image that could not be decoded.
pub const UNDECODABLE: &str = "undecodable";

/// The palette entry nearest to `rgb` (Euclidean distance in RGB space).
pub fn nearest_colour(rgb: [f64; 3]) -> &'static str {
    let mut best = PALETTE[0].0;
    let mut best_d = f64::INFINITY;
    for (name, p) in PALETTE {
        let d: f64 = (0..3)
            .map(|i| {
                let diff = rgb[i] - f64::from(p[i]);
                diff * diff
            })
            .sum();
        if d < best_d {
            best_d = d;
            best = name;
        }
    }
    best
}

/// One image found in a request.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// 0 when the image could not be decoded.
    pub width: u32,
    /// 0 when the image could not be decoded.
    pub height: u32,
    /// Mean of all pixels, per channel, 0..=255.
    pub mean_rgb: [f64; 3],
    /// Nearest [`PALETTE`] name, or [`UNDECODABLE`].
    pub colour: &'static str,
    /// Length of the base64-decoded JPEG bytes (0 if base64 decoding failed).
    pub jpeg_len: usize,
}

/// Everything the mock saw of one request.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string without `?`, e.g. `api-version=2024-02-01`.
    pub query: Option<String>,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body, `Value::Null` if the body is not JSON.
    pub body: Value,
    pub raw_body: Vec<u8>,
    /// Every `image_url` part of the last user message, in order.
    pub images: Vec<DecodedImage>,
    /// Text parts of the last user message, concatenated (no separator).
    pub text: String,
    /// Content of the (first) system message, if any.
    pub system: Option<String>,
    /// Every `video_url` part (an MP4 data URI), decoded: its frames'
    /// times in seconds (from the container); its frames are also in
    /// `images`, in order.
    pub videos: Vec<Vec<f64>>,
}

impl RecordedRequest {
    /// The first frame timestamp in the prompt text (`<2.5>` gives 2.5), 0
    /// if there is none: which chunk this request is for.
    pub fn first_time(&self) -> f64 {
        let t = self.text.split('<').nth(1).unwrap_or("0");
        t.split('>').next().unwrap_or("0").parse().unwrap_or(0.0)
    }

    /// Value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The colour of every image, in order.
    pub fn colours(&self) -> Vec<&'static str> {
        self.images.iter().map(|i| i.colour).collect()
    }

    /// The caption the mock answers with by default for this request.
    pub fn default_caption(&self) -> String {
        if let Some(t) = self.text_answer() {
            return t;
        }
        if self.images.is_empty() {
            "colours: none".to_string()
        } else {
            format!("colours: {}", self.colours().join(" "))
        }
    }
}

impl RecordedRequest {
    /// The deterministic answer to a text-only request of the element's
    /// text LLM (no images, and a system prompt of ours):
    /// * an event check ("You detect events …"): the JSON the prompt asks
    ///   for, each event detected when the caption contains its text (any
    ///   case); a caption containing `UNPARSABLE` gets prose instead;
    /// * a summary or aggregation ("…summar…"): `summary of` followed by
    ///   every distinct `<time>` label of its input, in order, so a test can
    ///   tell which captions reached which summary.
    pub fn text_answer(&self) -> Option<String> {
        if !self.images.is_empty() {
            return None;
        }
        let sys = self.system.as_deref()?;
        if sys.contains("You detect events") {
            return Some(event_answer(sys, &self.text));
        }
        if sys.contains("summar") {
            return Some(format!("summary of {}", time_labels(&self.text).join(" ")));
        }
        None
    }

    /// Whether this is a text-only request of the element's text LLM.
    pub fn is_text_llm(&self) -> bool {
        self.text_answer().is_some()
    }

    pub fn is_event_check(&self) -> bool {
        self.images.is_empty()
            && self
                .system
                .as_deref()
                .is_some_and(|s| s.contains("You detect events"))
    }
}

/// Every distinct `<…>` label of `text`, in order.
pub fn time_labels(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(a) = rest.find('<') {
        let Some(b) = rest[a..].find('>') else { break };
        let label = &rest[a..a + b + 1];
        if label.len() > 2
            && !label[1..label.len() - 1].contains(['<', ' '])
            && !out.iter().any(|l| l == label)
        {
            out.push(label.to_string());
        }
        rest = &rest[a + b + 1..];
    }
    out
}

/// The events of the prompt's JSON template, detected by substring.
fn event_answer(system: &str, caption: &str) -> String {
    if caption.contains("UNPARSABLE") {
        return "I cannot tell from this description.".into();
    }
    let events: Vec<String> = system
        .rfind("{\"result\"")
        .and_then(|i| {
            serde_json::from_str::<Value>(&system[i..].replace("true|false", "false")).ok()
        })
        .and_then(|v| v["result"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect();
    let lower = caption.to_lowercase();
    let result: Vec<Value> = events
        .iter()
        .map(|e| json!({"event": e, "is_detected": lower.contains(&e.to_lowercase())}))
        .collect();
    json!({ "result": result }).to_string()
}

/// What to do with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with a normal chat.completion body whose content is `content` (if
    /// Some) or else the default caption; sent after `delay`.
    Ok {
        content: Option<String>,
        delay: Duration,
    },
    /// An HTTP error status with a JSON error body
    /// `{"error":{"message":..,"type":..}}`, optional `Retry-After` (seconds).
    Status { code: u16, retry_after: Option<u32> },
    /// Read the request but do not answer until the server is dropped or the
    /// duration elapses; then answer 504 with a JSON error body.
    Stall(Duration),
    /// 200 with a non-JSON body (Content-Type still claims JSON).
    Garbage,
    /// 200 with JSON whose `choices` is an empty array.
    Empty,
    /// 200 with `choices[0].message.content` = null.
    NullContent,
    /// Status `code` with this JSON body, as a real server's error would be.
    Json { code: u16, body: Value },
}

impl Reply {
    /// `Ok` with the default caption and no delay.
    pub fn ok() -> Reply {
        Reply::Ok {
            content: None,
            delay: Duration::ZERO,
        }
    }

    /// `Ok` with the given content and no delay.
    pub fn with_content(content: impl Into<String>) -> Reply {
        Reply::Ok {
            content: Some(content.into()),
            delay: Duration::ZERO,
        }
    }

    /// `Ok` with the default caption after `delay`.
    pub fn delayed(delay: Duration) -> Reply {
        Reply::Ok {
            content: None,
            delay,
        }
    }
}

type Policy = dyn Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static;

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
    /// `GET …/models` requests, kept apart from `requests`.
    model_list_requests: Vec<RecordedRequest>,
    /// What `GET …/models` serves; None = 404.
    models: Option<Vec<String>>,
    in_flight: usize,
    max_in_flight: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Notified on every state change (new request, shutdown).
    cond: Condvar,
    policy: RwLock<Arc<Policy>>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_shutdown(&self) -> bool {
        self.lock().shutdown
    }

    /// Sleep for `d`, returning early when the server shuts down.
    fn sleep_unless_shutdown(&self, d: Duration) {
        let deadline = Instant::now() + d;
        let mut st = self.lock();
        while !st.shutdown {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Decrements the in-flight count when the handler is done (even on panic).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        let mut st = shared.lock();
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        drop(st);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        drop(st);
        self.0.cond.notify_all();
    }
}

/// A running mock server; stopped when dropped.
pub struct MockServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Start a server on a free port with the default policy
    /// (`Reply::Ok { content: None, delay: 0 }`).
    pub fn start() -> MockServer {
        let server =
            std::net::TcpListener::bind("127.0.0.1:0").expect("mock server: bind 127.0.0.1:0");
        server
            .set_nonblocking(true)
            .expect("mock server: non-blocking listener");
        let addr = server.local_addr().expect("mock server: local address");
        let default_policy: Arc<Policy> = Arc::new(|_: &RecordedRequest, _: usize| Reply::ok());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            policy: RwLock::new(default_policy),
            handlers: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("mock-openai-accept".into())
            .spawn(move || accept_loop(server, accept_shared))
            .expect("mock server: spawn accept thread");
        MockServer {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn url(&self) -> String {
        format!("{}/v1", self.base())
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Set the policy, called for every request (after recording it) with the
    /// request and its 0-based arrival index.
    pub fn set_policy(&self, f: impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static) {
        let mut p = self
            .shared
            .policy
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *p = Arc::new(f);
    }

    /// Serve these model ids on `GET …/models` (an OpenAI list), or answer
    /// 404 with None (the default: no model list).
    pub fn set_models(&self, models: Option<Vec<String>>) {
        self.shared.lock().models = models;
    }

    /// The `GET …/models` requests received so far (not in [`Self::requests`]).
    pub fn model_list_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().model_list_requests.clone()
    }

    /// All requests received so far, in arrival order, except `GET …/models`.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Block until at least `n` requests were received or `timeout` passed;
    /// returns whether `n` was reached.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if st.requests.len() >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Highest number of requests handled concurrently (received but not yet
    /// answered).
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().max_in_flight
    }

    /// Number of requests received but not yet answered right now.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.cond.notify_all();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let handlers = std::mem::take(
            &mut *self
                .shared
                .handlers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for h in handlers {
            let _ = h.join();
        }
    }
}

/// One parsed HTTP/1.1 request.
struct RawRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// One HTTP response.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn with_header(mut self, (name, value): (String, String)) -> RawResponse {
        self.headers.push((name, value));
        self
    }
}

fn accept_loop(server: std::net::TcpListener, shared: Arc<Shared>) {
    // A plain thread-per-connection HTTP/1.1 server (keep-alive, no
    // pipelining): every connection is served at once, however many stall.
    while !shared.is_shutdown() {
        let stream = match server.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let conn_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("mock-openai-conn".into())
            .spawn(move || serve_connection(conn_shared, stream));
        if let Ok(h) = spawned {
            let mut hs = shared.handlers.lock().unwrap_or_else(|e| e.into_inner());
            hs.retain(|h| !h.is_finished());
            hs.push(h);
        }
    }
    // Dropping `server` closes the listener.
}

fn serve_connection(shared: Arc<Shared>, stream: std::net::TcpStream) {
    use std::io::{BufRead, BufReader, Read, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        // Request line, waiting for it while the server runs.
        let mut line = String::new();
        loop {
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if shared.is_shutdown() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let url = parts.next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return,
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().to_string();
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; content_length];
        let mut got = 0;
        while got < content_length {
            match reader.read(&mut body[got..]) {
                Ok(0) => return,
                Ok(n) => got += n,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
        let raw = RawRequest {
            method,
            url,
            headers,
            body,
        };
        let resp = match model_list(&shared, &raw) {
            Some(resp) => resp,
            None => {
                let guard = InFlight::enter(&shared);
                handle(Arc::clone(&shared), raw, guard)
            }
        };
        let reason = match resp.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Status",
        };
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
        for (k, v) in &resp.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", resp.body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&resp.body);
        if writer.write_all(&bytes).is_err() {
            return;
        }
        let _ = writer.flush();
    }
}

/// The answer to `GET …/models`, which is recorded apart; None for any other
/// request.
fn model_list(shared: &Shared, req: &RawRequest) -> Option<RawResponse> {
    let path = req.url.split_once('?').map_or(req.url.as_str(), |(p, _)| p);
    if req.method != "GET" || !path.trim_end_matches('/').ends_with("/models") {
        return None;
    }
    let rec = RecordedRequest {
        method: req.method.clone(),
        path: path.to_string(),
        query: req.url.split_once('?').map(|(_, q)| q.to_string()),
        headers: req.headers.clone(),
        body: Value::Null,
        raw_body: req.body.clone(),
        images: Vec::new(),
        text: String::new(),
        system: None,
        videos: Vec::new(),
    };
    let models = {
        let mut st = shared.lock();
        st.model_list_requests.push(rec);
        st.models.clone()
    };
    shared.cond.notify_all();
    Some(match models {
        None => json_response(
            404,
            &json!({"error": {"message": "mock: no model list", "type": "invalid_request_error", "code": 404}}),
        ),
        Some(ids) => {
            let data: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
                .collect();
            json_response(200, &json!({"object": "list", "data": data}))
        }
    })
}

fn handle(shared: Arc<Shared>, req: RawRequest, guard: InFlight) -> RawResponse {
    let RawRequest {
        method,
        url,
        headers,
        body: raw_body,
    } = req;
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.clone(), None),
    };
    let body: Value = serde_json::from_slice(&raw_body).unwrap_or(Value::Null);
    let (images, text, system, videos) = parse_messages(&body);
    let rec = RecordedRequest {
        videos,
        method,
        path,
        query,
        headers,
        body,
        raw_body,
        images,
        text,
        system,
    };

    let index = {
        let mut st = shared.lock();
        st.requests.push(rec.clone());
        st.requests.len() - 1
    };
    shared.cond.notify_all();

    let policy = Arc::clone(&shared.policy.read().unwrap_or_else(|e| e.into_inner()));
    let reply = policy(&rec, index);

    let model = rec
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-model")
        .to_string();
    let completion = |content: Value, choices_empty: bool| -> Value {
        let n_images = rec.images.len() as u64;
        let prompt_tokens = 100 + 10 * n_images;
        let choices = if choices_empty {
            json!([])
        } else {
            json!([{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            }])
        };
        json!({
            "id": format!("chatcmpl-mock-{index}"),
            "object": "chat.completion",
            "created": SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 7,
                "total_tokens": prompt_tokens + 7
            }
        })
    };

    let response = match reply {
        Reply::Ok { content, delay } => {
            if !delay.is_zero() {
                shared.sleep_unless_shutdown(delay);
            }
            let content = content.unwrap_or_else(|| rec.default_caption());
            json_response(200, &completion(Value::String(content), false))
        }
        Reply::Status { code, retry_after } => {
            let mut r = json_response(code, &error_body(code));
            if let Some(secs) = retry_after {
                r = r.with_header(header("Retry-After", &secs.to_string()));
            }
            r
        }
        Reply::Stall(d) => {
            shared.sleep_unless_shutdown(d);
            json_response(504, &error_body(504))
        }
        Reply::Garbage => RawResponse {
            status: 200,
            headers: vec![header("Content-Type", "application/json")],
            body: b"<html><body>this is not JSON {\"choices\": [</body></html>".to_vec(),
        },
        Reply::Empty => json_response(200, &completion(Value::Null, true)),
        Reply::NullContent => json_response(200, &completion(Value::Null, false)),
        Reply::Json { code, body } => json_response(code, &body),
    };
    // Leave the in-flight count before answering: a client that sends its
    // next request only after reading this answer is never counted twice.
    drop(guard);
    response
}

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

fn json_response(code: u16, body: &Value) -> RawResponse {
    RawResponse {
        status: code,
        headers: vec![header("Content-Type", "application/json")],
        body: serde_json::to_vec(body).expect("serialise JSON"),
    }
}

fn error_body(code: u16) -> Value {
    let kind = match code {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_exceeded",
        504 => "timeout",
        c if c >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    json!({"error": {"message": format!("mock error {code}"), "type": kind, "code": code}})
}

/// Text of a message `content`: a string, or the concatenated text parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                if p.get("type").and_then(Value::as_str) == Some("text") {
                    p.get("text").and_then(Value::as_str)
                } else {
                    None
                }
            })
            .collect(),
        _ => String::new(),
    }
}

type Parsed = (Vec<DecodedImage>, String, Option<String>, Vec<Vec<f64>>);

fn parse_messages(body: &Value) -> Parsed {
    let Some(msgs) = body.get("messages").and_then(Value::as_array) else {
        return (Vec::new(), String::new(), None, Vec::new());
    };
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_string);
    let system = msgs
        .iter()
        .find(|m| role(m).as_deref() == Some("system"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)));
    let Some(user) = msgs
        .iter()
        .rev()
        .find(|m| role(m).as_deref() == Some("user"))
    else {
        return (Vec::new(), String::new(), system, Vec::new());
    };
    let content = user.get("content").unwrap_or(&Value::Null);
    let text = content_text(content);
    let mut images = Vec::new();
    let mut videos = Vec::new();
    if let Value::Array(parts) = content {
        for p in parts {
            if p.get("type").and_then(Value::as_str) == Some("video_url") {
                let url = p
                    .pointer("/video_url/url")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let (frames, times) = decode_video_url(url);
                images.extend(frames);
                videos.push(times);
                continue;
            }
            let is_image = p.get("type").and_then(Value::as_str) == Some("image_url")
                || (p.get("type").is_none() && p.get("image_url").is_some());
            if !is_image {
                continue;
            }
            let url = match p.get("image_url") {
                Some(Value::String(s)) => s.as_str(),
                Some(obj) => obj.get("url").and_then(Value::as_str).unwrap_or(""),
                None => "",
            };
            images.push(decode_data_url(url));
        }
    }
    (images, text, system, videos)
}

/// Decodes a `data:video/mp4;base64,...` URL with GStreamer (qtdemux,
/// avdec_h264): each frame's mean colour and its time in seconds. An MP4
/// that cannot be decoded gives one undecodable frame and no times.
pub fn decode_video_url(url: &str) -> (Vec<DecodedImage>, Vec<f64>) {
    let bytes = url.strip_prefix("data:video/mp4;base64,").and_then(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
    });
    let Some(bytes) = bytes else {
        return (vec![undecodable(0)], Vec::new());
    };
    match decode_mp4(&bytes) {
        Some(v) if !v.0.is_empty() => v,
        _ => (vec![undecodable(bytes.len())], Vec::new()),
    }
}

fn decode_mp4(bytes: &[u8]) -> Option<(Vec<DecodedImage>, Vec<f64>)> {
    use gst::prelude::*;
    gst::init().ok()?;
    let p = gst::parse::launch(
        "appsrc name=src caps=video/quicktime ! qtdemux ! h264parse ! avdec_h264 ! \
         videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
    )
    .ok()?
    .downcast::<gst::Pipeline>()
    .ok()?;
    let src = p.by_name("src")?.downcast::<gst_app::AppSrc>().ok()?;
    let sink = p.by_name("sink")?.downcast::<gst_app::AppSink>().ok()?;
    p.set_state(gst::State::Playing).ok()?;
    let _ = src.push_buffer(gst::Buffer::from_slice(bytes.to_vec()));
    let _ = src.end_of_stream();
    let (mut frames, mut times) = (Vec::new(), Vec::new());
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(20)) {
        let Some(info) = s
            .caps()
            .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
        else {
            break;
        };
        let Some(buf) = s.buffer() else { break };
        let Ok(map) = buf.map_readable() else { break };
        let (w, h) = (info.width() as usize, info.height() as usize);
        let stride = info.stride()[0] as usize;
        let mut sum = [0u64; 3];
        for y in 0..h {
            for px in map[y * stride..y * stride + 3 * w].chunks_exact(3) {
                for c in 0..3 {
                    sum[c] += u64::from(px[c]);
                }
            }
        }
        let mean_rgb = sum.map(|v| v as f64 / (w * h).max(1) as f64);
        frames.push(DecodedImage {
            width: w as u32,
            height: h as u32,
            mean_rgb,
            colour: nearest_colour(mean_rgb),
            jpeg_len: bytes.len(),
        });
        times.push(buf.pts().map(|t| t.nseconds() as f64 / 1e9).unwrap_or(-1.0));
    }
    let _ = p.set_state(gst::State::Null);
    Some((frames, times))
}

fn undecodable(jpeg_len: usize) -> DecodedImage {
    DecodedImage {
        width: 0,
        height: 0,
        mean_rgb: [0.0; 3],
        colour: UNDECODABLE,
        jpeg_len,
    }
}

/// Decode a `data:image/jpeg;base64,...` URL; never panics.
pub fn decode_data_url(url: &str) -> DecodedImage {
    let Some(b64) = url.strip_prefix("data:image/jpeg;base64,") else {
        return undecodable(0);
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return undecodable(0);
    };
    decode_jpeg(&bytes)
}

/// Decode JPEG bytes and compute their mean colour; never panics.
pub fn decode_jpeg(bytes: &[u8]) -> DecodedImage {
    let len = bytes.len();
    match std::panic::catch_unwind(|| decode_jpeg_inner(bytes)) {
        Ok(Some(img)) => img,
        _ => undecodable(len),
    }
}

fn decode_jpeg_inner(bytes: &[u8]) -> Option<DecodedImage> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(bytes, opts);
    let pixels = dec.decode().ok()?;
    let info = dec.info()?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let n = width as usize * height as usize;
    if n == 0 {
        return None;
    }
    let comps = dec
        .get_output_colorspace()
        .map(|c| c.num_components())
        .unwrap_or(3);
    if comps == 0 || pixels.len() < n * comps {
        return None;
    }
    let mut sum = [0u64; 3];
    for px in pixels.chunks_exact(comps).take(n) {
        if comps >= 3 {
            for (s, v) in sum.iter_mut().zip(&px[..3]) {
                *s += u64::from(*v);
            }
        } else {
            for s in &mut sum {
                *s += u64::from(px[0]);
            }
        }
    }
    let mean_rgb = sum.map(|s| s as f64 / n as f64);
    Some(DecodedImage {
        width,
        height,
        mean_rgb,
        colour: nearest_colour(mean_rgb),
        jpeg_len: bytes.len(),
    })
}
