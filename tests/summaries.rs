// SPDX-License-Identifier: MPL-2.0
//! Summaries and alerts through the element, against the test mock, whose
//! text answers are deterministic (tests/common/mock_openai.rs): a summary
//! answers `summary of` and every `<time>` label of its input, an event check
//! detects an event when the caption contains its text. The test videos
//! change colour every second, so with 1 s chunks caption `i` is
//! `colours: <colour of second i>`.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mock_openai::time_labels;
use common::*;
use gst::prelude::*;
use gstvsssummarize::summary::{tokens, TextRequest};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn props(server: &MockServer, extra: &str) -> String {
    format!(
        "endpoint={} model-name=mock chunk-duration=1 num-frames-per-chunk=1 max-retries=0 request-timeout=10 stream-id=dock-3 summarize=true {extra}",
        server.url()
    )
}

fn kinds(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// The `<start>` label of chunk `i` (1 s chunks).
fn label(i: u64) -> String {
    format!("<{i}.00>")
}

#[test]
fn windows_hold_their_captions_and_the_final_summary_covers_all() {
    let server = MockServer::start();
    let r = run_video(&props(&server, "summary-duration=3"), &Video::small(10), T);
    let recs = r.outputs().json();
    // 10 chunks, windows of 3 s: [0,3) [3,6) [6,9) [9,10).
    let k = kinds(&recs);
    assert_eq!(k.iter().filter(|k| *k == "caption").count(), 10, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "summary").count(), 4, "{k:?}");
    assert_eq!(
        k.last().unwrap(),
        "final-summary",
        "the final summary is last: {k:?}"
    );
    let mut seen_captions = BTreeSet::new();
    for (pos, rec) in recs.iter().enumerate() {
        match rec["kind"].as_str().unwrap() {
            "caption" => {
                assert_eq!(rec["stream-id"], "dock-3");
                seen_captions.insert(rec["chunk-index"].as_u64().unwrap());
            }
            "summary" => {
                let w = rec["summary-index"].as_u64().unwrap();
                let chunks = u64s(&rec["chunk-indices"]);
                let want: Vec<u64> = (w * 3..((w + 1) * 3).min(10)).collect();
                assert_eq!(chunks, want, "window {w}: {rec}");
                assert_eq!(u64s(&rec["missing-chunks"]), Vec::<u64>::new());
                assert_eq!(rec["start"], (w * 3) as f64);
                assert_eq!(
                    rec["end"],
                    (((w + 1) * 3).min(10)) as f64,
                    "clipped to the stream"
                );
                // Exactly its captions went in (each caption brings its start label).
                let text = rec["text"].as_str().unwrap();
                for c in 0..10 {
                    assert_eq!(
                        text.contains(&label(c)),
                        want.contains(&c) || c == want.last().unwrap() + 1,
                        "window {w}, chunk {c}: {text}"
                    );
                }
                // After the captions it covers.
                assert!(
                    want.iter().all(|c| seen_captions.contains(c)),
                    "summary {w} at {pos}"
                );
                assert_eq!(rec["stream-id"], "dock-3");
                assert_eq!(rec["model"], "mock");
                assert!(rec.get("error").is_none(), "{rec}");
            }
            "final-summary" => {
                assert_eq!(u64s(&rec["chunk-indices"]), (0..10).collect::<Vec<_>>());
                assert_eq!(u64s(&rec["failed-windows"]), Vec::<u64>::new());
                assert_eq!(
                    (rec["start"].clone(), rec["end"].clone()),
                    (0.0.into(), 10.0.into())
                );
                let text = rec["text"].as_str().unwrap();
                for w in 0..4 {
                    assert!(
                        text.contains(&label(w * 3)),
                        "window {w} is in the final: {text}"
                    );
                }
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    // The bus: captions and summaries as vss-summary, with their kind; the
    // final one too.
    let o = r.outputs();
    let bus: Vec<String> = o
        .messages
        .iter()
        .map(|s| s.get::<String>("kind").unwrap())
        .collect();
    assert_eq!(bus, k, "bus messages in the output order");
    assert_eq!(o.eos_order.len(), 2);
    drop(o);
    assert_eq!(r.prop_u64("summaries-completed"), 5);
    assert_eq!(r.prop_u64("summaries-failed"), 0);
    // Summary prompts never carry the event list, and text requests are
    // text only.
    for q in server.requests().iter().filter(|q| q.is_text_llm()) {
        assert!(q.images.is_empty());
        assert!(!q
            .system
            .as_deref()
            .unwrap_or_default()
            .contains("detect events"));
    }
    r.stop();
}

#[test]
fn summarize_false_is_captions_only_and_no_text_calls() {
    let server = MockServer::start();
    let r = run_video(&props(&server, "summarize=false"), &Video::small(4), T);
    let recs = r.outputs().json();
    assert_eq!(kinds(&recs), ["caption"; 4]);
    assert_eq!(server.requests().len(), 4);
    assert!(server.requests().iter().all(|q| !q.is_text_llm()));
    r.stop();
}

#[test]
fn a_tiny_budget_recurses_and_no_call_exceeds_it() {
    let server = MockServer::start();
    let budget = gstvsssummarize::summary::SummaryConfig::default().min_context_tokens() + 40;
    let r = run_video(
        &props(
            &server,
            &format!("summary-duration=-1 llm-context-tokens={budget}"),
        ),
        &Video::small(30),
        Duration::from_secs(120),
    );
    let recs = r.outputs().json();
    let fin = recs.last().unwrap();
    assert_eq!(fin["kind"], "final-summary", "{fin}");
    assert!(fin.get("error").is_none(), "{fin}");
    assert_eq!(u64s(&fin["chunk-indices"]), (0..30).collect::<Vec<_>>());
    assert!(
        fin["llm-calls"].as_u64().unwrap() > 2,
        "it had to split: {fin}"
    );
    let text_reqs: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|q| q.is_text_llm())
        .collect();
    // Every caption went into exactly one first-level batch (the mock's
    // answers repeat their input, so higher levels cut lines to fit: the
    // budget wins over completeness of a parroting model).
    let caption_stage: Vec<_> = text_reqs
        .iter()
        .filter(|q| {
            q.system
                .as_deref()
                .unwrap_or_default()
                .starts_with("You summarize what happens")
        })
        .collect();
    assert!(
        caption_stage.len() > 1,
        "the captions were split into batches"
    );
    for c in 0..30u64 {
        let line = format!("<{c}.00> <{}.00> colours: ", c + 1);
        let n = caption_stage
            .iter()
            .filter(|q| q.text.contains(&line))
            .count();
        assert_eq!(n, 1, "caption {c} in {n} batches");
    }
    assert_eq!(text_reqs.len() as u64, fin["llm-calls"].as_u64().unwrap());
    for q in &text_reqs {
        let est = tokens::estimate_request(&TextRequest {
            system: q.system.clone(),
            user: q.text.clone(),
            max_tokens: 0,
            temperature: 0.0,
            top_p: 1.0,
            json: false,
        });
        assert!(est <= budget, "a call of {est} tokens > budget {budget}");
        assert_eq!(q.body["max_tokens"], 2048, "llm-max-tokens");
    }
    r.stop();
}

/// (request head, JSON body) of each request received.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver: the tests' one mock HTTP server, answering 200 to
/// everything and keeping each request (head and JSON body).
fn receiver() -> (String, Received, MockServer) {
    let server = MockServer::start();
    let url = format!("{}/alerts", server.base());
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    server.set_policy(move |q, _| {
        let mut head = format!("{} {} HTTP/1.1\r\n", q.method, q.path);
        for (k, v) in &q.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        g.lock().unwrap().push((head, q.body.clone()));
        Reply::Json {
            code: 200,
            body: serde_json::json!({}),
        }
    });
    (url, got, server)
}

#[test]
fn alerts_follow_their_caption_reach_the_bus_and_the_webhook() {
    let server = MockServer::start();
    let (hook, got, _hook_server) = receiver();
    let r = run_video(
        &props(
            &server,
            &format!(
                "summary-duration=-1 events=\"cyan;red;a person falls\" alert-webhook={hook} alert-webhook-token=hook-secret-42"
            ),
        ),
        &Video::small(10),
        T,
    );
    let recs = r.outputs().json();
    // red at seconds 0 and 8, cyan at 6.
    let alerted: Vec<u64> = vec![0, 6, 8];
    let mut i = 0;
    let mut alerts = Vec::new();
    while i < recs.len() {
        let rec = &recs[i];
        if rec["kind"] == "caption" {
            let c = rec["chunk-index"].as_u64().unwrap();
            assert!(rec.get("alert-error").is_none(), "{rec}");
            if alerted.contains(&c) {
                let a = &recs[i + 1];
                assert_eq!(a["kind"], "alert", "the alert follows its caption: {a}");
                assert_eq!(a["chunk-index"], c);
                assert_eq!(a["text"], rec["text"], "the alert's text is its caption");
                assert_eq!(a["stream-id"], "dock-3");
                assert_eq!(a["start"], rec["start"]);
                assert_eq!(a["end"], rec["end"]);
                let want = if c == 6 { "cyan" } else { "red" };
                assert_eq!(a["events"], serde_json::json!([want]));
                alerts.push(c);
                i += 1;
            }
        }
        i += 1;
    }
    assert_eq!(alerts, alerted);
    assert_eq!(recs.last().unwrap()["kind"], "final-summary");
    // vss-alert on the bus, one per alert.
    let o = r.outputs();
    let bus: Vec<u64> = o
        .alerts
        .iter()
        .map(|s| s.get::<u64>("chunk-index").unwrap())
        .collect();
    let mut sorted = bus.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, alerted, "{:?}", o.alerts);
    assert!(o
        .messages
        .iter()
        .all(|s| s.get::<String>("kind").unwrap() != "alert"));
    drop(o);
    assert_eq!(r.prop_u64("alerts-raised"), 3);
    // The webhook got every alert before EOS, with VSS's fields and the token.
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    let mut ids: Vec<u64> = got
        .iter()
        .map(|(_, b)| b["chunkIndex"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, alerted);
    for (head, b) in got.iter() {
        assert!(head.starts_with("POST /alerts "), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer hook-secret-42"),
            "{head}"
        );
        let c = b["chunkIndex"].as_u64().unwrap();
        assert_eq!(b["streamId"], "dock-3");
        assert_eq!(b["alertId"], format!("dock-3-{c}"));
        assert_eq!(
            b["ntpTimestamp"], c as f64,
            "stream time in seconds for files"
        );
        assert!(b["alertDetails"].as_str().unwrap().starts_with("colours: "));
        assert!(b["detectedEvents"].is_array());
    }
    drop(got);
    // The event checks asked for JSON; captions are checked, summaries not.
    let checks: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|q| q.is_event_check())
        .collect();
    assert_eq!(checks.len(), 10);
    assert!(checks
        .iter()
        .all(|q| q.body["response_format"]["type"] == "json_object"));
    // The token is not readable back.
    assert!(!r
        .element
        .list_properties()
        .iter()
        .any(|p| p.name() == "alert-webhook-token"
            && p.flags().contains(gst::glib::ParamFlags::READABLE)));
    r.stop();
}

#[test]
fn an_unparsable_event_answer_is_an_alert_error_and_a_warning() {
    let server = MockServer::start();
    server.set_policy(|q, _| {
        if q.is_event_check() && q.text.contains("green") {
            Reply::with_content("Hard to say, maybe.")
        } else {
            Reply::ok()
        }
    });
    let r = run_video(
        &props(&server, "summarize=false events=red"),
        &Video::small(3),
        T,
    );
    let recs = r.outputs().json();
    // The chunk without a verdict neither extends nor closes the incident
    // the red chunk opened; it ends at EOS (docs/monitoring.md, rule 4).
    assert_eq!(
        kinds(&recs),
        [
            "caption",
            "alert",
            "incident-start",
            "caption",
            "caption",
            "incident-end"
        ]
    );
    let e = recs[3]["alert-error"].as_str().unwrap();
    assert!(e.contains("no JSON") && e.contains("Hard to say"), "{e}");
    assert!(recs[4].get("alert-error").is_none());
    assert_eq!(recs[5]["reason"], "eos");
    assert_eq!(recs[5]["alert-count"], 1);
    let o = r.outputs();
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("chunk 1") && w.contains("no JSON")),
        "{:?}",
        o.warnings
    );
    drop(o);
    r.stop();
}

