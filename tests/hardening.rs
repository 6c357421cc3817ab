// SPDX-License-Identifier: MPL-2.0
//! Regression tests for the element-level findings of "Hardening round 2":
//! records across a segment change, EOS with nothing captioned, settings that
//! cannot work, and properties set while the element runs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const T: Duration = Duration::from_secs(60);

fn props(server: &MockServer, extra: &str) -> String {
    format!(
        "endpoint={} model-name=test-model max-retries=0 request-timeout=10 {extra}",
        server.url()
    )
}

fn push_frames(r: &Run, v: &Video, segment: &gst::FormattedSegment<gst::ClockTime>, from_s: u64) {
    let dur = 1_000_000_000 / v.fps;
    for i in 0..v.seconds * v.fps {
        let pts = from_s * 1_000_000_000 + i * dur;
        let (_, rgb) = colour_of_second(i / v.fps);
        let mut b = gst::Buffer::from_mut_slice(i420_frame(v.width, v.height, rgb));
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(dur));
        }
        let caps = r.appsrc.caps().unwrap();
        let sample = gst::Sample::builder()
            .buffer(&b)
            .caps(&caps)
            .segment(segment)
            .build();
        r.appsrc.push_sample(&sample).unwrap();
    }
}

/// A new segment without a flush (as `concat` sends between two files):
/// the first segment's records, still with the model, must reach
/// `summary_src` in the segment that holds them, not be clipped by the sink
/// after the new segment went ahead of them. Indices stay unique.
#[test]
fn segment_change_without_flush_loses_no_record() {
    let server = MockServer::start();
    server.set_policy(|_, _| Reply::delayed(Duration::from_millis(400)));
    let v = Video::small(3);
    let r = with_video(
        &props(
            &server,
            "chunk-duration=1 num-frames-per-chunk=1 max-concurrency=1",
        ),
        &v,
        false,
    );
    r.appsrc.set_property("handle-segment-change", true);
    r.play().unwrap();
    // Segment 1: the usual [0, ∞) with frames 0..3 s.
    let mut seg1 = gst::FormattedSegment::<gst::ClockTime>::new();
    seg1.set_start(gst::ClockTime::ZERO);
    push_frames(&r, &v, &seg1, 0);
    // Segment 2: what concat makes of a second file whose media starts at
    // 100 s: start 100 s, base 3 s. Segment 1's records (PTS 0..3 s) lie
    // before its start.
    let mut seg2 = gst::FormattedSegment::<gst::ClockTime>::new();
    seg2.set_start(gst::ClockTime::from_seconds(100));
    seg2.set_time(gst::ClockTime::ZERO);
    seg2.set_base(gst::ClockTime::from_seconds(3));
    push_frames(&r, &v, &seg2, 100);
    r.end();
    assert!(r.wait_eos(T), "{:?}", r.outputs().errors);
    r.drain_bus();
    let o = r.outputs();
    assert_eq!(o.messages.len(), 6, "bus: {:?}", o.messages);
    let recs = o.json();
    assert_eq!(recs.len(), 6, "summary_src lost records: {recs:?}");
    let idx: Vec<u64> = recs
        .iter()
        .map(|j| j["chunk-index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 1, 2, 3, 4, 5], "indices unique and in order");
    assert!(recs.iter().all(|j| j.get("error").is_none()), "{recs:?}");
    drop(o);
    r.stop();
}

/// EOS before any frame used to stall for drain-timeout whenever
/// `summary_src` was linked: its EOS went into a sink that had not
/// prerolled (blocking until PLAYING) while `src` held back the EOS that
/// would let the video sink preroll.
#[test]
fn eos_before_any_frame_goes_through_at_once() {
    let server = MockServer::start();
    let v = Video::small(1);
    let r = with_video(&props(&server, "drain-timeout=60"), &v, false);
    r.play().unwrap();
    let t0 = Instant::now();
    r.end();
    assert!(r.wait_eos(Duration::from_secs(30)), "{:?}", r.outputs());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "EOS took {:?}",
        t0.elapsed()
    );
    assert!(r.outputs().summaries.is_empty());
    assert_eq!(server.request_count(), 0);
    r.stop();
}

/// A flushing seek to the end: after the flush nothing is pending and no
/// sink has prerolled again; EOS must not wait for them.
#[test]
fn flush_then_eos_goes_through_at_once() {
    let server = MockServer::start();
    let v = Video::small(2);
    let r = with_video(
        &props(&server, "chunk-duration=1 drain-timeout=60"),
        &v,
        false,
    );
    r.play().unwrap();
    r.push_video(&v);
    assert!(server.wait_for_requests(1, T));
    // What a seek does upstream: flush, a new segment at the end, EOS.
    let pad = r.element.static_pad("sink").unwrap();
    assert!(pad.send_event(gst::event::FlushStart::new()));
    assert!(pad.send_event(gst::event::FlushStop::new(true)));
    let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
    seg.set_start(gst::ClockTime::from_seconds(2));
    assert!(pad.send_event(gst::event::Segment::new(&seg)));
    let t0 = Instant::now();
    assert!(pad.send_event(gst::event::Eos::new()));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "EOS took {:?}",
        t0.elapsed()
    );
    r.stop();
}

