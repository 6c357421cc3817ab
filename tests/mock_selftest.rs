//! Tests of the OpenAI mock itself (tests/common/mock_openai.rs), using raw
//! HTTP/1.1 over `std::net::TcpStream`.

mod common {
    pub mod mock_openai;
}

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::mock_openai::{nearest_colour, MockServer, RecordedRequest, Reply};
use serde_json::{json, Value};

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("response body is JSON")
    }
}

/// Send one request on a fresh connection and read the response
/// (Content-Length framed, or until EOF).
fn http(
    server: &MockServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(server.addr())?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        server.addr(),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (header_end, status, resp_headers) = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before response headers",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..pos]).to_string();
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status code");
            let hs: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            break (pos + 4, status, hs);
        }
    };
    let content_length = resp_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    loop {
        if let Some(cl) = content_length {
            if buf.len() - header_end >= cl {
                buf.truncate(header_end + cl);
                break;
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(HttpResponse {
        status,
        headers: resp_headers,
        body: buf[header_end..].to_vec(),
    })
}

fn post_json(server: &MockServer, body: &Value) -> HttpResponse {
    http(
        server,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        &serde_json::to_vec(body).unwrap(),
        Duration::from_secs(10),
    )
    .expect("request")
}

fn solid_jpeg(rgb: [u8; 3], w: u16, h: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..usize::from(w) * usize::from(h))
        .flat_map(|_| rgb)
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&data, w, h, jpeg_encoder::ColorType::Rgb)
        .expect("encode jpeg");
    out
}

fn image_part(jpeg: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    json!({"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{b64}")}})
}

fn chat_body(text: &str, images: &[Vec<u8>]) -> Value {
    let mut parts = vec![json!({"type": "text", "text": text})];
    parts.extend(images.iter().map(|j| image_part(j)));
    json!({"model": "m", "messages": [{"role": "user", "content": parts}]})
}

fn content_of(v: &Value) -> &Value {
    &v["choices"][0]["message"]["content"]
}

#[test]
fn nearest_colour_picks_palette_entries() {
    assert_eq!(nearest_colour([250.0, 3.0, 10.0]), "red");
    assert_eq!(nearest_colour([0.0, 200.0, 10.0]), "green");
    assert_eq!(nearest_colour([1.0, 1.0, 240.0]), "blue");
    assert_eq!(nearest_colour([240.0, 250.0, 245.0]), "white");
    assert_eq!(nearest_colour([20.0, 10.0, 5.0]), "black");
    assert_eq!(nearest_colour([250.0, 240.0, 10.0]), "yellow");
    assert_eq!(nearest_colour([5.0, 240.0, 250.0]), "cyan");
    assert_eq!(nearest_colour([240.0, 5.0, 250.0]), "magenta");
}

#[test]
fn records_request_and_answers_with_image_colours() {
    let server = MockServer::start();
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert!(server.url().ends_with("/v1"));
    assert_eq!(server.url(), format!("{}/v1", server.base()));

    let red = solid_jpeg([255, 0, 0], 64, 48);
    let blue = solid_jpeg([0, 0, 255], 32, 16);
    let body = json!({
        "model": "test-model",
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": [
                {"type": "text", "text": "Describe"},
                image_part(&red),
                {"type": "text", "text": " these"},
                image_part(&blue),
            ]}
        ]
    });
    let raw = serde_json::to_vec(&body).unwrap();
    let resp = http(
        &server,
        "POST",
        "/v1/chat/completions?api-version=2024-02-01",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer sk-test"),
            ("X-Custom-Thing", "Foo"),
        ],
        &raw,
        Duration::from_secs(10),
    )
    .expect("request");

    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = resp.json();
    assert_eq!(v["id"], "chatcmpl-mock-0");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "test-model");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(content_of(&v), "colours: red blue");
    assert_eq!(v["usage"]["prompt_tokens"], 120);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], 127);

    assert_eq!(server.request_count(), 1);
    let reqs = server.requests();
    let r: &RecordedRequest = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.query.as_deref(), Some("api-version=2024-02-01"));
    assert!(r.headers.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));
    assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(r.header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(r.header("x-custom-thing"), Some("Foo"));
    assert_eq!(r.header("x-missing"), None);
    assert_eq!(r.raw_body, raw);
    assert_eq!(r.body, body);
    assert_eq!(r.text, "Describe these");
    assert_eq!(r.system.as_deref(), Some("You are a test."));
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.colours(), vec!["red", "blue"]);
    assert_eq!((r.images[0].width, r.images[0].height), (64, 48));
    assert_eq!((r.images[1].width, r.images[1].height), (32, 16));
    assert_eq!(r.images[0].jpeg_len, red.len());
    assert_eq!(r.images[1].jpeg_len, blue.len());
    let m = r.images[0].mean_rgb;
    assert!(m[0] > 240.0 && m[1] < 15.0 && m[2] < 15.0, "{m:?}");
    let m = r.images[1].mean_rgb;
    assert!(m[0] < 15.0 && m[1] < 15.0 && m[2] > 240.0, "{m:?}");
}