#[test]
fn a_failing_llm_gives_error_records_and_the_captions_stay() {
    let server = MockServer::start();
    server.set_policy(|q, _| {
        // The second window's summary fails; everything else works.
        if q.is_text_llm() && q.text.contains("<3.00> <4.00>") && !q.text.contains("<0.00>") {
            Reply::Status {
                code: 500,
                retry_after: None,
            }
        } else {
            Reply::ok()
        }
    });
    let r = run_video(&props(&server, "summary-duration=3"), &Video::small(9), T);
    let recs = r.outputs().json();
    let sums: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "summary").collect();
    assert_eq!(sums.len(), 3);
    assert!(
        sums[1]["error"].as_str().unwrap().contains("HTTP 500"),
        "{}",
        sums[1]
    );
    assert_eq!(sums[1]["text"], "");
    assert_eq!(u64s(&sums[1]["chunk-indices"]), vec![3, 4, 5]);
    let fin = recs.last().unwrap();
    assert!(fin.get("error").is_none(), "{fin}");
    assert_eq!(u64s(&fin["failed-windows"]), vec![1]);
    assert_eq!(u64s(&fin["chunk-indices"]), vec![0, 1, 2, 6, 7, 8]);
    assert_eq!(
        recs.iter()
            .filter(|r| r["kind"] == "caption" && r.get("error").is_none())
            .count(),
        9
    );
    assert_eq!(r.prop_u64("summaries-failed"), 1);
    assert_eq!(r.prop_u64("summaries-completed"), 3);
    assert!(r
        .outputs()
        .warnings
        .iter()
        .any(|w| w.contains("summary 1") && w.contains("HTTP 500")));
    r.stop();
}

