// SPDX-License-Identifier: MPL-2.0
//! The `openai-compat` backend against hostile or unusual HTTP servers
//! (redirects, echoed keys, dropped connections, a server that is not up
//! yet, absurd `Retry-After`, endless bodies, FastAPI error bodies, broken
//! JSON fields, tiny timeouts). The backend is driven directly; every server
//! is a few lines of `std::net` on loopback (127.0.0.2 plays "another host").

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/port.rs"]
mod port;
use port::ClosedPort;

use gstvsssummarize::backend::openai::{OpenAiBackend, OpenAiOptions, RetryTiming};
use gstvsssummarize::backend::{Backend, Caption, ChunkJob, FrameOptions, GenParams};
use gstvsssummarize::config::{ApiKey, EndpointConfig};
use gstvsssummarize::frames::{Colorimetry, PixelFormat, RawFrame};
use gstvsssummarize::gpu::FramePrep;
use gstvsssummarize::prompt::TimeStyle;
use tokio_util::sync::CancellationToken;

/// 48 characters, like the key in the report.
const KEY: &str = "sk-HOSTILE0123456789abcdefghijklmnopqrstuvwxyzAB";

/// Backoffs short enough for tests.
const FAST: RetryTiming = RetryTiming {
    first: Duration::from_millis(20),
    max: Duration::from_millis(100),
    retry_after_cap: Duration::from_millis(50),
};

fn opts(url: &str) -> OpenAiOptions {
    OpenAiOptions {
        endpoint: EndpointConfig {
            chat_url: url.parse().unwrap(),
            azure: false,
            api_key: None,
            model: "m".into(),
            model_explicit: true,
            more_urls: Vec::new(),
        },
        gen: GenParams {
            prompt: "Describe.".into(),
            ..GenParams::default()
        },
        frames: FrameOptions {
            width: 0,
            height: 0,
            jpeg_quality: 80,
        },
        prep: FramePrep::Cpu,
        request_timeout: Duration::from_secs(5),
        max_retries: 0,
        server_wait: Duration::ZERO,
        vision: Default::default(),
    }
}

fn backend(o: OpenAiOptions) -> OpenAiBackend {
    OpenAiBackend::new(o).unwrap().with_retry_timing(FAST)
}

fn job() -> ChunkJob {
    ChunkJob {
        chunk_index: 0,
        frames: vec![Arc::new(RawFrame {
            format: PixelFormat::Rgb,
            width: 8,
            height: 8,
            planes: vec![vec![128; 8 * 8 * 3]],
            strides: vec![8 * 3],
            colorimetry: Colorimetry::default(),
        })],
        frame_labels: vec!["0.00".into()],
        frame_times: vec![0.0],
        time_style: TimeStyle::Seconds,
        stream_id: String::new(),
        prompts: None,
    }
}

fn caption(b: &OpenAiBackend) -> Result<Caption, String> {
    b.caption(&job(), &CancellationToken::new())
        .map_err(|e| e.to_string())
}

fn chat_url(host: &str, port: u16) -> String {
    format!("http://{host}:{port}/v1/chat/completions")
}

/// A request as the servers see it.
#[allow(dead_code)]
struct Req {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Req> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if k == "content-length" {
            len = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Req {
        line: line.trim_end().to_string(),
        headers,
        body,
    })
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn ok(text: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2}
    })
    .to_string();
    response(
        "200 OK",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

/// Serves every connection on its own thread: `handler(connection index,
/// stream)`. The accept loop ends when `handler` has been given `limit`
/// connections (the listener is then closed).
fn serve(
    l: TcpListener,
    limit: usize,
    handler: impl Fn(usize, TcpStream) + Send + Sync + 'static,
) -> std::thread::JoinHandle<()> {
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for i in 0..limit {
            let Ok((s, _)) = l.accept() else { return };
            let h = Arc::clone(&handler);
            std::thread::spawn(move || h(i, s));
        }
    })
}

/// Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
fn reset(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

fn assert_no_key_part(e: &str) {
    for i in 0..=KEY.len() - 8 {
        assert!(
            !e.contains(&KEY[i..i + 8]),
            "key characters {i}..{} leak: {e}",
            i + 8
        );
    }
}

#[test]
fn redirects_are_not_followed_and_the_other_host_gets_nothing() {
    let other = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2 (Linux loopback)");
    let other_port = other.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    serve(other, usize::MAX, move |_, s| {
        h.fetch_add(1, Ordering::SeqCst);
        let mut r = BufReader::new(s.try_clone().unwrap());
        if read_request(&mut r).is_some() {
            let _ = (&s).write_all(&ok("FROM THE OTHER HOST"));
        }
    });
    let target = format!("http://user:PASSWORD-X@127.0.0.2:{other_port}/x?sig=QUERY-X#frag");
    for (code, location) in [
        ("301 Moved Permanently", target.as_str()),
        ("302 Found", target.as_str()),
        ("303 See Other", target.as_str()),
        ("307 Temporary Redirect", target.as_str()),
        ("308 Permanent Redirect", target.as_str()),
        ("307 Temporary Redirect", "/elsewhere?k=QUERY-X"),
    ] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let loc = location.to_string();
        serve(l, usize::MAX, move |_, s| {
            let mut r = BufReader::new(s.try_clone().unwrap());
            while read_request(&mut r).is_some() {
                let resp = response(code, &[("location", &loc)], b"moved");
                if (&s).write_all(&resp).is_err() {
                    return;
                }
            }
        });
        let mut o = opts(&format!(
            "{}?api-version=2024-06-01",
            chat_url("127.0.0.1", port)
        ));
        o.endpoint.azure = true;
        o.endpoint.api_key = ApiKey::new(KEY);
        o.max_retries = 2;
        let e = caption(&backend(o)).unwrap_err();
        eprintln!("{e}");
        let status = &code[..3];
        let expected_target = if location.starts_with('/') {
            format!("http://127.0.0.1:{port}/elsewhere")
        } else {
            format!("http://127.0.0.2:{other_port}/x")
        };
        assert!(
            e.starts_with(&format!("HTTP {status}"))
                && e.contains(&format!(
                    "from {} redirects to {expected_target};",
                    chat_url("127.0.0.1", port)
                ))
                && e.contains("does not follow redirects: set endpoint to the final URL"),
            "{e}"
        );
        assert!(
            !e.contains("PASSWORD-X") && !e.contains("QUERY-X") && !e.contains("frag"),
            "{e}"
        );
        assert_no_key_part(&e);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the other host was contacted"
    );
}

#[test]
fn a_key_echoed_across_the_snippet_cut_is_redacted() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    serve(l, usize::MAX, move |i, s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        if read_request(&mut r).is_none() {
            return;
        }
        let body = if i == 0 {
            // The whole key, straddling character 200.
            format!("{}{KEY} is not valid", "x".repeat(170))
        } else {
            // A part of the key (40 characters) that the cut ends inside.
            format!("{}{}!!! rest", "y".repeat(190), &KEY[..40])
        };
        let _ = (&s).write_all(&response(
            "401 Unauthorized",
            &[("content-type", "text/plain"), ("connection", "close")],
            body.as_bytes(),
        ));
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.endpoint.api_key = ApiKey::new(KEY);
    let b = backend(o);
    for _ in 0..2 {
        let e = caption(&b).unwrap_err();
        eprintln!("{e}");
        assert!(e.starts_with("HTTP 401"), "{e}");
        assert!(e.contains("<redacted>"), "{e}");
        assert_no_key_part(&e);
    }
}

