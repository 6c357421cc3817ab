// SPDX-License-Identifier: MPL-2.0
//! The API key never appears in logs (any level), property reads, .dot
//! dumps, error records or bus messages. Own test binary: it turns on
//! GStreamer logging at the highest level for the whole process.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use gst::glib;
use gst::prelude::*;

const T: Duration = Duration::from_secs(60);

/// GStreamer's own log goes to /dev/null in this binary: the tests turn
/// logging up to MEMDUMP for the whole process and capture it themselves,
/// and those ~14,000 lines would otherwise flood the test output. (Set
/// before `gst::init`, which reads `GST_DEBUG_FILE`; the default log
/// function is never removed, see below.)
fn init_quiet() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::env::set_var("GST_DEBUG_FILE", "/dev/null"));
    init();
}

#[test]
fn the_key_never_leaks() {
    init_quiet();
    let secret = "sk-LEAKCHECK-0123456789";
    // Capture every GStreamer log line at the highest level.
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let l2 = logs.clone();
    let capturing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let c2 = capturing.clone();
    gst::log::set_active(true);
    gst::log::set_default_threshold(gst::DebugLevel::Memdump);
    // Never removed: GStreamer 1.22's gst_debug_remove_log_function frees
    // the function while other threads (the other test's pipeline, this
    // one's last teardown) may still be running it, a use-after-free that
    // showed up as a rare SIGSEGV in CI. It stops capturing instead.
    let _func = gst::log::add_log_function(move |cat, level, _file, _fn, _line, _obj, msg| {
        if !c2.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        // Format outside the lock: formatting must not re-enter this function
        // while the lock is held.
        let line = format!(
            "{} {:?} {}\n",
            cat.name(),
            level,
            msg.get().map(|s| s.to_string()).unwrap_or_default()
        );
        l2.lock().unwrap().push_str(&line);
    });

    let server = MockServer::start();
    server.set_policy(move |_, _| Reply::Status {
        code: 401,
        retry_after: None,
    });
    // The key is set as a property, not typed into a launch line:
    // gst_parse_launch itself logs the whole description (GST_PIPELINE
    // category), which no element can prevent (see README).
    let v = Video::small(1);
    let r = with_video(
        &format!(
            "endpoint={} chunk-duration=1 num-frames-per-chunk=1",
            server.url()
        ),
        &v,
        false,
    );
    r.element.set_property("api-key", secret);
    r.play().unwrap();
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T));
    r.drain_bus();
    // It was sent.
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    // Not readable back.
    let pspec = r.element.find_property("api-key").unwrap();
    assert!(!pspec.flags().contains(glib::ParamFlags::READABLE));
    // Not in a .dot dump.
    let dot = r.pipeline.debug_to_dot_data(gst::DebugGraphDetails::all());
    assert!(!dot.contains(secret));
    assert!(!dot.contains("LEAKCHECK"));
    let recs = r.outputs().json();
    let err = recs[0]["error"].as_str().unwrap().to_string();
    assert!(err.contains("401") && err.contains("api-key"), "{err}");
    r.stop();
    gst::log::set_default_threshold(gst::DebugLevel::None);
    capturing.store(false, std::sync::atomic::Ordering::Release);
    let logs = logs.lock().unwrap();
    assert!(logs.contains("vsssummarize"), "logging was captured");
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains("LEAKCHECK")).collect();
    assert!(
        leaks.is_empty(),
        "the key appeared in the GStreamer log: {leaks:#?}"
    );
    assert!(!err.contains("LEAKCHECK"));
    for m in &r.outputs().messages {
        assert!(!m.to_string().contains("LEAKCHECK"));
    }
}

/// A server that answers 401 and echoes the key it was sent in its error
/// message, as OpenAI does ("Incorrect API key provided: sk-...").
#[test]
fn a_server_echoing_the_key_is_scrubbed() {
    init_quiet();
    let secret = "sk-ECHOED-abcdef123456";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // Read headers and the announced body.
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
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
            let text = String::from_utf8_lossy(&buf).to_string();
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("authorization: Bearer "))
                .unwrap_or("none")
                .trim()
                .to_string();
            let body = format!(
                "{{\"error\":{{\"message\":\"Incorrect API key provided: {key}.\",\"type\":\"invalid_request_error\"}}}}"
            );
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let r = run_video(
        &format!(
            "endpoint=http://127.0.0.1:{port}/v1 api-key={secret} chunk-duration=1 num-frames-per-chunk=1"
        ),
        &Video::small(1),
        T,
    );
    let recs = r.outputs().json();
    let err = recs[0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("Incorrect API key provided: <redacted>"),
        "{err}"
    );
    assert!(!err.contains("ECHOED"));
    for m in &r.outputs().messages {
        assert!(!m.to_string().contains("ECHOED"));
    }
    r.stop();
}