#[test]
fn failed_chunks_are_named_in_missing_chunks() {
    let server = MockServer::start();
    server.set_policy(|q, _| {
        if !q.is_text_llm() && q.colours() == ["blue"] {
            Reply::Status {
                code: 400,
                retry_after: None,
            }
        } else {
            Reply::ok()
        }
    });
    let r = run_video(&props(&server, "summary-duration=3"), &Video::small(6), T);
    let recs = r.outputs().json();
    let sums: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "summary").collect();
    // Second 2 is blue.
    assert_eq!(u64s(&sums[0]["missing-chunks"]), vec![2]);
    assert_eq!(u64s(&sums[0]["chunk-indices"]), vec![0, 1]);
    assert_eq!(u64s(&sums[1]["missing-chunks"]), Vec::<u64>::new());
    assert_eq!(u64s(&recs.last().unwrap()["missing-chunks"]), vec![2]);
    r.stop();
}

/// A mock whose captions answer at once and whose text-LLM calls hang.
fn stalled_llm_server() -> MockServer {
    let server = MockServer::start();
    server.set_policy(|q, _| {
        if q.is_text_llm() {
            Reply::Stall(Duration::from_secs(120))
        } else {
            Reply::ok()
        }
    });
    server
}

#[test]
fn a_stalled_llm_is_bounded_by_drain_timeout_and_nothing_is_lost() {
    let server = stalled_llm_server();
    let t0 = std::time::Instant::now();
    let r = run_video(
        &props(&server, "summary-duration=2 drain-timeout=3"),
        &Video::small(4),
        T,
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let recs = r.outputs().json();
    let k = kinds(&recs);
    assert_eq!(
        k,
        [
            "caption",
            "caption",
            "caption",
            "caption",
            "summary",
            "summary",
            "final-summary"
        ]
    );
    for s in &recs[4..] {
        assert!(
            s["error"].as_str().unwrap().contains("drain-timeout"),
            "{s}"
        );
    }
    assert_eq!(r.outputs().eos_order.len(), 2);
    r.stop();
}

#[test]
fn live_records_carry_wall_clock_times() {
    let server = MockServer::start();
    let v = Video::small(3);
    let r = with_video(
        &props(&server, "summary-duration=-1 max-pending-chunks=64"),
        &v,
        true,
    );
    r.play().unwrap();
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T), "{:?}", r.outputs().errors);
    r.drain_bus();
    let recs = r.outputs().json();
    assert_eq!(
        kinds(&recs),
        ["caption", "caption", "caption", "final-summary"]
    );
    for rec in &recs {
        let st = rec["start-time"]
            .as_str()
            .unwrap_or_else(|| panic!("{rec}"));
        assert!(
            st.len() >= 20 && st.contains('T') && st.ends_with('Z'),
            "{st}"
        );
        assert!(rec["end-time"].as_str().is_some());
    }
    // The LLM saw RFC 3339 labels.
    let fin = recs.last().unwrap()["text"].as_str().unwrap();
    assert!(time_labels(fin).iter().all(|l| l.contains('T')), "{fin}");
    r.stop();
}