#[test]
fn all_palette_colours_survive_jpeg() {
    let server = MockServer::start();
    let images: Vec<Vec<u8>> = common::mock_openai::PALETTE
        .iter()
        .map(|(_, rgb)| solid_jpeg(*rgb, 40, 30))
        .collect();
    let v = post_json(&server, &chat_body("all", &images)).json();
    let names: Vec<&str> = common::mock_openai::PALETTE
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(content_of(&v), &format!("colours: {}", names.join(" ")));
    assert_eq!(v["usage"]["prompt_tokens"], 180);
}

#[test]
fn no_images_undecodable_and_non_json() {
    let server = MockServer::start();

    // Plain string content, no images.
    let v = post_json(
        &server,
        &json!({"model": "x", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {"role": "user", "content": "hello"}
        ]}),
    )
    .json();
    assert_eq!(content_of(&v), "colours: none");
    assert_eq!(v["usage"]["prompt_tokens"], 100);

    // Broken base64, bytes that are not a JPEG, and a PNG data URL.
    let not_jpeg = base64::engine::general_purpose::STANDARD.encode(b"definitely not a jpeg");
    let truncated = {
        let j = solid_jpeg([0, 255, 0], 16, 16);
        base64::engine::general_purpose::STANDARD.encode(&j[..j.len() / 3])
    };
    let body = json!({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,!!!notbase64"}},
        {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{not_jpeg}")}},
        {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{truncated}")}},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{not_jpeg}")}},
        image_part(&solid_jpeg([255, 255, 0], 8, 8)),
    ]}]});
    let v = post_json(&server, &body).json();
    let reqs = server.requests();
    let r = &reqs[1];
    assert_eq!(r.images.len(), 5);
    let colours = r.colours();
    assert_eq!(colours[0], "undecodable");
    assert_eq!(colours[1], "undecodable");
    assert_eq!(colours[3], "undecodable");
    assert_eq!(colours[4], "yellow");
    assert_eq!(r.images[0].width, 0);
    assert_eq!(r.images[1].width, 0);
    assert_eq!(r.images[1].jpeg_len, "definitely not a jpeg".len());
    // A truncated JPEG may decode partially or not at all; it must not panic.
    assert!(r.images[2].width == 0 || r.images[2].width == 16);
    assert_eq!(
        content_of(&v).as_str().unwrap(),
        format!("colours: {}", colours.join(" "))
    );

    // Not JSON at all.
    let resp = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        b"hello there",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    let reqs = server.requests();
    let r = &reqs[2];
    assert_eq!(r.body, Value::Null);
    assert_eq!(r.raw_body, b"hello there");
    assert!(r.images.is_empty());
    assert_eq!(r.text, "");
    assert_eq!(r.system, None);
    assert_eq!(content_of(&resp.json()), "colours: none");
    assert_eq!(resp.json()["model"], "mock-model");

    // GET is recorded too (but not GET …/models: see model_list_is_answered_apart).
    let resp = http(
        &server,
        "GET",
        "/v1/files",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(server.requests()[3].method, "GET");
    assert_eq!(server.requests()[3].path, "/v1/files");
    assert_eq!(server.requests()[3].query, None);
    assert_eq!(reqs[0].system.as_deref(), Some("sys"));
}

