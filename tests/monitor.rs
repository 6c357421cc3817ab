// SPDX-License-Identifier: MPL-2.0
//! Watching a camera: change gating (`skip-unchanged`), detector triggers
//! (`trigger-classes` on `GstVideoRegionOfInterestMeta`, `request-caption`)
//! and steering while running (`prompt`, `system-prompt`), end to end
//! against the local mock.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const T: Duration = Duration::from_secs(60);
const W: usize = 160;
const H: usize = 120;
const FPS: u64 = 10;

fn props(server: &MockServer, extra: &str) -> String {
    format!(
        "endpoint={} model-name=test-model api-key=sk-test max-retries=0 request-timeout=10 chunk-duration=1 num-frames-per-chunk=2 {extra}",
        server.url()
    )
}

/// A grey I420 frame with ±2 levels of deterministic noise, and a bright
/// 24×24 square in the bottom-right corner when `blob`.
fn frame(i: u64, blob: bool) -> Vec<u8> {
    let mut f = i420_frame(W, H, [110, 110, 110]);
    let mut x = i.wrapping_mul(2_654_435_761).wrapping_add(1);
    for p in f[..W * H].iter_mut() {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        *p = p.wrapping_add(((x >> 60) as u8) % 5).wrapping_sub(2);
    }
    if blob {
        for y in H - 30..H - 6 {
            for x in W - 30..W - 6 {
                f[y * W + x] = 235;
            }
        }
    }
    f
}

fn push(r: &Run, from: u64, to: u64, blob: impl Fn(u64) -> bool) {
    for i in from..to {
        let pts = i * 1_000_000_000 / FPS;
        let mut b = gst::Buffer::from_mut_slice(frame(i, blob(pts / 1_000_000_000)));
        {
            let b = b.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / FPS));
        }
        if r.appsrc.push_buffer(b).is_err() {
            return;
        }
    }
}

/// Waits (bounded, not paced) until the record of chunk `idx` left.
fn wait_record(r: &Run, idx: u64) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if r.outputs().json().iter().any(|v| v["chunk-index"] == idx) {
            return;
        }
        std::thread::yield_now();
    }
    panic!("no record for chunk {idx}");
}

fn by_index(recs: &[serde_json::Value]) -> BTreeMap<u64, serde_json::Value> {
    let mut m = BTreeMap::new();
    for v in recs {
        if let Some(i) = v["chunk-index"].as_u64() {
            assert!(
                m.insert(i, v.clone()).is_none(),
                "two records for chunk {i}"
            );
        }
    }
    m
}

fn kind(m: &BTreeMap<u64, serde_json::Value>, i: u64) -> String {
    m[&i]["kind"].as_str().unwrap().to_string()
}

/// Static noisy scene, a corner object enters, stays, leaves; a flush in
/// the middle; EOS. Exactly one record per chunk; unchanged chunks name
/// the caption that holds; only changed chunks reach the model.
#[test]
fn gating_one_record_per_chunk_across_flush_and_eos() {
    let server = MockServer::start();
    let r = Run::new(&props(&server, "skip-unchanged=true"), "", false, W, H, FPS);
    r.play().unwrap();
    // Seconds 0-3 static, 4-5 the object, 6- static again.
    let blob = |s: u64| (4..6).contains(&s);
    push(&r, 0, 80, blob);
    wait_record(&r, 6);
    // A flushing seek: the open chunk is discarded, the gate forgets.
    let sink = r.element.static_pad("sink").unwrap();
    assert!(sink.send_event(gst::event::FlushStart::new()));
    assert!(sink.send_event(gst::event::FlushStop::new(true)));
    let seg = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(sink.send_event(gst::event::Segment::new(&seg)));
    push(&r, 100, 140, blob);
    r.end();
    assert!(r.wait_eos(T));
    let recs = r.outputs().json();
    let m = by_index(&recs);
    for i in 0..7 {
        assert!(m.contains_key(&i), "chunk {i} has no record: {recs:?}");
    }
    assert_eq!(kind(&m, 0), "caption");
    for i in 1..4 {
        assert_eq!(kind(&m, i), "unchanged", "{:?}", m[&i]);
        assert_eq!(m[&i]["same-as"], 0);
        assert!(m[&i]["change"].as_f64().unwrap() < 6.0);
        assert!(m[&i].get("text").is_some_and(|t| t == ""));
    }
    assert_eq!(kind(&m, 4), "caption", "the object entering is a change");
    assert_eq!(kind(&m, 5), "unchanged");
    assert_eq!(m[&5]["same-as"], 4);
    assert_eq!(kind(&m, 6), "caption", "the object leaving is a change");
    // After the flush: the first chunk is captioned again (no reference),
    // then unchanged ones point at it.
    let after: Vec<u64> = m.keys().copied().filter(|i| *i > 7).collect();
    assert!(after.len() >= 3, "{after:?}");
    assert_eq!(kind(&m, after[0]), "caption");
    for i in &after[1..] {
        assert_eq!(kind(&m, *i), "unchanged");
        assert_eq!(m[i]["same-as"], after[0]);
    }
    let captions = m.values().filter(|v| v["kind"] == "caption").count() as u64;
    let gated = m.values().filter(|v| v["kind"] == "unchanged").count() as u64;
    assert_eq!(server.requests().len() as u64, captions);
    assert_eq!(r.prop_u64("chunks-gated"), gated);
    assert_eq!(r.prop_u64("calls-saved"), gated);
    r.stop();
}