#[test]
fn settings_that_cannot_work_fail_at_ready_naming_the_property() {
    let e = ready_error("backend=custom model-path=/nonexistent events=fire");
    assert!(e.contains("llm-endpoint"), "{e}");
    let e = ready_error("endpoint=http://127.0.0.1:9/v1 model-name=m llm-context-tokens=256");
    assert!(e.contains("llm-context-tokens"), "{e}");
    let e = ready_error("endpoint=http://127.0.0.1:9/v1 model-name=m summary-duration=0");
    assert!(e.contains("summary-duration"), "{e}");
    let e =
        ready_error("endpoint=http://127.0.0.1:9/v1 model-name=m events=x alert-webhook=ftp://h/x");
    assert!(e.contains("alert-webhook"), "{e}");
    let many: Vec<String> = (0..100).map(|i| format!("event {i}")).collect();
    let e = ready_error(&format!(
        "endpoint=http://127.0.0.1:9/v1 model-name=m events=\"{}\"",
        many.join(";")
    ));
    assert!(e.contains("events"), "{e}");
}

/// A file's segment stops at its duration, and the last window ends there:
/// a summary stamped at its window's end was clipped away by the sink
/// (filesink lost the last window and the final summary).
#[test]
fn summaries_survive_a_segment_that_stops_at_the_end() {
    let server = MockServer::start();
    let v = Video::small(4);
    let r = with_video(&props(&server, "summary-duration=2"), &v, false);
    r.play().unwrap();
    let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
    seg.set_start(gst::ClockTime::ZERO);
    seg.set_stop(gst::ClockTime::from_seconds(4));
    let dur = 1_000_000_000 / v.fps;
    let caps = r.appsrc.caps().unwrap();
    for i in 0..v.seconds * v.fps {
        let (_, rgb) = colour_of_second(i / v.fps);
        let mut b = gst::Buffer::from_mut_slice(i420_frame(v.width, v.height, rgb));
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * dur));
            b.set_duration(gst::ClockTime::from_nseconds(dur));
        }
        let sample = gst::Sample::builder()
            .buffer(&b)
            .caps(&caps)
            .segment(&seg)
            .build();
        r.appsrc.push_sample(&sample).unwrap();
    }
    r.end();
    assert!(r.wait_eos(T), "{:?}", r.outputs().errors);
    r.drain_bus();
    let recs = r.outputs().json();
    let k = kinds(&recs);
    assert_eq!(k.iter().filter(|k| *k == "caption").count(), 4, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "summary").count(), 2, "{k:?}");
    assert_eq!(k.last().unwrap(), "final-summary", "{k:?}");
    let o = r.outputs();
    let stop = 4_000_000_000;
    assert!(
        o.summaries.iter().all(|(pts, ..)| *pts < stop),
        "inside the segment"
    );
    drop(o);
    r.stop();
}