/// `GET …/models` (the element's start-up check) is answered by the mock
/// itself: 404 by default, a model list after `set_models`; it never shows in
/// `requests()`, the in-flight counts or the policy.
#[test]
fn model_list_is_answered_apart() {
    let server = MockServer::start();
    let policy_calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = policy_calls.clone();
    server.set_policy(move |_, _| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reply::ok()
    });
    let get = |path: &str| {
        http(
            &server,
            "GET",
            path,
            &[("Authorization", "Bearer sk-m")],
            b"",
            Duration::from_secs(10),
        )
        .unwrap()
    };

    // Default: no model list.
    let resp = get("/v1/models");
    assert_eq!(resp.status, 404);
    assert!(resp.json()["error"]["message"].is_string());
    assert_eq!(server.request_count(), 0);
    assert!(server.requests().is_empty());
    assert_eq!(server.max_in_flight(), 0);

    // A served list, on any prefix and with a query.
    server.set_models(Some(vec!["qwen-vl".into(), "other".into()]));
    for path in ["/v1/models", "/models", "/v1/models/?x=1"] {
        let resp = get(path);
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let v = resp.json();
        assert_eq!(v["object"], "list");
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["qwen-vl", "other"], "{path}");
    }
    let seen = server.model_list_requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[3].query.as_deref(), Some("x=1"));
    assert!(seen
        .iter()
        .all(|r| r.method == "GET" && r.header("authorization") == Some("Bearer sk-m")));

    // Back to 404.
    server.set_models(None);
    assert_eq!(get("/v1/models").status, 404);

    // Nothing else changed: chat requests and POST …/models are recorded as before.
    assert_eq!(server.request_count(), 0);
    assert_eq!(policy_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let v = post_json(&server, &chat_body("c", &[])).json();
    assert_eq!(content_of(&v), "colours: none");
    let resp = http(
        &server,
        "POST",
        "/v1/models",
        &[],
        b"{}",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].path, "/v1/models");
    assert_eq!(server.model_list_requests().len(), 5);
    assert_eq!(policy_calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The crate's start-up check against the mock: 404 by default, then the list.
#[test]
fn probe_against_the_mock() {
    use gstvsssummarize::backend::probe::{probe_models, ProbeOutcome};
    use gstvsssummarize::config::{chat_completions_url, ApiKey, EndpointConfig};

    let server = MockServer::start();
    let ep = |model: Option<&str>| EndpointConfig {
        chat_url: chat_completions_url(&url::Url::parse(&server.url()).unwrap()),
        azure: false,
        api_key: ApiKey::new("sk-probe"),
        model: model.unwrap_or("gpt-4o").to_string(),
        model_explicit: model.is_some(),
        more_urls: Vec::new(),
    };
    let t = Duration::from_secs(10);
    assert!(matches!(
        probe_models(&ep(Some("m")), t),
        ProbeOutcome::NoModelList { .. }
    ));
    server.set_models(Some(vec!["served-model".into()]));
    assert_eq!(
        probe_models(&ep(None), t),
        ProbeOutcome::UseModel {
            model: "served-model".into()
        }
    );
    assert!(probe_models(&ep(Some("m")), t).is_error());
    assert!(matches!(
        probe_models(&ep(Some("served-model")), t),
        ProbeOutcome::Served { .. }
    ));
    let seen = server.model_list_requests();
    assert_eq!(seen.len(), 4);
    assert!(seen
        .iter()
        .all(|r| r.path == "/v1/models" && r.header("authorization") == Some("Bearer sk-probe")));
    assert_eq!(server.request_count(), 0);
}

#[test]
fn reply_variants() {
    let server = MockServer::start();
    server.set_policy(|_req, i| match i {
        0 => Reply::with_content("hello world"),
        1 => Reply::Status {
            code: 429,
            retry_after: Some(3),
        },
        2 => Reply::Status {
            code: 500,
            retry_after: None,
        },
        3 => Reply::Garbage,
        4 => Reply::Empty,
        5 => Reply::NullContent,
        6 => Reply::Stall(Duration::from_millis(200)),
        _ => Reply::ok(),
    });
    let body = chat_body("x", &[solid_jpeg([0, 255, 255], 8, 8)]);

    let r = post_json(&server, &body);
    assert_eq!(r.status, 200);
    assert_eq!(content_of(&r.json()), "hello world");
    assert_eq!(r.json()["usage"]["prompt_tokens"], 110);

    let r = post_json(&server, &body);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3"));
    let e = r.json();
    assert!(e["error"]["message"].is_string());
    assert!(e["error"]["type"].is_string());

    let r = post_json(&server, &body);
    assert_eq!(r.status, 500);
    assert_eq!(r.header("retry-after"), None);
    assert!(r.json()["error"]["message"].is_string());

    let r = post_json(&server, &body);
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    let r = post_json(&server, &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"], json!([]));
    assert_eq!(r.json()["object"], "chat.completion");

    let r = post_json(&server, &body);
    assert_eq!(r.status, 200);
    assert_eq!(content_of(&r.json()), &Value::Null);
    assert_eq!(r.json()["choices"][0]["message"]["role"], "assistant");

    // A short stall: answered (504) once it elapses.
    let t = Instant::now();
    let r = post_json(&server, &body);
    assert!(t.elapsed() >= Duration::from_millis(190));
    assert_eq!(r.status, 504);

    let r = post_json(&server, &body);
    assert_eq!(content_of(&r.json()), "colours: cyan");
    assert_eq!(r.json()["id"], "chatcmpl-mock-7");
    assert_eq!(server.request_count(), 8);
}

#[test]
fn stall_times_out_client_without_blocking_others_and_drop_unblocks() {
    let server = MockServer::start();
    const STALL: Duration = Duration::from_secs(60);
    server.set_policy(|req, _| {
        if req.text == "stall" {
            Reply::Stall(STALL)
        } else {
            Reply::ok()
        }
    });
    let stall_body = serde_json::to_vec(&chat_body("stall", &[])).unwrap();
    let stalled_at = Instant::now();
    let err = http(
        &server,
        "POST",
        "/v1/chat/completions",
        &[],
        &stall_body,
        Duration::from_millis(300),
    )
    .err()
    .expect("stalled request must time out on the client");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err:?}"
    );
    // The error kind says that the client's 300 ms timeout ended it (the
    // server would have answered after STALL).
    assert_eq!(server.request_count(), 1);

    // The stalled handler does not block other requests.
    let v = post_json(&server, &chat_body("go", &[solid_jpeg([0, 0, 0], 8, 8)])).json();
    assert_eq!(content_of(&v), "colours: black");
    assert_eq!(server.request_count(), 2);
    assert_eq!(server.max_in_flight(), 2);

    // Dropping the server unblocks the stalled handler: it returns before
    // the stall would have ended on its own.
    drop(server);
    assert!(stalled_at.elapsed() < STALL, "{:?}", stalled_at.elapsed());
}

