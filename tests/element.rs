// SPDX-License-Identifier: MPL-2.0
//! End-to-end tests of `vsssummarize` against a local OpenAI-compatible mock
//! on 127.0.0.1 that decodes every image it receives.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const T: Duration = Duration::from_secs(60);

fn props(server: &MockServer, extra: &str) -> String {
    format!(
        "endpoint={} model-name=test-model api-key=sk-test-SECRET-123 max-retries=0 request-timeout=10 {extra}",
        server.url()
    )
}

/// Chunk k is sent chunk k's frames: the mock names the colour of every
/// image, and the video's colour changes every second.
#[test]
fn chunks_carry_their_own_frames_and_request_is_well_formed() {
    let server = MockServer::start();
    let v = Video {
        width: 160,
        height: 120,
        fps: 10,
        seconds: 7,
    };
    let r = with_video(
        &props(
            &server,
            "chunk-duration=2 num-frames-per-chunk=4 frame-width=80 system-prompt=sys-text prompt=Describe. top-k=5 seed=42",
        ),
        &v,
        false,
    );
    r.play().unwrap();
    // Second by second, each chunk's record awaited before more video goes
    // in, so that records come back while video still flows and can ride
    // on it as metas (chunk k is complete once second 2(k+1) arrives).
    for s in 0..v.seconds {
        r.push_range(&v, s * v.fps, (s + 1) * v.fps);
        let complete = (s / 2) as usize;
        let deadline = Instant::now() + T;
        while r.outputs().summaries.len() < complete && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    r.end();
    assert!(r.wait_eos(T));
    let o = r.outputs();
    let recs = o.json();
    // 7 s in 2 s chunks: [0,2) [2,4) [4,6) [6,7)
    assert_eq!(recs.len(), 4, "{recs:?}");
    for (k, rec) in recs.iter().enumerate() {
        assert_eq!(rec["chunk-index"], k as u64);
        assert_eq!(rec["start"], (2 * k) as f64);
        assert!(rec.get("error").is_none(), "{rec}");
        // The frames are at start + i*0.5 s; two per second.
        let expected: Vec<&str> = rec["frame-times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| colour_of_second(t.as_f64().unwrap() as u64).0)
            .collect();
        assert_eq!(rec["text"], format!("colours: {}", expected.join(" ")));
        assert_eq!(rec["backend"], "openai-compat");
        assert_eq!(rec["model"], "test-model");
        assert!(rec["input-tokens"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        recs[0]["frame-times"],
        serde_json::json!([0.0, 0.5, 1.0, 1.5])
    );
    assert_eq!(recs[3]["end"], 7.0);
    assert_eq!(recs[3]["frame-times"], serde_json::json!([6.0, 6.5]));

    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    for q in &reqs {
        assert_eq!(q.method, "POST");
        assert_eq!(q.path, "/v1/chat/completions");
        assert_eq!(q.header("authorization"), Some("Bearer sk-test-SECRET-123"));
        assert_eq!(q.header("content-type"), Some("application/json"));
        assert_eq!(q.body["model"], "test-model");
        assert_eq!(q.body["max_tokens"], 1024);
        assert_eq!(q.body["top_k"], 5);
        assert_eq!(q.body["seed"], 42);
        assert_eq!(q.body["temperature"], 0.2);
        assert_eq!(q.body["top_p"], 1.0);
        assert_eq!(q.system.as_deref(), Some("sys-text"));
        // frame-width=80 keeps the 4:3 aspect ratio.
        for img in &q.images {
            assert_eq!((img.width, img.height), (80, 60));
        }
        assert!(q
            .text
            .starts_with("These are images sampled from a video at timestamps in seconds: <"));
        assert!(q
            .text
            .ends_with("Describe. Make sure the answer contains correct timestamps."));
    }
    let mut first = reqs
        .iter()
        .find(|q| q.text.contains("<0.00>"))
        .unwrap()
        .text
        .clone();
    first.truncate(91);
    assert_eq!(
        first,
        "These are images sampled from a video at timestamps in seconds: <0.00> <0.50> <1.00> <1.50>"
    );

    // Summary buffers: PTS = chunk start, duration = chunk length, JSON caps.
    let s = &o.summaries;
    assert_eq!(s[1].0, 2_000_000_000);
    assert_eq!(s[1].1, 2_000_000_000);
    assert_eq!(s[3].1, 1_000_000_000);
    assert!(s.iter().all(|x| x.3 == "application/x-json"));
    assert!(s.iter().all(|x| x.2.ends_with(b"\n")));

    // The same records as bus messages and as metas on the video.
    assert_eq!(o.messages.len(), 4);
    for (k, m) in o.messages.iter().enumerate() {
        assert_eq!(m.get::<u64>("chunk-index").unwrap(), k as u64);
        assert_eq!(
            m.get::<String>("text").unwrap(),
            recs[k]["text"].as_str().unwrap()
        );
        assert_eq!(m.get::<String>("model").unwrap(), "test-model");
        let times = m.get::<gst::Array>("frame-times").unwrap();
        assert_eq!(
            times.len(),
            recs[k]["frame-times"].as_array().unwrap().len()
        );
    }
    // Metas ride on video buffers after the record exists; the last chunk's
    // record is only ready at EOS, when no video buffer follows.
    assert!(!o.metas.is_empty());
    for m in &o.metas {
        assert_eq!(m.name(), "vss-summary");
        let k = m.get::<u64>("chunk-index").unwrap() as usize;
        assert_eq!(
            m.get::<String>("text").unwrap(),
            recs[k]["text"].as_str().unwrap()
        );
    }
    assert_eq!(o.video_buffers, 70, "video passes through untouched");
    // EOS leaves summary_src before src.
    assert_eq!(o.eos_order, vec!["summary", "video"]);
    drop(o);
    assert_eq!(r.prop_u64("chunks-submitted"), 4);
    assert_eq!(r.prop_u64("chunks-completed"), 4);
    assert_eq!(r.prop_u64("chunks-failed"), 0);
    r.stop();
}

/// With a known duration (files), the last chunk is sampled over what
/// exists, like the others: a 1.5 s clip in 10 s chunks still gets 3 frames.
#[test]
fn known_duration_spreads_the_last_chunk() {
    let server = MockServer::start();
    let v = Video::small(2);
    let r = with_video(
        &props(&server, "chunk-duration=10 num-frames-per-chunk=3"),
        &v,
        false,
    );
    r.appsrc.set_property("duration", 1_500_000_000u64);
    r.play().unwrap();
    r.push_range(&v, 0, 15);
    r.end();
    assert!(r.wait_eos(T));
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["frame-times"], serde_json::json!([0.0, 0.5, 1.0]));
    assert_eq!(recs[0]["end"], 1.5);
    r.stop();
}

#[test]
fn overlap_chunks_and_text_caps() {
    let server = MockServer::start();
    server.set_policy(|req, _| {
        if req.text.contains("<4.00>") && !req.text.contains("<3") {
            Reply::Status {
                code: 500,
                retry_after: None,
            }
        } else {
            Reply::ok()
        }
    });
    let v = Video::small(5);
    let r = Run::new(
        &props(
            &server,
            "chunk-duration=2 chunk-overlap=1 num-frames-per-chunk=2",
        ),
        "text/x-raw,format=utf8",
        false,
        v.width,
        v.height,
        v.fps,
    );
    r.play().unwrap();
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T));
    let o = r.outputs();
    // Chunks start every second: [0,2) [1,3) [2,4) [3,5) [4,5)
    let texts: Vec<String> = o
        .summaries
        .iter()
        .map(|s| String::from_utf8(s.2.clone()).unwrap())
        .collect();
    let starts: Vec<u64> = o.summaries.iter().map(|s| s.0 / 1_000_000_000).collect();
    assert_eq!(starts, vec![0, 1, 2, 3, 4]);
    assert!(o.summaries.iter().all(|s| s.3 == "text/x-raw"));
    // The last chunk failed (see the policy): text consumers see why.
    assert!(
        texts[4].starts_with("[chunk 4 failed: HTTP 500"),
        "{}",
        texts[4]
    );
    assert!(o
        .warnings
        .iter()
        .any(|w| w.contains("chunk 4") && w.contains("HTTP 500")));
    for (k, t) in texts.iter().enumerate().take(4) {
        let a = colour_of_second(k as u64).0;
        let b = colour_of_second(k as u64 + 1).0;
        assert_eq!(t, &format!("colours: {a} {b}"), "chunk {k}");
    }
    drop(o);
    r.stop();
}

#[test]
fn records_leave_in_chunk_order_with_bounded_concurrency() {
    let server = MockServer::start();
    // Earlier chunks answer later.
    server.set_policy(|req, _| {
        let t = req.first_time();
        Reply::Ok {
            content: None,
            delay: Duration::from_millis(600u64.saturating_sub((t * 100.0) as u64)),
        }
    });
    let r = run_video(
        &props(
            &server,
            "chunk-duration=1 num-frames-per-chunk=1 max-concurrency=3",
        ),
        &Video::small(6),
        T,
    );
    let idx: Vec<u64> = r
        .outputs()
        .json()
        .iter()
        .map(|j| j["chunk-index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1, 2, 3, 4, 5]);
    assert!(server.max_in_flight() <= 3);
    assert!(server.max_in_flight() >= 2, "requests overlapped");
    r.stop();
}

/// Every failure mode becomes that chunk's error record; the rest go on.
#[test]
fn failures_become_error_records_and_the_pipeline_goes_on() {
    let server = MockServer::start();
    server.set_policy(|req, _| match req.first_time() as u64 {
        0 => Reply::Status {
            code: 400,
            retry_after: None,
        },
        1 => Reply::Garbage,
        2 => Reply::Empty,
        3 => Reply::NullContent,
        4 => Reply::Stall(Duration::from_secs(30)),
        5 => Reply::Status {
            code: 500,
            retry_after: None,
        },
        _ => Reply::ok(),
    });
    let r = run_video(
        &format!(
            "endpoint={} api-key=k max-retries=0 request-timeout=3 chunk-duration=1 num-frames-per-chunk=1 max-concurrency=8",
            server.url()
        ),
        &Video::small(7),
        T,
    );
    let recs = r.outputs().json();
    for (i, q) in server.requests().iter().enumerate() {
        eprintln!("req {i}: {}", &q.text[..80]);
    }
    for rec in &recs {
        eprintln!("{rec}");
    }
    assert_eq!(recs.len(), 7);
    let err = |k: usize| recs[k]["error"].as_str().unwrap_or("").to_string();
    assert!(err(0).contains("HTTP 400"), "{}", err(0));
    assert!(err(1).contains("not JSON"), "{}", err(1));
    assert!(err(2).contains("empty"), "{}", err(2));
    assert!(err(3).contains("empty"), "{}", err(3));
    assert!(err(4).contains("timed out"), "{}", err(4));
    assert!(err(5).contains("HTTP 500"), "{}", err(5));
    assert!(recs[6].get("error").is_none());
    assert!(recs[..6].iter().all(|r| r["text"] == ""));
    assert_eq!(r.prop_u64("chunks-failed"), 6);
    assert_eq!(r.prop_u64("chunks-completed"), 1);
    r.stop();
}

#[test]
fn retries_429_and_5xx_then_succeeds() {
    let server = MockServer::start();
    server.set_policy(|_, i| match i {
        0 => Reply::Status {
            code: 429,
            retry_after: Some(1),
        },
        1 => Reply::Status {
            code: 503,
            retry_after: None,
        },
        _ => Reply::ok(),
    });
    let t0 = Instant::now();
    let r = run_video(
        &format!(
            "endpoint={} max-retries=3 chunk-duration=10 num-frames-per-chunk=2",
            server.url()
        ),
        &Video::small(1),
        T,
    );
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 1);
    assert!(recs[0].get("error").is_none(), "{}", recs[0]);
    assert_eq!(server.request_count(), 3);
    // Retry-After: 1 was honoured (plus a 1 s backoff for the 503).
    assert!(t0.elapsed() >= Duration::from_secs(2));
    r.stop();

    // Retries exhausted: the error says so.
    let server = MockServer::start();
    server.set_policy(|_, _| Reply::Status {
        code: 502,
        retry_after: Some(0),
    });
    let r = run_video(
        &format!(
            "endpoint={} max-retries=2 chunk-duration=10 num-frames-per-chunk=1",
            server.url()
        ),
        &Video::small(1),
        T,
    );
    let recs = r.outputs().json();
    assert!(recs[0]["error"]
        .as_str()
        .unwrap()
        .contains("gave up after 3 attempts"));
    assert_eq!(server.request_count(), 3);
    r.stop();
}

#[test]
fn connection_refused_is_an_error_record() {
    let closed = common::port::ClosedPort::new();
    let port = closed.port();
    let r = run_video(
        &format!("endpoint=http://127.0.0.1:{port}/v1 chunk-duration=1 num-frames-per-chunk=1 server-wait=1 max-retries=0"),
        &Video::small(2),
        T,
    );
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        let e = rec["error"].as_str().unwrap();
        assert!(
            e.contains("cannot connect") && e.contains("server-wait"),
            "{e}"
        );
    }
    r.stop();
}

#[test]
fn azure_url_and_api_key_header() {
    let server = MockServer::start();
    // The Azure form is chosen by AZURE_OPENAI_ENDPOINT (tested in env.rs) or
    // a *.openai.azure.com host; here, the resolved URL is checked through
    // the request the mock receives when the host is overridden via env-file.
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("azure.env");
    std::fs::write(
        &env,
        format!(
            "export AZURE_OPENAI_ENDPOINT={}\nexport AZURE_OPENAI_API_KEY=az-SECRET-key\nexport OPENAI_API_VERSION=2024-06-01\nexport VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME=my-gpt4o\n",
            server.base()
        ),
    )
    .unwrap();
    let r = run_video(
        &format!(
            "env-file={} chunk-duration=10 num-frames-per-chunk=1",
            env.display()
        ),
        &Video::small(1),
        T,
    );
    let recs = r.outputs().json();
    assert!(recs[0].get("error").is_none(), "{}", recs[0]);
    let q = &server.requests()[0];
    assert_eq!(q.path, "/openai/deployments/my-gpt4o/chat/completions");
    assert_eq!(q.query.as_deref(), Some("api-version=2024-06-01"));
    assert_eq!(q.header("api-key"), Some("az-SECRET-key"));
    assert!(q.header("authorization").is_none());
    r.stop();
}

#[test]
fn eos_drains_pending_and_times_out_into_error_records() {
    let server = MockServer::start();
    server.set_policy(|req, _| {
        if req.text.contains("<1.00>") {
            Reply::Stall(Duration::from_secs(30))
        } else {
            Reply::Ok {
                content: None,
                delay: Duration::from_millis(300),
            }
        }
    });
    let t0 = Instant::now();
    let r = run_video(
        &props(
            &server,
            "chunk-duration=1 num-frames-per-chunk=1 request-timeout=60 drain-timeout=1.5",
        ),
        &Video::small(3),
        T,
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    let o = r.outputs();
    let recs = o.json();
    assert_eq!(recs.len(), 3);
    assert!(recs[0].get("error").is_none());
    assert!(recs[1]["error"].as_str().unwrap().contains("drain-timeout"));
    assert!(recs[2].get("error").is_none(), "{}", recs[2]);
    assert!(o.warnings.iter().any(|w| w.contains("drain-timeout")));
    assert_eq!(o.eos_order, vec!["summary", "video"]);
    drop(o);
    r.stop();
}

#[test]
fn file_input_backpressure_loses_nothing() {
    let server = MockServer::start();
    server.set_policy(|_, _| Reply::Ok {
        content: None,
        delay: Duration::from_millis(150),
    });
    let r = run_video(
        &props(
            &server,
            "chunk-duration=0.5 num-frames-per-chunk=1 max-concurrency=1 max-pending-chunks=1",
        ),
        &Video::small(4),
        T,
    );
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 8);
    assert!(recs.iter().all(|r| r.get("error").is_none()));
    assert_eq!(r.prop_u64("chunks-dropped"), 0);
    assert_eq!(server.max_in_flight(), 1);
    r.stop();
}

#[test]
fn live_input_drops_oldest_when_behind() {
    let server = MockServer::start();
    // The model answers nothing until the test lets it: live input is
    // ahead of it by construction, not by timing.
    let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let g = gate.clone();
    server.set_policy(move |_, _| {
        let (open, cv) = &*g;
        let mut o = open.lock().unwrap();
        while !*o {
            o = cv.wait(o).unwrap();
        }
        Reply::ok()
    });
    let v = Video::small(6);
    let r = with_video(
        &props(
            &server,
            "chunk-duration=0.5 num-frames-per-chunk=1 max-concurrency=1 max-pending-chunks=2",
        ),
        &v,
        true,
    );
    r.play().unwrap();
    // 12 chunks of live video while the first request hangs.
    for s in 0..12u64 {
        r.push_range(&v, s * 5, s * 5 + 5);
    }
    assert!(server.wait_for_requests(1, T));
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    r.end();
    assert!(r.wait_eos(T));
    let o = r.outputs();
    let recs = o.json();
    // Every chunk has exactly one record, in order.
    let idx: Vec<u64> = recs
        .iter()
        .map(|j| j["chunk-index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, (0..12).collect::<Vec<_>>());
    let dropped: Vec<_> = recs
        .iter()
        .filter(|j| {
            j["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("dropped"))
        })
        .collect();
    assert!(!dropped.is_empty(), "{recs:?}");
    assert_eq!(r.prop_u64("chunks-dropped"), dropped.len() as u64);
    assert!(o.warnings.iter().any(|w| w.contains("dropped")));
    assert!(server.max_in_flight() <= 1);
    drop(o);
    // Live frames are labelled with wall-clock RFC 3339 times, as VSS does for RTSP.
    let q = &server.requests()[0];
    assert!(
        q.text.starts_with(
            "These are images sampled from a video at timestamps in RFC3339 format: <20"
        ),
        "{}",
        q.text
    );

    // Latency is answered honestly: live, and summary_src adds a chunk.
    let pad = r.element.static_pad("summary_src").unwrap();
    let mut q = gst::query::Latency::new();
    assert!(pad.query(&mut q));
    let (live, min, _max) = q.result();
    assert!(live);
    assert!(min >= gst::ClockTime::from_mseconds(500));
    r.stop();
}

#[test]
fn flush_seek_discards_in_flight_work() {
    let server = MockServer::start();
    let props = props(
        &server,
        "chunk-duration=1 num-frames-per-chunk=1 request-timeout=60",
    );
    let r = stalled(&props, &Video::small(3), &server, 2);
    // A flushing seek from the application.
    let sink = r.element.static_pad("sink").unwrap();
    assert!(sink.send_event(gst::event::FlushStart::new()));
    assert!(sink.send_event(gst::event::FlushStop::new(true)));
    // Everything in flight was discarded; going to NULL does not hang.
    let t0 = Instant::now();
    r.pipeline.set_state(gst::State::Null).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(r.outputs().summaries.is_empty());
}

#[test]
fn stopping_cancels_in_flight_requests_without_hanging() {
    let server = MockServer::start();
    let props = props(
        &server,
        "chunk-duration=1 num-frames-per-chunk=1 request-timeout=0 max-concurrency=4",
    );
    let r = stalled(&props, &Video::small(3), &server, 2);
    let t0 = Instant::now();
    r.pipeline.set_state(gst::State::Ready).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    r.pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn unlinked_summary_src_is_fine() {
    init();
    let server = MockServer::start();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,format=NV12,width=64,height=48,framerate=10/1 ! vsssummarize endpoint={} chunk-duration=1 num-frames-per-chunk=2 ! fakesink",
        server.url()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut texts = Vec::new();
    let mut kinds = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{e:?}"),
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "vss-summary" {
                    let kind = s.get::<String>("kind").unwrap();
                    if kind == "caption" {
                        texts.push(s.get::<String>("text").unwrap());
                    }
                    kinds.push(kind);
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(texts.len(), 2);
    assert!(texts.iter().all(|t| t.starts_with("colours: ")));
    // By default the captions are summarized too: one window, then the final.
    assert_eq!(kinds, ["caption", "caption", "summary", "final-summary"]);
}

#[test]
fn all_input_formats_are_sampled() {
    init();
    for format in [
        "I420", "NV12", "RGB", "BGR", "RGBA", "BGRA", "RGBx", "BGRx", "YV12",
    ] {
        let server = MockServer::start();
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=5 pattern=solid-color foreground-color=0xff0000ff ! video/x-raw,format={format},width=33,height=17,framerate=5/1 ! vsssummarize endpoint={} chunk-duration=1 num-frames-per-chunk=1 ! fakesink",
            server.url()
        ))
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .unwrap();
        assert!(
            matches!(msg.view(), gst::MessageView::Eos(_)),
            "{format}: {msg:?}"
        );
        pipeline.set_state(gst::State::Null).unwrap();
        let reqs: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| !r.is_text_llm())
            .collect();
        assert_eq!(reqs.len(), 1, "{format}");
        let img = &reqs[0].images[0];
        assert_eq!((img.width, img.height), (33, 17), "{format}");
        // 0xff0000ff is opaque blue in videotestsrc's ARGB notation.
        assert_eq!(img.colour, "blue", "{format}: {:?}", img.mean_rgb);
    }
}

#[test]
fn properties_fixed_after_null_and_read_back() {
    init();
    let e = gst::ElementFactory::make("vsssummarize")
        .property("endpoint", "http://127.0.0.1:9/v1")
        .property_from_str("backend", "openai-compat")
        .build()
        .unwrap();
    assert_eq!(
        e.property::<Option<String>>("endpoint").as_deref(),
        Some("http://127.0.0.1:9/v1")
    );
    assert_eq!(e.property::<u32>("num-frames-per-chunk"), 0);
    e.set_state(gst::State::Ready).unwrap();
    // Resolved values are readable once READY.
    assert_eq!(e.property::<u32>("num-frames-per-chunk"), 10);
    e.set_property("endpoint", "http://other:1/v1");
    assert_eq!(
        e.property::<Option<String>>("endpoint").as_deref(),
        Some("http://127.0.0.1:9/v1")
    );
    e.set_state(gst::State::Null).unwrap();
    e.set_property("endpoint", "http://other:1/v1");
    assert_eq!(
        e.property::<Option<String>>("endpoint").as_deref(),
        Some("http://other:1/v1")
    );
    let mut names: HashSet<String> = e
        .list_properties()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    for n in [
        "backend",
        "endpoint",
        "model-name",
        "api-key",
        "api-version",
        "model-path",
        "model-root-dir",
        "env-file",
        "chunk-duration",
        "chunk-overlap",
        "num-frames-per-chunk",
        "frame-width",
        "frame-height",
        "jpeg-quality",
        "prompt",
        "system-prompt",
        "max-tokens",
        "temperature",
        "top-p",
        "top-k",
        "seed",
        "no-repeat-ngram-size",
        "max-concurrency",
        "max-pending-chunks",
        "request-timeout",
        "max-retries",
        "drain-timeout",
        "chunks-submitted",
        "chunks-completed",
        "chunks-failed",
        "chunks-dropped",
    ] {
        assert!(names.remove(n), "missing property {n}");
    }
}

#[test]
fn bad_chunk_settings_fail_at_ready_to_paused() {
    init();
    let e = gst::ElementFactory::make("vsssummarize")
        .property("endpoint", "http://127.0.0.1:9/v1")
        .property("chunk-duration", 2.0f64)
        .property("chunk-overlap", 2.0f64)
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    e.set_state(gst::State::Ready).unwrap();
    assert!(e.set_state(gst::State::Paused).is_err());
    let msg = bus.pop_filtered(&[gst::MessageType::Error]).unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    assert!(
        err.error().to_string().contains("chunk-overlap"),
        "{}",
        err.error()
    );
    e.set_state(gst::State::Null).unwrap();
}

/// Issue 20: a `summary_src` peer that returns a flow error without posting
/// an error of its own (here an appsink whose callback answers
/// `NotNegotiated` from the fourth record on) stops the pipeline with an
/// element error from vsssummarize that names the pad, as gst-plugins-rs's
/// elements do; the records before it were delivered. Before, the element
/// logged a warning and went on, and the pipeline ended with EOS as if
/// nothing had happened.
#[test]
fn a_flow_error_on_summary_src_is_an_element_error_naming_the_pad() {
    init();
    let server = MockServer::start();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=100 ! video/x-raw,format=NV12,width=64,height=48,framerate=10/1 \
         ! vsssummarize name=s endpoint={} model-name=mock chunk-duration=1 num-frames-per-chunk=1 summarize=false \
         s.summary_src ! appsink name=sum sync=false s.src ! fakesink",
        server.url()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    pipeline
        .by_name("sum")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut g = g.lock().unwrap();
                    if g.len() == 3 {
                        return Err(gst::FlowError::NotNegotiated);
                    }
                    let b = sample.buffer().unwrap().map_readable().unwrap().to_vec();
                    g.push(serde_json::from_slice::<serde_json::Value>(&b).unwrap());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS or error");
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(e) = msg.view() else {
        panic!("the pipeline ended without an error: {msg:?}");
    };
    assert_eq!(
        e.src().map(|s| s.name().to_string()).as_deref(),
        Some("s"),
        "the error comes from vsssummarize"
    );
    let debug = e.debug().map(|d| d.to_string()).unwrap_or_default();
    assert!(debug.contains("summary_src"), "{debug}");
    assert!(
        debug.contains("not-negotiated") || debug.contains("NotNegotiated"),
        "{debug}"
    );
    let got = got.lock().unwrap();
    let idx: Vec<u64> = got
        .iter()
        .map(|r| r["chunk-index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        idx,
        vec![0, 1, 2],
        "the records before the error were delivered"
    );
}

/// Issue 20: when a property can change is its pspec's flags (one place
/// per property): without a `mutable_*` flag it is fixed once the element
/// leaves NULL and its blurb says so; the flagged ones are exactly those
/// read later.
#[test]
fn settability_is_the_pspec_flags_and_the_blurbs_agree() {
    init();
    let e = gst::ElementFactory::make("vsssummarize").build().unwrap();
    let mut ready = Vec::new();
    let mut playing = Vec::new();
    for p in e.list_properties() {
        let f = p.flags();
        if !f.contains(gst::glib::ParamFlags::WRITABLE) || p.owner_type() != e.type_() {
            continue;
        }
        let blurb = p.blurb().unwrap_or_default();
        let mutable = f.intersects(
            gst::PARAM_FLAG_MUTABLE_READY
                | gst::PARAM_FLAG_MUTABLE_PAUSED
                | gst::PARAM_FLAG_MUTABLE_PLAYING,
        );
        assert_eq!(
            !mutable,
            blurb.ends_with("(fixed once the element leaves NULL)"),
            "{}: {blurb}",
            p.name()
        );
        if f.contains(gst::PARAM_FLAG_MUTABLE_READY) {
            ready.push(p.name().to_string());
        }
        if f.contains(gst::PARAM_FLAG_MUTABLE_PLAYING) {
            playing.push(p.name().to_string());
        }
    }
    ready.sort();
    assert_eq!(
        ready,
        [
            "chunk-duration",
            "chunk-overlap",
            "endpoint-concurrency",
            "max-concurrency",
            "max-pending-chunks"
        ]
    );
    playing.sort();
    // Issue 22: steering and the gate while running (docs/monitoring.md).
    assert_eq!(
        playing,
        [
            "change-threshold",
            "drain-timeout",
            "events",
            "heartbeat",
            "prompt",
            "skip-unchanged",
            "system-prompt",
            "trigger-classes",
            "trigger-cooldown",
            "trigger-min-confidence",
            "trigger-mode"
        ]
    );
}

/// Issue 20: the stream-start on `summary_src` is derived from the sink's
/// (its own stream id) and keeps its seqnum and group, as a derived event
/// should. On `gst_check::Harness`, with explicit events and no clock.
#[test]
fn the_derived_stream_start_keeps_seqnum_and_group() {
    init();
    let server = MockServer::start();
    let e = gst::ElementFactory::make("vsssummarize")
        .property("endpoint", server.url())
        .property("model-name", "mock")
        .property("summarize", false)
        .build()
        .unwrap();
    // The harness links sink and summary_src and sets the element PLAYING.
    let mut h = gst_check::Harness::with_element(&e, Some("sink"), Some("summary_src"));
    let group = gst::GroupId::next();
    let ss = gst::event::StreamStart::builder("cam-1")
        .group_id(group)
        .build();
    let seqnum = ss.seqnum();
    assert!(h.push_event(ss));
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", 64i32)
        .field("height", 48i32)
        .field("framerate", gst::Fraction::new(10, 1))
        .build();
    assert!(h.push_event(gst::event::Caps::new(&caps)));
    let seg = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(h.push_event(gst::event::Segment::new(&seg)));
    let mut b = gst::Buffer::from_mut_slice(i420_frame(64, 48, [0, 0, 0]));
    b.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    // The video pad is not linked here; only summary_src is.
    let _ = h.push(b);
    // The first event on summary_src is its stream-start (sent with the GAP
    // that lets its sink preroll).
    let ev = h.pull_event().expect("an event on summary_src");
    let gst::EventView::StreamStart(s) = ev.view() else {
        panic!("first event {ev:?}");
    };
    assert_eq!(s.stream_id(), "cam-1/summary");
    assert_eq!(s.group_id(), Some(group));
    assert_eq!(ev.seqnum(), seqnum);
}
