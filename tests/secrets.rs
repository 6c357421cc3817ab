// SPDX-License-Identifier: MPL-2.0
//! The API key never appears in logs (any level), property reads, .dot
//! dumps, error records or bus messages. Own test binary: it turns on
//! GStreamer logging at the highest level for the whole process.

mod common;

use std::time::Duration;

use common::*;
use gst::glib;
use gst::prelude::*;
use serde_json::json;

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
    let server = MockServer::start();
    server.set_policy(|req, _| {
        let key = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("none");
        Reply::Json {
            code: 401,
            body: json!({"error": {
                "message": format!("Incorrect API key provided: {key}."),
                "type": "invalid_request_error",
            }}),
        }
    });
    let r = run_video(
        &format!(
            "endpoint={} api-key={secret} chunk-duration=1 num-frames-per-chunk=1",
            server.url()
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

/// `llm-api-key` and `alert-webhook-token`: sent where they belong, never
/// readable back, never in a .dot dump, a record, a bus message or a
/// warning (a failing LLM and a failing webhook included).
#[test]
fn the_llm_key_and_the_webhook_token_never_leak() {
    init_quiet();
    let (llm_key, token) = ("sk-LLMLEAK-0123456789", "tok-HOOKLEAK-987654321");
    let vlm = MockServer::start();
    let llm = MockServer::start();
    // Event checks answer (every caption says "colours": an alert each);
    // summaries fail with 401.
    llm.set_policy(|q, _| {
        if q.is_event_check() {
            Reply::ok()
        } else {
            Reply::Status {
                code: 401,
                retry_after: None,
            }
        }
    });
    // A webhook that answers 500: its failure is posted as a warning.
    let hook = MockServer::start();
    hook.set_policy(|_, _| Reply::Status {
        code: 500,
        retry_after: None,
    });
    let hook_url = format!("{}/a", hook.base());
    let v = Video::small(2);
    let r = with_video(
        &format!(
            "endpoint={} model-name=m llm-endpoint={} llm-model-name=l chunk-duration=1 num-frames-per-chunk=1 max-retries=0 summarize=true alert-webhook={hook_url} events=colours",
            vlm.url(),
            llm.url()
        ),
        &v,
        false,
    );
    r.element.set_property("llm-api-key", llm_key);
    r.element.set_property("alert-webhook-token", token);
    r.play().unwrap();
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T));
    r.drain_bus();
    // Sent where it belongs, and only there.
    let reqs = llm.requests();
    assert!(!reqs.is_empty());
    assert!(reqs
        .iter()
        .all(|q| q.header("authorization") == Some(format!("Bearer {llm_key}").as_str())));
    assert!(vlm
        .requests()
        .iter()
        .all(|q| q.header("authorization").is_none()));
    for name in ["llm-api-key", "alert-webhook-token"] {
        let pspec = r.element.find_property(name).unwrap();
        assert!(
            !pspec.flags().contains(glib::ParamFlags::READABLE),
            "{name}"
        );
    }
    let dot = r.pipeline.debug_to_dot_data(gst::DebugGraphDetails::all());
    assert!(!dot.contains("LLMLEAK") && !dot.contains("HOOKLEAK"));
    let o = r.outputs();
    let all: Vec<String> = o
        .json()
        .iter()
        .map(|j| j.to_string())
        .chain(o.messages.iter().map(|m| m.to_string()))
        .chain(o.warnings.iter().cloned())
        .collect();
    // The failures were reported (so there was text that could leak).
    assert!(all.iter().any(|t| t.contains("HTTP 401")), "{all:#?}");
    assert!(
        all.iter()
            .any(|t| t.contains("not delivered") && t.contains("500")),
        "{all:#?}"
    );
    let hooks = hook.requests();
    assert!(!hooks.is_empty());
    assert!(hooks
        .iter()
        .all(|h| h.header("authorization") == Some(&format!("Bearer {token}"))));
    for t in &all {
        assert!(!t.contains("LLMLEAK") && !t.contains("HOOKLEAK"), "{t}");
    }
    drop(o);
    r.stop();
}