#[test]
fn concurrency_is_counted() {
    let server = MockServer::start();
    server.set_policy(|_, _| Reply::delayed(Duration::from_millis(800)));
    assert_eq!(server.max_in_flight(), 0);
    assert!(!server.wait_for_requests(1, Duration::from_millis(50)));

    let n = 5;
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    let colour = common::mock_openai::PALETTE[i].1;
                    post_json(server, &chat_body("c", &[solid_jpeg(colour, 8, 8)]))
                })
            })
            .collect();
        assert!(server.wait_for_requests(n, Duration::from_secs(10)));
        for (i, h) in handles.into_iter().enumerate() {
            let v = h.join().unwrap().json();
            assert_eq!(
                content_of(&v).as_str().unwrap(),
                format!("colours: {}", common::mock_openai::PALETTE[i].0)
            );
        }
    });
    // Answered in parallel, not one after another: all n were in flight at
    // once (each is held 800 ms).
    assert!(t.elapsed() >= Duration::from_millis(800));
    assert_eq!(server.request_count(), n);
    assert_eq!(server.max_in_flight(), n);
    let t = Instant::now();
    while server.in_flight() != 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.in_flight(), 0);
    assert!(server.wait_for_requests(n, Duration::from_millis(10)));
    assert!(!server.wait_for_requests(n + 1, Duration::from_millis(100)));

    // Sequential requests afterwards do not raise the maximum.
    server.set_policy(|_, _| Reply::ok());
    post_json(&server, &chat_body("c", &[]));
    assert_eq!(server.max_in_flight(), n);
}

/// The crate's own HTTP client (reqwest, pooled keep-alive connections) works
/// against the mock, concurrently and with client-side timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn works_with_reqwest() {
    let server = MockServer::start();
    server.set_policy(|req, _| match req.text.as_str() {
        "stall" => Reply::Stall(Duration::from_secs(60)),
        "busy" => Reply::Status {
            code: 503,
            retry_after: Some(1),
        },
        _ => Reply::delayed(Duration::from_millis(200)),
    });
    let client = reqwest::Client::new();
    let endpoint = format!("{}/chat/completions", server.url());

    let mut tasks = Vec::new();
    for (name, rgb) in common::mock_openai::PALETTE.iter().take(4) {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let body = chat_body("c", &[solid_jpeg(*rgb, 16, 16), solid_jpeg(*rgb, 16, 16)]);
        tasks.push(tokio::spawn(async move {
            let v: Value = client
                .post(&endpoint)
                .bearer_auth("sk-x")
                .json(&body)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                content_of(&v).as_str().unwrap(),
                format!("colours: {name} {name}")
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.max_in_flight(), 4);
    assert!(server
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer sk-x")));

    let resp = client
        .post(&endpoint)
        .json(&chat_body("busy", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers().get("retry-after").unwrap().to_str().unwrap(),
        "1"
    );

    let err = client
        .post(&endpoint)
        .timeout(Duration::from_millis(300))
        .json(&chat_body("stall", &[]))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(server.request_count(), 6);
}