/// A live source with NTP reference timestamps (`rtspsrc
/// add-reference-timestamp-meta=true`): the wall-clock times come from them,
/// not from this machine's clock.
#[test]
fn live_times_follow_the_sources_ntp_clock() {
    let server = MockServer::start();
    let v = Video::small(2);
    let r = with_video(
        &props(&server, "summary-duration=-1 max-pending-chunks=64"),
        &v,
        true,
    );
    r.play().unwrap();
    // 2020-01-01T00:00:00Z in NTP time (seconds since 1900).
    let ntp0 = (1_577_836_800u64 + 2_208_988_800) * 1_000_000_000;
    let ntp_caps = gst::Caps::builder("timestamp/x-ntp").build();
    let dur = 1_000_000_000 / v.fps;
    for i in 0..v.seconds * v.fps {
        let (_, rgb) = colour_of_second(i / v.fps);
        let mut b = gst::Buffer::from_mut_slice(i420_frame(v.width, v.height, rgb));
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * dur));
            b.set_duration(gst::ClockTime::from_nseconds(dur));
            gst::ReferenceTimestampMeta::add(
                b,
                &ntp_caps,
                gst::ClockTime::from_nseconds(ntp0 + i * dur),
                gst::ClockTime::NONE,
            );
        }
        r.appsrc.push_buffer(b).unwrap();
    }
    r.end();
    assert!(r.wait_eos(T), "{:?}", r.outputs().errors);
    r.drain_bus();
    let recs = r.outputs().json();
    assert_eq!(
        recs[0]["start-time"], "2020-01-01T00:00:00.000Z",
        "{}",
        recs[0]
    );
    assert_eq!(recs[0]["end-time"], "2020-01-01T00:00:01.000Z");
    assert_eq!(recs[1]["start-time"], "2020-01-01T00:00:01.000Z");
    let fin = recs.last().unwrap();
    assert_eq!(fin["kind"], "final-summary");
    assert_eq!(fin["start-time"], "2020-01-01T00:00:00.000Z");
    assert_eq!(fin["end-time"], "2020-01-01T00:00:02.000Z");
    r.stop();
}