/// `chunk-overlap` leaving a 1 ns stride used to open ~1e9 chunks per frame
/// and abort the process; strides under 0.1 s or 1/16 of the chunk are
/// refused with the rule.
#[test]
fn strides_that_cannot_work_are_refused() {
    init();
    for (d, o) in [(1.0f64, 0.999_999_999f64), (1.0, 0.999_999), (10.0, 9.5)] {
        let e = gst::ElementFactory::make("vsssummarize")
            .property("endpoint", "http://127.0.0.1:9/v1")
            .property("chunk-duration", d)
            .property("chunk-overlap", o)
            .build()
            .unwrap();
        let bus = gst::Bus::new();
        e.set_bus(Some(&bus));
        e.set_state(gst::State::Ready).unwrap();
        assert!(e.set_state(gst::State::Paused).is_err(), "{d} {o}");
        let msg = bus.pop_filtered(&[gst::MessageType::Error]).unwrap();
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        let text = err.error().to_string();
        assert!(
            text.contains("stride") && text.contains("lower chunk-overlap"),
            "{text}"
        );
        e.set_state(gst::State::Null).unwrap();
    }
}

/// Properties set while running used to read back values that were not in
/// effect. Now a property read at NULL→READY is refused outside NULL, one
/// read at READY→PAUSED above READY; `drain-timeout` applies at any time.
#[test]
fn properties_set_while_running_read_back_what_is_in_effect() {
    let server = MockServer::start();
    let v = Video::small(1);
    let r = with_video(
        &props(
            &server,
            "chunk-duration=2 prompt=first max-concurrency=4 max-pending-chunks=2",
        ),
        &v,
        false,
    );
    r.play().unwrap();
    let e = &r.element;
    // (`prompt` can change while running: tests/monitor.rs.)
    e.set_property("max-tokens", 7u32);
    e.set_property("chunk-duration", 5.0f64);
    e.set_property("temperature", 1.5f64);
    e.set_property("drain-timeout", 7.0f64);
    assert_eq!(e.property::<u32>("max-tokens"), 1024);
    assert_eq!(e.property::<f64>("chunk-duration"), 2.0);
    assert_eq!(e.property::<f64>("temperature"), 0.2);
    assert_eq!(e.property::<f64>("drain-timeout"), 7.0);
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T));
    r.drain_bus();
    // The request used the prompt in effect.
    let text = &server.requests()[0].text;
    assert!(text.contains(". first Make sure"), "{text}");
    // max-concurrency above max-pending-chunks is corrected with a note.
    let o = r.outputs();
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("max-concurrency=4 is more than max-pending-chunks=2")),
        "{:?}",
        o.warnings
    );
    drop(o);
    r.stop();
    // In NULL everything can change again.
    e.set_property("prompt", "third");
    assert_eq!(e.property::<String>("prompt"), "third");
}

/// gst-inspect shows a blurb for every property, and the NULL-only ones
/// say so instead of carrying a "changeable in READY" flag.
#[test]
fn every_property_has_a_blurb_and_honest_flags() {
    init();
    let e = gst::ElementFactory::make("vsssummarize").build().unwrap();
    for p in e.list_properties() {
        let name = p.name();
        if matches!(name, "name" | "parent") {
            continue;
        }
        let blurb = p.blurb().unwrap_or_default();
        assert!(!blurb.is_empty() && blurb != name, "{name} has no blurb");
        if blurb.ends_with("(fixed once the element leaves NULL)") {
            assert!(
                !p.flags().contains(gst::PARAM_FLAG_MUTABLE_READY),
                "{name}: NULL-only but flagged changeable in READY"
            );
        }
    }
    assert!(e.find_property("server-wait").is_some());
}

/// The start-up check: a model-name the server does not serve fails
/// NULL→READY with the served names; an unset one takes the only served
/// model; a server without /models is fine (every other test).
#[test]
fn startup_check_names_served_models_and_adopts_the_only_one() {
    let server = MockServer::start();
    server.set_models(Some(vec!["Qwen/Qwen2.5-VL-7B-Instruct".into()]));
    init();
    let e = gst::ElementFactory::make("vsssummarize")
        .property("endpoint", server.url())
        .property("model-name", "qwen-vl")
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    assert!(e.set_state(gst::State::Ready).is_err());
    let msg = bus.pop_filtered(&[gst::MessageType::Error]).unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    let text = err.error().to_string();
    assert!(
        text.contains("'qwen-vl' is not served")
            && text.contains("Qwen/Qwen2.5-VL-7B-Instruct")
            && text.contains("model-name"),
        "{text}"
    );
    e.set_state(gst::State::Null).unwrap();

    // No model-name: the one served model is used, and requests name it.
    let v = Video::small(1);
    let r = with_video(
        &format!("endpoint={} max-retries=0", server.url()),
        &v,
        false,
    );
    r.play().unwrap();
    assert_eq!(
        r.element
            .property::<Option<String>>("model-name")
            .as_deref(),
        Some("Qwen/Qwen2.5-VL-7B-Instruct")
    );
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T));
    assert_eq!(
        server.requests()[0].body["model"],
        "Qwen/Qwen2.5-VL-7B-Instruct"
    );
    assert_eq!(server.model_list_requests().len(), 2);
    r.stop();
}

/// A server that is down at start is a warning, not an error: with
/// server-wait the chunks wait for it (the backend tests cover the wait).
#[test]
fn startup_check_warns_when_the_server_is_down() {
    init();
    let closed = common::port::ClosedPort::new();
    let port = closed.port();
    let e = gst::ElementFactory::make("vsssummarize")
        .property("endpoint", format!("http://127.0.0.1:{port}/v1"))
        .property("server-wait", 30.0f64)
        .build()
        .unwrap();
    let bus = gst::Bus::new();
    e.set_bus(Some(&bus));
    e.set_state(gst::State::Ready).unwrap();
    let msg = bus.pop_filtered(&[gst::MessageType::Warning]).unwrap();
    let gst::MessageView::Warning(w) = msg.view() else {
        unreachable!()
    };
    let text = w.error().to_string();
    assert!(
        text.contains("cannot connect") && text.contains("server-wait (30 s)"),
        "{text}"
    );
    e.set_state(gst::State::Null).unwrap();
}