/// The same scene with gating off: every chunk is captioned.
#[test]
fn gating_is_off_by_default() {
    let server = MockServer::start();
    let r = Run::new(&props(&server, ""), "", false, W, H, FPS);
    r.play().unwrap();
    push(&r, 0, 40, |_| false);
    r.end();
    assert!(r.wait_eos(T));
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|v| v["kind"] == "caption"));
    assert_eq!(r.prop_u64("chunks-gated"), 0);
    r.stop();
}

/// ROI metas attached upstream by a pad probe trigger captions; others are
/// `skipped` (no-trigger, low confidence); `request-caption` forces one.
#[test]
fn roi_meta_triggers_and_request_caption() {
    let server = MockServer::start();
    let r = Run::new(
        &props(
            &server,
            "trigger-classes=person,forklift trigger-min-confidence=0.5",
        ),
        "",
        false,
        W,
        H,
        FPS,
    );
    // Second 2, 3, 6: a person (0.9); second 5: a person at 0.2 (too
    // unsure); second 4: a dog.
    let src = r.appsrc.static_pad("src").unwrap();
    src.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = info.data.as_mut() {
            let s = b.pts().unwrap().seconds();
            let (label, conf) = match s {
                2 | 3 | 6 => ("person", 0.9),
                5 => ("person", 0.2),
                4 => ("dog", 0.99),
                _ => return gst::PadProbeReturn::Ok,
            };
            let b = b.make_mut();
            let mut m = gst_video::VideoRegionOfInterestMeta::add(b, label, (10, 10, 20, 20));
            m.add_param(
                gst::Structure::builder("detection")
                    .field("confidence", conf)
                    .build(),
            );
        }
        gst::PadProbeReturn::Ok
    });
    r.play().unwrap();
    push(&r, 0, 71, |_| false);
    wait_record(&r, 6);
    // Chunk 7 is open now: ask for it.
    r.element.emit_by_name::<()>("request-caption", &[]);
    push(&r, 71, 80, |_| false);
    r.end();
    assert!(r.wait_eos(T));
    let m = by_index(&r.outputs().json());
    let kinds: Vec<String> = (0..8).map(|i| kind(&m, i)).collect();
    assert_eq!(
        kinds,
        ["caption", "skipped", "caption", "caption", "skipped", "skipped", "caption", "caption"]
    );
    assert_eq!(m[&1]["reason"], "no-trigger");
    assert_eq!(m[&1]["same-as"], 0);
    assert_eq!(m[&5]["reason"], "no-trigger");
    assert_eq!(server.requests().len(), 5);
    assert_eq!(r.prop_u64("chunks-gated"), 3);
    r.stop();
}

/// A cooldown holds back triggered chunks close to the last one.
#[test]
fn trigger_cooldown() {
    let server = MockServer::start();
    let r = Run::new(
        &props(&server, "trigger-classes=person trigger-cooldown=2.5"),
        "",
        false,
        W,
        H,
        FPS,
    );
    let src = r.appsrc.static_pad("src").unwrap();
    src.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = info.data.as_mut() {
            if b.pts().unwrap().seconds() >= 1 {
                gst_video::VideoRegionOfInterestMeta::add(b.make_mut(), "person", (0, 0, 8, 8));
            }
        }
        gst::PadProbeReturn::Ok
    });
    r.play().unwrap();
    push(&r, 0, 60, |_| false);
    r.end();
    assert!(r.wait_eos(T));
    let m = by_index(&r.outputs().json());
    let kinds: Vec<String> = (0..6).map(|i| kind(&m, i)).collect();
    // 0: first; 1: trigger; 2, 3: cooldown; 4: trigger; 5: cooldown.
    assert_eq!(
        kinds,
        ["caption", "caption", "skipped", "skipped", "caption", "skipped"]
    );
    assert_eq!(m[&2]["reason"], "cooldown");
    r.stop();
}

