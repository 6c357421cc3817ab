// SPDX-License-Identifier: MPL-2.0
//! Several servers in `endpoint` (src/endpoints.rs) with the real
//! `openai-compat` backend: a server that refuses connections and one that
//! answers 503 are left for a good one, without spending retries; each
//! caption says which server answered; the list is parsed from the
//! property. Servers are a few lines of `std::net` on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "common/port.rs"]
mod port;
use port::ClosedPort;

use gstvsssummarize::backend::openai::{OpenAiBackend, OpenAiOptions, RetryTiming};
use gstvsssummarize::backend::{Backend, ChunkJob, FrameOptions, GenParams};
use gstvsssummarize::config::{resolve, Env, UserSettings};
use gstvsssummarize::gpu::FramePrep;
use gstvsssummarize::prompt::TimeStyle;
use tokio_util::sync::CancellationToken;

const FAST: RetryTiming = RetryTiming {
    first: Duration::from_millis(20),
    max: Duration::from_millis(100),
    retry_after_cap: Duration::from_millis(50),
};

/// Answers every request on `l` with `status` (a chat completion for 200);
/// counts the requests.
fn server(l: TcpListener, status: &'static str, hits: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let hits = hits.clone();
            std::thread::spawn(move || answer(s, status, &hits));
        }
    });
}

fn answer(s: TcpStream, status: &str, hits: &AtomicUsize) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let body = if status.starts_with("200") {
            r#"{"choices":[{"message":{"role":"assistant","content":"ok"}}]}"#
        } else {
            r#"{"error":{"message":"overloaded"}}"#
        };
        let out = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn options(endpoint: &str) -> OpenAiOptions {
    let user = UserSettings {
        endpoint: Some(endpoint.into()),
        model_name: Some("m".into()),
        ..Default::default()
    };
    let r = resolve(&user, Env::from_pairs([])).unwrap();
    OpenAiOptions {
        endpoint: r.endpoint.unwrap(),
        gen: GenParams::default(),
        frames: FrameOptions {
            width: 0,
            height: 0,
            jpeg_quality: 80,
        },
        prep: FramePrep::Cpu,
        request_timeout: Duration::from_secs(10),
        // No retries: a failover must not need one.
        max_retries: 0,
        server_wait: Duration::from_secs(30),
        vision: Default::default(),
    }
}

fn job(i: u64) -> ChunkJob {
    ChunkJob {
        chunk_index: i,
        frames: vec![],
        frame_labels: vec![],
        frame_times: vec![],
        time_style: TimeStyle::Seconds,
        stream_id: String::new(),
        prompts: None,
    }
}

#[test]
fn a_refusing_server_is_left_for_a_good_one() {
    let down = ClosedPort::new();
    let good = TcpListener::bind("127.0.0.1:0").unwrap();
    let good_port = good.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    server(good, "200 OK", hits.clone());
    let endpoint = format!(
        "http://127.0.0.1:{}/v1, http://user:pw@127.0.0.1:{good_port}/v1",
        down.port()
    );
    let b = OpenAiBackend::new(options(&endpoint))
        .unwrap()
        .with_retry_timing(FAST);
    let (key, servers) = b.budget_key().unwrap();
    assert_eq!(servers, 2);
    assert!(!key.contains("pw"), "{key}");
    for i in 0..6 {
        let c = b
            .caption(&job(i), &CancellationToken::new())
            .unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        assert_eq!(
            c.endpoint.as_deref(),
            Some(format!("http://127.0.0.1:{good_port}/v1").as_str()),
            "the server that answered, without user info"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 6);
}

#[test]
fn a_server_answering_503_is_taken_out() {
    let (bad, good) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (bad_port, good_port) = (
        bad.local_addr().unwrap().port(),
        good.local_addr().unwrap().port(),
    );
    let (bad_hits, good_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    server(bad, "503 Service Unavailable", bad_hits.clone());
    server(good, "200 OK", good_hits.clone());
    let endpoint = format!("http://127.0.0.1:{bad_port}/v1,http://127.0.0.1:{good_port}/v1");
    let mut o = options(&endpoint);
    o.max_retries = 1;
    let b = OpenAiBackend::new(o).unwrap().with_retry_timing(FAST);
    let mut ok = 0;
    for i in 0..20 {
        if b.caption(&job(i), &CancellationToken::new()).is_ok() {
            ok += 1;
        }
    }
    // Each 503 is retried once, on the other server (fewest in flight,
    // then fewest picks); after 3 the bad one is out for 5 s.
    assert_eq!(ok, 20, "every chunk captioned by the good server");
    // (A machine slower than 5 s for these 20 requests probes it again:
    // one more hit each 5, 10 … s.)
    let bad = bad_hits.load(Ordering::SeqCst);
    assert!((3..=5).contains(&bad), "out after 3 failures: {bad} hits");
    assert_eq!(good_hits.load(Ordering::SeqCst), 20);
}

#[test]
fn a_list_is_parsed_and_checked_entry_by_entry() {
    let user = |e: &str| UserSettings {
        endpoint: Some(e.into()),
        ..Default::default()
    };
    let none = || Env::from_pairs([]);
    let r = resolve(&user("http://a:1/v1 , http://b:2/v1/,"), none()).unwrap();
    let ep = r.endpoint.unwrap();
    let urls: Vec<String> = ep.chat_urls().map(|u| u.to_string()).collect();
    assert_eq!(
        urls,
        [
            "http://a:1/v1/chat/completions",
            "http://b:2/v1/chat/completions"
        ]
    );
    let err = resolve(&user("http://a:1/v1,b:2"), none())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'b:2'") && err.contains("endpoint property"),
        "{err}"
    );
    let err = resolve(
        &user("https://x.openai.azure.com,https://y.openai.azure.com"),
        Env::from_pairs([("AZURE_OPENAI_API_KEY", "k")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not supported for Azure"), "{err}");
}