#[test]
fn closed_and_reset_connections_are_retried() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    serve(l, usize::MAX, move |i, s| {
        c.fetch_add(1, Ordering::SeqCst);
        let mut r = BufReader::new(s.try_clone().unwrap());
        match i {
            // Closed at once, before the request is read.
            0 => drop(s),
            // Reset after reading the request: "Connection reset by peer".
            1 => {
                let _ = read_request(&mut r);
                reset(s);
            }
            // Closed after reading the request, without an answer:
            // "connection closed before message completed".
            2 => {
                let _ = read_request(&mut r);
                drop(r);
                drop(s);
            }
            _ => {
                while read_request(&mut r).is_some() {
                    if (&s).write_all(&ok("A cat.")).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.max_retries = 4;
    let c = caption(&backend(o)).unwrap();
    assert_eq!(c.text, "A cat.");
    assert!(conns.load(Ordering::SeqCst) >= 4);
}

#[test]
fn a_server_that_comes_up_late_is_waited_for() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let l = closed.up();
        serve(l, usize::MAX, |_, s| {
            let mut r = BufReader::new(s.try_clone().unwrap());
            while read_request(&mut r).is_some() {
                if (&s).write_all(&ok("Up now.")).is_err() {
                    return;
                }
            }
        })
        .join()
        .unwrap();
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    // Not bounded by max-retries.
    o.max_retries = 0;
    o.server_wait = Duration::from_secs(10);
    let b = OpenAiBackend::new(o)
        .unwrap()
        .with_retry_timing(RetryTiming {
            first: Duration::from_millis(100),
            max: Duration::from_millis(300),
            ..RetryTiming::default()
        });
    let c = caption(&b).unwrap();
    assert_eq!(c.text, "Up now.");
    // It waited for the server (the backoff's cap of 300 ms between tries
    // is checked on virtual time in src/retry.rs).
    let dt = t0.elapsed();
    assert!(dt >= Duration::from_millis(1400), "{dt:?}");
}

#[test]
fn a_server_that_never_comes_up_fails_after_server_wait() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.max_retries = 2;
    o.server_wait = Duration::from_secs(1);
    let b = backend(o);
    let t0 = Instant::now();
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    // It waited server-wait out, then gave up through the server-wait path
    // (the text below), not through max-retries.
    let dt = t0.elapsed();
    assert!(dt >= Duration::from_millis(950), "{dt:?}: {e}");
    assert!(
        e.contains(&format!(
            "cannot connect to {}",
            chat_url("127.0.0.1", port)
        )) && e.contains("did not come up within server-wait"),
        "{e}"
    );
}

#[test]
fn server_wait_is_shared_by_chunks_and_reset_by_an_answer() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.max_retries = 1;
    o.server_wait = Duration::from_millis(800);
    let b = backend(o);
    // First chunk: waits out server-wait.
    let t0 = Instant::now();
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(t0.elapsed() >= Duration::from_millis(750), "{e}");
    assert!(e.contains("server-wait"), "{e}");
    // Later chunks: the server has been down longer than server-wait, so
    // only the normal retries (FAST) are made.
    // Exactly 1 + max-retries attempts: a wait for the server would count
    // as a further attempt.
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("server-wait") && e.contains("gave up after 2 attempts"),
        "{e}"
    );
    // An answer resets it ...
    let l = closed.up();
    let server = serve(l, 1, |_, s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        if read_request(&mut r).is_some() {
            let _ = (&s).write_all(&response(
                "400 Bad Request",
                &[("connection", "close")],
                b"no",
            ));
        }
    });
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(e.starts_with("HTTP 400"), "{e}");
    server.join().unwrap();
    closed.down();
    // ... so the next outage is waited for again.
    let t0 = Instant::now();
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(t0.elapsed() >= Duration::from_millis(750), "{e}");
    assert!(e.contains("did not come up within server-wait"), "{e}");
}