/// `prompt` and `system-prompt` set from another thread while chunks are
/// in flight: every request is made with one whole version, and its
/// record's `prompt-id` names that version (announced once in a
/// `vss-prompt` message).
#[test]
fn steering_prompts_while_playing() {
    let server = Arc::new(MockServer::start());
    // Every third request waits until the test thread made its change, so
    // changes land while chunks are in flight (paced by the test, not by
    // time).
    let applied = Arc::new((Mutex::new(0u64), Condvar::new()));
    let a = applied.clone();
    server.set_policy(move |_, idx| {
        if idx % 3 == 2 {
            let want = (idx as u64 + 1) / 3;
            let (m, c) = &*a;
            let g = m.lock().unwrap();
            let _ = c.wait_timeout_while(g, T, |n| *n < want.min(4));
        }
        Reply::ok()
    });
    let r = Run::new(
        &props(&server, "max-concurrency=3 prompt=P0 system-prompt=S0"),
        "",
        false,
        W,
        H,
        FPS,
    );
    r.play().unwrap();
    let element = r.element.clone();
    let srv = server.clone();
    let setter = std::thread::spawn(move || {
        for n in 1..=4u64 {
            if !srv.wait_for_requests((n * 3) as usize, T) {
                break;
            }
            element.set_property("prompt", format!("P{n}"));
            element.set_property("system-prompt", format!("S{n}"));
            let (m, c) = &*applied;
            *m.lock().unwrap() = n;
            c.notify_all();
        }
    });
    push(&r, 0, 200, |s| s % 2 == 0);
    r.end();
    assert!(r.wait_eos(T));
    setter.join().unwrap();
    let o = r.outputs();
    let mut versions: HashMap<u64, (String, Option<String>)> = HashMap::new();
    versions.insert(0, ("P0".into(), Some("S0".into())));
    for s in o.other_messages.iter().filter(|s| s.name() == "vss-prompt") {
        let id = s.get::<u64>("prompt-id").unwrap();
        let p = s.get::<String>("prompt").unwrap();
        let sys = s.get::<String>("system-prompt").ok();
        assert!(
            versions.insert(id, (p, sys)).is_none(),
            "version {id} twice"
        );
    }
    assert_eq!(versions.len(), 9, "4 prompt and 4 system changes");
    let reqs = server.requests();
    let recs = o.json();
    assert_eq!(recs.len(), 20);
    let mut ids = std::collections::BTreeSet::new();
    for v in &recs {
        assert_eq!(v["kind"], "caption");
        let id = v["prompt-id"].as_u64().unwrap();
        ids.insert(id);
        let (p, sys) = &versions[&id];
        let t0 = v["frame-times"][0].as_f64().unwrap();
        let req = reqs
            .iter()
            .find(|q| (q.first_time() - t0).abs() < 1e-6)
            .expect("a request for the chunk");
        assert!(
            req.text.contains(&format!(". {p} Make sure")),
            "chunk {} says prompt-id {id} ({p}) but was sent {:?}",
            v["chunk-index"],
            req.text
        );
        assert_eq!(&req.system, sys, "chunk {}", v["chunk-index"]);
    }
    assert!(ids.len() >= 3, "the prompt changed while running: {ids:?}");
    assert_eq!(r.element.property::<String>("prompt"), "P4");
    drop(o);
    r.stop();
}