/// PAUSED→READY while a summary call hangs: cancelled at once.
#[test]
fn stopping_cancels_summary_calls_at_once() {
    let server = stalled_llm_server();
    let v = Video::small(4);
    let r = with_video(&props(&server, "summary-duration=1"), &v, false);
    r.play().unwrap();
    r.push_video(&v);
    // A window summary hangs at the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server.requests().iter().any(|q| q.is_text_llm()) {
        assert!(std::time::Instant::now() < deadline, "no summary call");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = std::time::Instant::now();
    r.pipeline.set_state(gst::State::Null).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A `summary_src` sink that takes nothing until the test opens it.
struct Gate {
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Issue 21 F1: a `summary_src` sink slower than drain-timeout (here: one
/// that takes nothing until every summary has been made) must cost no
/// window summary, and the final summary stays last. Before, the summary
/// engine got each caption only after the sink took it, drain-timeout ran
/// out at EOS while the records waited, and windows became error records
/// (or none) with the final summary among the captions.
#[test]
fn a_sink_slower_than_drain_timeout_loses_no_window() {
    init();
    let server = MockServer::start();
    let v = Video::small(20);
    let desc = format!(
        "appsrc name=in format=time caps=video/x-raw,format=I420,width={},height={},framerate={}/1,colorimetry=bt601 \
         ! vsssummarize name=s {} summary-duration=4 drain-timeout=1 max-pending-chunks=64 \
         s.summary_src ! appsink name=sum sync=false emit-signals=false \
         s.src ! fakesink sync=false",
        v.width,
        v.height,
        v.fps,
        props(&server, "")
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let gate = Arc::new(Gate {
        open: Mutex::new(false),
        cv: std::sync::Condvar::new(),
    });
    let got = Arc::new(Mutex::new(Vec::new()));
    let sum = pipeline
        .by_name("sum")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let (g, o) = (gate.clone(), got.clone());
    sum.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                g.wait();
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let b = sample.buffer().unwrap().map_readable().unwrap().to_vec();
                o.lock()
                    .unwrap()
                    .push(serde_json::from_slice::<Value>(&b).unwrap());
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let appsrc = pipeline
        .by_name("in")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let element = pipeline.by_name("s").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..v.seconds * v.fps {
        let pts = i * 1_000_000_000 / v.fps;
        let (_, rgb) = colour_of_second(pts / 1_000_000_000);
        let mut b = gst::Buffer::from_mut_slice(i420_frame(v.width, v.height, rgb));
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_nseconds(pts));
        appsrc.push_buffer(b).unwrap();
    }
    appsrc.end_of_stream().unwrap();
    // Five windows and the final summary are made while the sink takes
    // nothing (a did-not-hang bound, far above drain-timeout).
    let deadline = std::time::Instant::now() + T;
    while element.property::<u64>("summaries-completed")
        + element.property::<u64>("summaries-failed")
        < 6
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    gate.open();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
    let recs = got.lock().unwrap().clone();
    let k = kinds(&recs);
    assert_eq!(k.iter().filter(|k| *k == "caption").count(), 20, "{k:?}");
    assert_eq!(k.last().map(String::as_str), Some("final-summary"), "{k:?}");
    let summaries: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "summary").collect();
    assert_eq!(summaries.len(), 5, "every window one record: {k:?}");
    for (w, r) in summaries.iter().enumerate() {
        assert_eq!(r["summary-index"], w as u64);
        assert!(r.get("error").is_none(), "window {w}: {r}");
    }
    assert!(
        recs.last().unwrap().get("error").is_none(),
        "{:?}",
        recs.last()
    );
    assert_eq!(element.property::<u64>("summaries-failed"), 0);
}

/// Issue 21 F4: a file whose text LLM is slower than its captions loses no
/// window summary: the input waits for room in the window queue (16) as it
/// does for captions. 24 one-second windows, each summary call held by the
/// mock for 300 ms on 2 summary threads: the windows close far faster than
/// they are summarized. Before, 6 of them became "skipped" error records.
#[test]
fn a_slow_text_llm_on_a_file_skips_no_window() {
    let server = MockServer::start();
    server.set_policy(|q, _| {
        if q.is_text_llm() {
            Reply::Ok {
                content: None,
                delay: Duration::from_millis(300),
            }
        } else {
            Reply::ok()
        }
    });
    let r = run_video(
        &props(
            &server,
            "summary-duration=1 max-pending-chunks=64 max-concurrency=8",
        ),
        &Video::small(24),
        T,
    );
    let recs = r.outputs().json();
    let sums: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "summary").collect();
    assert_eq!(sums.len(), 24, "{:?}", kinds(&recs));
    for s in &sums {
        assert!(s.get("error").is_none(), "{s}");
    }
    assert_eq!(
        kinds(&recs).last().map(String::as_str),
        Some("final-summary")
    );
    assert_eq!(r.prop_u64("summaries-failed"), 0);
    r.stop();
}