#[test]
fn keep_alive_connections_closed_by_the_server_are_retried() {
    // Like uvicorn's keep-alive timeout, but deterministic: a request that
    // arrives on a kept-alive connection idle for 40 ms or more is the one
    // the server's idle timer "just" fired for: the connection is closed
    // (FIN or reset) without an answer.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    serve(l, usize::MAX, move |i, s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut last: Option<Instant> = None;
        while let Some(_req) = read_request(&mut r) {
            if last.is_some_and(|t| t.elapsed() >= Duration::from_millis(40)) {
                c.fetch_add(1, Ordering::SeqCst);
                drop(r);
                if i % 2 == 0 {
                    reset(s);
                } else {
                    drop(s);
                }
                return;
            }
            if (&s).write_all(&ok("A dog.")).is_err() {
                return;
            }
            last = Some(Instant::now());
        }
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.max_retries = 2;
    let b = backend(o);
    for k in 0..30 {
        let c = caption(&b).unwrap_or_else(|e| panic!("request {k}: {e}"));
        assert_eq!(c.text, "A dog.");
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(
        closed.load(Ordering::SeqCst) >= 10,
        "the race was not exercised"
    );
}

#[test]
fn an_absurd_retry_after_does_not_panic() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    serve(l, usize::MAX, move |_, s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        while read_request(&mut r).is_some() {
            let resp = if n2.fetch_add(1, Ordering::SeqCst) == 0 {
                response(
                    "503 Service Unavailable",
                    &[("retry-after", "1e30")],
                    b"busy",
                )
            } else {
                ok("Patience.")
            };
            if (&s).write_all(&resp).is_err() {
                return;
            }
        }
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.max_retries = 1;
    let c = caption(&backend(o)).unwrap();
    assert_eq!(c.text, "Patience.");
    assert_eq!(n.load(Ordering::SeqCst), 2);
}

#[test]
fn endless_and_oversized_bodies_stop_at_the_limit() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    serve(l, usize::MAX, move |i, s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        if read_request(&mut r).is_none() {
            return;
        }
        let mut w = &s;
        if i == 0 {
            // A chunked body that never ends (throttled to ~64 MB/s).
            let _ = w.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            let head = br#"{"choices":[{"message":{"content":""#;
            let _ = w.write_all(format!("{:x}\r\n", head.len()).as_bytes());
            let _ = w.write_all(head);
            let _ = w.write_all(b"\r\n");
            let chunk = vec![b'a'; 64 * 1024];
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                c.extend_from_slice(&chunk);
                c.extend_from_slice(b"\r\n");
                if w.write_all(&c).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            // Declares 50 MiB, then trickles.
            let _ = w.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 52428800\r\n\r\n{\"choices\":",
            );
            std::thread::sleep(Duration::from_secs(10));
        }
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.request_timeout = Duration::from_secs(4);
    let b = backend(o);
    for _ in 0..2 {
        // Ended by the size cap (this text), not by request-timeout (which
        // would say "timed out").
        let e = caption(&b).unwrap_err();
        eprintln!("{e}");
        assert!(
            e.contains(&format!(
                "the response from {} exceeded 8 MiB",
                chat_url("127.0.0.1", port)
            )),
            "{e}"
        );
    }
}

/// One answer per connection: `(status, content-type, body)` by connection index.
fn answering(replies: Vec<(&'static str, &'static str, String)>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let replies = Arc::new(replies);
    serve(l, usize::MAX, move |i, s| {
        let mut r = BufReader::new(s.try_clone().unwrap());
        if read_request(&mut r).is_none() {
            return;
        }
        let (status, ct, body) = &replies[i.min(replies.len() - 1)];
        let _ = (&s).write_all(&response(
            status,
            &[("content-type", ct), ("connection", "close")],
            body.as_bytes(),
        ));
    });
    port
}

#[test]
fn error_bodies_of_real_servers_are_explained() {
    let port = answering(vec![
        (
            "422 Unprocessable Entity",
            "application/json",
            r#"{"detail":[{"type":"extra_forbidden","loc":["body","top_k"],"msg":"Extra inputs are not permitted","input":20}]}"#.into(),
        ),
        (
            "400 Bad Request",
            "application/json",
            r#"{"error":"Unexpected fields in the request: {'seed'}"}"#.into(),
        ),
        (
            "403 Forbidden",
            "application/json",
            r#"{"detail":"Not authenticated"}"#.into(),
        ),
        (
            "500 Internal Server Error",
            "text/plain",
            "Internal Server Error".into(),
        ),
    ]);
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.gen.top_k = 20;
    let b = backend(o.clone());
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("body.top_k: Extra inputs are not permitted")
            && e.contains("top-k=0")
            && !e.contains("extra_forbidden"),
        "{e}"
    );
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("HTTP 400 Bad Request from")
            && e.contains(": Unexpected fields in the request: {'seed'}")
            && e.contains("seed=-1")
            && !e.contains("\"error\""),
        "{e}"
    );
    o.endpoint.azure = true;
    o.endpoint.api_key = ApiKey::new(KEY);
    let b = backend(o);
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains(": Not authenticated (")
            && e.contains("api-key")
            && e.contains("AZURE_OPENAI_API_KEY")
            && !e.contains("detail"),
        "{e}"
    );
    let e = caption(&b).unwrap_err();
    eprintln!("{e}");
    assert!(e.ends_with(": Internal Server Error"), "{e}");
}

#[test]
fn a_good_caption_survives_a_bad_usage_number_and_a_lone_surrogate() {
    let port = answering(vec![(
        "200 OK",
        "application/json",
        r#"{"choices":[{"message":{"content":"A cat \ud800 sits."},"logprobs":{"x":-1e999}}],"usage":{"prompt_tokens":5,"completion_tokens":1e400}}"#.into(),
    )]);
    let c = caption(&backend(opts(&chat_url("127.0.0.1", port)))).unwrap();
    assert_eq!(c.text, "A cat \u{FFFD} sits.");
    assert_eq!((c.input_tokens, c.output_tokens), (5, 0));
}

#[test]
fn a_tiny_request_timeout_is_reported_meaningfully() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    serve(l, usize::MAX, |_, s| {
        std::thread::sleep(Duration::from_secs(3));
        drop(s);
    });
    let mut o = opts(&chat_url("127.0.0.1", port));
    o.request_timeout = Duration::from_micros(100);
    let e = caption(&backend(o)).unwrap_err();
    eprintln!("{e}");
    assert!(
        e.contains("timed out after 0.1 ms (request-timeout)"),
        "{e}"
    );
}