/// The camera scene of pipelines/bench-monitor.sh, short: a real
/// photograph with sensor noise and light drift, H.264-encoded, and a small
/// real object (1/10 of the width) walking through seconds 8–14. With the
/// default `change-threshold` the noise stays under it and the object goes
/// over it.
#[test]
fn default_threshold_on_real_h264_footage() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("VSS_TEST_PYTHON_IMAGES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target/py/images/bin/python"));
    let required = std::env::var("VSS_TEST_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
    if !python.exists() {
        assert!(!required, "{} is missing", python.display());
        eprintln!(
            "skipped: no {} (pipelines/setup-python.sh images)",
            python.display()
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("vss-monitor-scene-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mp4 = dir.join("scene.mp4");
    let out = std::process::Command::new(&python)
        .arg(root.join("pipelines/monitor-scene.py"))
        .arg(&mp4)
        .args([
            "--seconds",
            "20",
            "--size",
            "640x360",
            "--events",
            "8-14:small",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scene generation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    init();
    let server = MockServer::start();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 \
         ! vsssummarize name=s endpoint={} model-name=m summarize=false chunk-duration=4 skip-unchanged=true \
         s.summary_src ! fakesink s.src ! fakesink",
        mp4.display(),
        server.url()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut recs = Vec::new();
    for msg in pipeline
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(120))
    {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{e:?}"),
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "vss-summary" {
                    recs.push((
                        s.get::<u64>("chunk-index").unwrap(),
                        s.get::<String>("kind").unwrap(),
                        s.get::<f64>("change").ok(),
                    ));
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let kinds: Vec<&str> = recs.iter().map(|r| r.1.as_str()).collect();
    // 0: first; 1: static (noise); 2, 3: the object; 4: static again, like
    // chunk 3's last frames (the object left at 14 s).
    assert_eq!(
        kinds,
        ["caption", "unchanged", "caption", "caption", "unchanged"],
        "{recs:?}"
    );
    let threshold = gstvsssummarize::gate::DEFAULT_THRESHOLD;
    for (i, _, c) in recs.iter().filter(|r| r.1 == "unchanged") {
        assert!(c.unwrap() < threshold / 2.0, "chunk {i}: noise {c:?}");
    }
    assert_eq!(server.requests().len(), 3);
}

/// Gating and triggers together, across a flush and EOS: one record per
/// chunk; a triggered chunk that shows no change is `unchanged`.
#[test]
fn gating_and_triggers_together_across_flush() {
    let server = MockServer::start();
    let r = Run::new(
        &props(&server, "skip-unchanged=true trigger-classes=person"),
        "",
        false,
        W,
        H,
        FPS,
    );
    // The person (object and ROI meta) is there in seconds 4-6 and 12-13.
    let present = |s: u64| (4..7).contains(&s) || (12..14).contains(&s);
    let src = r.appsrc.static_pad("src").unwrap();
    src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = info.data.as_mut() {
            if present(b.pts().unwrap().seconds()) {
                gst_video::VideoRegionOfInterestMeta::add(b.make_mut(), "person", (0, 0, 8, 8));
            }
        }
        gst::PadProbeReturn::Ok
    });
    r.play().unwrap();
    push(&r, 0, 81, present);
    wait_record(&r, 7);
    let sink = r.element.static_pad("sink").unwrap();
    assert!(sink.send_event(gst::event::FlushStart::new()));
    assert!(sink.send_event(gst::event::FlushStop::new(true)));
    let seg = gst::FormattedSegment::<gst::ClockTime>::new();
    assert!(sink.send_event(gst::event::Segment::new(&seg)));
    push(&r, 100, 150, present);
    r.end();
    assert!(r.wait_eos(T));
    let recs = r.outputs().json();
    let m = by_index(&recs);
    let kinds: Vec<String> = (0..8).map(|i| kind(&m, i)).collect();
    assert_eq!(
        kinds,
        [
            "caption",
            "skipped",
            "skipped",
            "skipped",
            "caption",
            "unchanged",
            "unchanged",
            "skipped"
        ]
    );
    assert_eq!(m[&5]["same-as"], 4);
    // After the flush (seconds 10-14): first chunk captioned, then the
    // person in 12-13: changed and triggered, then still there: unchanged.
    let after: Vec<String> = m
        .iter()
        .filter(|(i, _)| **i > 8)
        .map(|(_, v)| v["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        after,
        ["caption", "skipped", "caption", "unchanged", "skipped"]
    );
    let gated = recs.iter().filter(|v| v["kind"] != "caption").count() as u64;
    assert_eq!(r.prop_u64("chunks-gated"), gated);
    assert_eq!(server.requests().len() as u64, recs.len() as u64 - gated);
    r.stop();
}

/// `events` set while running: captions checked after the change use the
/// new list (the test video shows red in second 0, blue in 2, black in 4).
#[test]
fn events_change_while_playing() {
    let server = MockServer::start();
    let v = Video::small(6);
    let r = Run::new(
        &format!(
            "endpoint={} model-name=m max-retries=0 chunk-duration=1 num-frames-per-chunk=1 summarize=false events=red",
            server.url()
        ),
        "",
        false,
        v.width,
        v.height,
        v.fps,
    );
    r.play().unwrap();
    r.push_range(&v, 0, 31);
    wait_record(&r, 2);
    r.element.set_property("events", "black;red");
    r.push_range(&v, 31, 60);
    r.end();
    assert!(r.wait_eos(T));
    let alerts: Vec<(u64, String)> = r
        .outputs()
        .json()
        .iter()
        .filter(|v| v["kind"] == "alert")
        .inspect(|v| assert_eq!(v["prompt-id"], 0, "{v}"))
        .map(|v| {
            (
                v["chunk-index"].as_u64().unwrap(),
                v["events"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Blue (chunk 2) was never an event; black (chunk 4) is one from chunk 3 on.
    assert_eq!(alerts, [(0, "red".to_string()), (4, "black".to_string())]);
    r.stop();
}
