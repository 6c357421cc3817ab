// SPDX-License-Identifier: MPL-2.0
//! Incidents and evidence through the element, against the test mock (its
//! event check detects an event when the caption contains the event's
//! text; the test videos change colour every second, so with 1 s chunks
//! caption `i` is `colours: <colour of second i>`). Palette order: red,
//! green, blue, white, black, yellow, cyan, magenta; the event `a` is in
//! black, cyan and magenta (seconds 4, 6, 7, then 12, 14, 15), the event
//! `e` in all but black and cyan (letters of `colours` match every
//! caption).

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mock_openai::decode_jpeg;
use common::*;
use gst::prelude::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn props(server: &MockServer, extra: &str) -> String {
    format!(
        "endpoint={} model-name=mock chunk-duration=1 num-frames-per-chunk=1 max-retries=0 request-timeout=10 stream-id=dock-3 {extra}",
        server.url()
    )
}

/// The chunks (`chunk-index`) whose caption contains `text`.
fn chunks_with(recs: &[Value], text: &str) -> Vec<u64> {
    recs.iter()
        .filter(|r| r["kind"] == "caption" && r["text"].as_str().unwrap().contains(text))
        .map(|r| r["chunk-index"].as_u64().unwrap())
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Splits the alert chunks of one event into incidents: a new one starts
/// when more than `gap` seconds (1 s chunks) lie between two alerts.
fn expected_incidents(alerts: &[u64], gap: f64) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    for &c in alerts {
        match out.last_mut() {
            Some(cur) if (c - cur.last().unwrap() - 1) as f64 <= gap => cur.push(c),
            _ => out.push(vec![c]),
        }
    }
    out
}

#[test]
fn incidents_open_and_close_across_windows_and_at_eos() {
    let server = MockServer::start();
    let gap = 1.5;
    let r = run_video(
        &props(
            &server,
            &format!("summarize=true summary-duration=5 events=\"a;e\" incident-gap={gap}"),
        ),
        &Video::small(12),
        T,
    );
    let recs = r.outputs().json();
    for event in ["a", "e"] {
        let alerts = chunks_with(&recs, event);
        let want = expected_incidents(&alerts, gap);
        assert!(!want.is_empty());
        let starts: Vec<(usize, &Value)> = recs
            .iter()
            .enumerate()
            .filter(|(_, x)| x["kind"] == "incident-start" && x["event"] == event)
            .collect();
        let ends: Vec<(usize, &Value)> = recs
            .iter()
            .enumerate()
            .filter(|(_, x)| x["kind"] == "incident-end" && x["event"] == event)
            .collect();
        assert_eq!(starts.len(), want.len(), "{event}: {want:?}");
        assert_eq!(ends.len(), want.len(), "{event}: {want:?}");
        for (k, chunks) in want.iter().enumerate() {
            let (si, s) = starts[k];
            let (ei, e) = ends[k];
            assert_eq!(s["incident-id"], e["incident-id"]);
            // The start follows the alert of its first chunk.
            let a = &recs[si - 1];
            assert_eq!(a["kind"], "alert", "{a}");
            assert_eq!(a["chunk-index"], chunks[0]);
            assert_eq!(s["first-chunk"], chunks[0]);
            assert_eq!(u64s(&e["chunk-indices"]), *chunks, "{e}");
            assert_eq!(e["alert-count"], chunks.len() as u64);
            assert_eq!(e["start"], chunks[0] as f64);
            assert_eq!(e["end"], (chunks.last().unwrap() + 1) as f64);
            assert_eq!(e["captions"].as_array().unwrap().len(), chunks.len());
            assert_eq!(
                e["captions"][0]["text"],
                recs.iter()
                    .find(|x| x["kind"] == "caption" && x["chunk-index"] == chunks[0])
                    .unwrap()["text"]
            );
            let last = *chunks.last().unwrap();
            let closer = recs[..ei]
                .iter()
                .rev()
                .find(|x| x["kind"] == "caption")
                .unwrap();
            let closer_i = closer["chunk-index"].as_u64().unwrap();
            if e["reason"] == "quiet" {
                // Closed by the first chunk that makes the quiet time.
                assert!(
                    (closer_i + 1 - (last + 1)) as f64 >= gap
                        && ((closer_i - (last + 1)) as f64) < gap,
                    "{e} after chunk {closer_i}"
                );
            } else {
                assert_eq!(e["reason"], "eos", "{e}");
                assert_eq!(closer_i, 11, "EOS ends follow the last caption");
            }
        }
    }
    // An incident that spans a window boundary (a: 4, 6, 7 with the window
    // boundary at 5 s) is one incident.
    let l = recs
        .iter()
        .find(|x| x["kind"] == "incident-end" && x["event"] == "a")
        .unwrap();
    assert_eq!(u64s(&l["chunk-indices"]), vec![4, 6, 7]);
    let window_of = |c: u64| {
        recs.iter()
            .find(|x| x["kind"] == "summary" && u64s(&x["chunk-indices"]).contains(&c))
            .map(|x| x["summary-index"].as_u64().unwrap())
    };
    assert_eq!((window_of(4), window_of(6)), (Some(0), Some(1)));
    // EOS ends before the final summary, which is last.
    assert_eq!(recs.last().unwrap()["kind"], "final-summary");
    // One vss-incident message per record.
    let o = r.outputs();
    let n = recs
        .iter()
        .filter(|x| x["kind"].as_str().unwrap().starts_with("incident-"))
        .count();
    assert_eq!(o.incidents.len(), n);
    assert!(o
        .incidents
        .iter()
        .any(|s| s.get::<String>("reason").ok().as_deref() == Some("eos")));
    drop(o);
    r.stop();
}

/// (request head, JSON body) of each request received.
type Received = Arc<Mutex<Vec<Value>>>;

fn receiver() -> (String, Received, MockServer) {
    let server = MockServer::start();
    let url = format!("{}/alerts", server.base());
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    server.set_policy(move |q, _| {
        g.lock().unwrap().push(q.body.clone());
        Reply::Json {
            code: 200,
            body: serde_json::json!({}),
        }
    });
    (url, got, server)
}

#[test]
fn the_webhook_posts_per_incident() {
    let server = MockServer::start();
    let (hook, got, _hook_server) = receiver();
    let r = run_video(
        &props(
            &server,
            &format!("events=a incident-gap=0 alert-webhook={hook} alert-webhook-mode=incident"),
        ),
        &Video::small(10),
        T,
    );
    let recs = r.outputs().json();
    let alerts = chunks_with(&recs, "a");
    let want = expected_incidents(&alerts, 0.0);
    assert_eq!(want, vec![vec![4], vec![6, 7]]);
    assert_eq!(r.prop_u64("alerts-raised"), alerts.len() as u64);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2 * want.len(), "{got:?}");
    let mut open = 0;
    for (k, chunks) in want.iter().enumerate() {
        // Deliveries run concurrently (a retried one may arrive later):
        // each incident has one open and one close post.
        let id = format!("dock-3-incident-{k}");
        let find = |state: &str| {
            let v: Vec<&Value> = got
                .iter()
                .filter(|b| b["incidentId"] == id.as_str() && b["state"] == state)
                .collect();
            assert_eq!(v.len(), 1, "{id} {state}: {got:?}");
            v[0]
        };
        let (o, c) = (find("open"), find("closed"));
        assert_eq!(o["streamId"], "dock-3");
        assert_eq!(o["detectedEvents"], serde_json::json!(["a"]));
        assert_eq!(o["ntpTimestamp"], chunks[0] as f64);
        assert_eq!(u64s(&c["chunkIndices"]), *chunks);
        assert_eq!(c["alertCount"], chunks.len() as u64);
        assert_eq!(c["reason"], "quiet");
        open += 1;
    }
    assert_eq!(open, want.len());
    drop(got);
    r.stop();
}

/// The decoded duration (last frame's end) and the frame count of an MP4.
fn mp4_duration(path: &Path) -> (f64, u64) {
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! fakesink name=sink sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let seen = Arc::new(Mutex::new((0.0f64, 0u64)));
    let s2 = seen.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                let end =
                    b.pts().map_or(0, |t| t.nseconds()) + b.duration().map_or(0, |t| t.nseconds());
                let mut s = s2.lock().unwrap();
                s.0 = s.0.max(end as f64 / 1e9);
                s.1 += 1;
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    let m = p
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the clip decodes to EOS");
    assert!(matches!(m.view(), gst::MessageView::Eos(_)), "{m:?}");
    p.set_state(gst::State::Null).unwrap();
    let s = *seen.lock().unwrap();
    s
}

fn evidence_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vss-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn has_x264() -> bool {
    init();
    gst::ElementFactory::find("x264enc").is_some()
        && gst::ElementFactory::find("avdec_h264").is_some()
}

#[test]
fn alerts_get_snapshots_and_incidents_get_clips() {
    if !has_x264() {
        eprintln!(
            "SKIP: x264enc or avdec_h264 missing (gstreamer1.0-plugins-ugly, gstreamer1.0-libav)"
        );
        return;
    }
    let server = MockServer::start();
    let dir = evidence_dir("clips");
    let r = run_video(
        &props(
            &server,
            &format!(
                "events=a incident-gap=0 evidence-dir={} clip-pre=1 clip-post=1",
                dir.display()
            ),
        ),
        // 8 s: the second incident (6, 7) ends at EOS, its clip is written
        // before EOS leaves.
        &Video::small(8),
        T,
    );
    let recs = r.outputs().json();
    let alerts: Vec<&Value> = recs.iter().filter(|x| x["kind"] == "alert").collect();
    assert_eq!(alerts.len(), 3, "a in 4, 6, 7");
    for a in &alerts {
        let p = a["snapshot"].as_str().unwrap_or_else(|| panic!("{a}"));
        assert!(Path::new(p).starts_with(&dir), "{p}");
        // The snapshot is the chunk's frame: its colour is the chunk's.
        let img = decode_jpeg(&std::fs::read(p).unwrap());
        let c = a["chunk-index"].as_u64().unwrap();
        assert_eq!(img.colour, colour_of_second(c).0, "{p}");
        assert_eq!((img.width, img.height), (64, 48));
    }
    let ends: Vec<&Value> = recs
        .iter()
        .filter(|x| x["kind"] == "incident-end")
        .collect();
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1]["reason"], "eos");
    for e in ends {
        let clip = PathBuf::from(e["clip"].as_str().unwrap_or_else(|| panic!("{e}")));
        assert!(clip.starts_with(&dir) && clip.extension().unwrap() == "mp4");
        let (cs, ce) = (
            e["clip-start"].as_f64().unwrap(),
            e["clip-end"].as_f64().unwrap(),
        );
        let (start, end) = (e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
        // Pre-roll: from 1 s before (the stream starts at 0); post-roll: the
        // frames that had arrived when the incident closed, past its end.
        assert!((cs - (start - 1.0).max(0.0)).abs() < 0.25, "{e}");
        assert!(ce >= end - 1e-6 && ce <= end + 1.0 + 0.25, "{e}");
        if e["reason"] == "quiet" {
            assert!(ce > end, "a post-roll after a quiet close: {e}");
        }
        let (d, frames) = mp4_duration(&clip);
        assert!((d - (ce - cs)).abs() < 0.3, "decoded {d} s for {e}");
        assert!(
            frames >= ((ce - cs) * 4.0) as u64,
            "{frames} frames for {e}"
        );
    }
    r.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn evidence_stays_in_its_budget_oldest_first() {
    let server = MockServer::start();
    let dir = evidence_dir("budget");
    std::fs::create_dir_all(&dir).unwrap();
    // An earlier run's file of this stream counts and goes first; other
    // files are not touched.
    let old = dir.join("dock-3-19700101T000000-alert-0.jpg");
    std::fs::write(&old, vec![0u8; 1500]).unwrap();
    let other = dir.join("notes.txt");
    std::fs::write(&other, b"keep").unwrap();
    // The event checks run on two threads, so snapshots reach the disk out
    // of the stream's order: the check of chunk 1 is held until the last
    // chunk's check has come, so its snapshot is written last. Oldest is
    // by stream time (docs/monitoring.md), so it still goes first.
    let last_came = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let gate = last_came.clone();
    server.set_policy(move |req, _| {
        if req.is_event_check() {
            let (came, cv) = &*gate;
            let t = req.first_time();
            if t >= 11.0 {
                *came.lock().unwrap() = true;
                cv.notify_all();
            } else if (1.0..2.0).contains(&t) {
                let held = cv
                    .wait_timeout_while(came.lock().unwrap(), T, |c| !*c)
                    .unwrap();
                assert!(*held.0, "the last chunk's check never came");
            }
        }
        Reply::ok()
    });
    let budget = 4000u64;
    let r = run_video(
        &props(
            &server,
            &format!(
                "events=e incident-gap=0 evidence-dir={} clip-pre=0 clip-post=0 evidence-max-bytes={budget} llm-max-concurrency=2",
                dir.display()
            ),
        ),
        &Video::small(12),
        T,
    );
    let recs = r.outputs().json();
    let snaps: Vec<PathBuf> = recs
        .iter()
        .filter(|x| x["kind"] == "alert")
        .map(|x| PathBuf::from(x["snapshot"].as_str().unwrap()))
        .collect();
    assert!(snaps.len() >= 8, "{}", snaps.len());
    assert!(!recs.iter().any(|x| x.get("clip").is_some()));
    let ours: Vec<(PathBuf, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("dock-3-"))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect();
    let total: u64 = ours.iter().map(|(_, n)| n).sum();
    assert!(total <= budget, "{total} bytes in {ours:?}");
    assert!(!old.exists(), "the oldest file goes first");
    assert!(other.exists());
    // The newest snapshots are kept, the oldest deleted: what is left is a
    // suffix of the alerts.
    let kept: Vec<bool> = snaps.iter().map(|p| p.exists()).collect();
    let first = kept.iter().position(|k| *k).expect("the newest is kept");
    assert!(kept[first..].iter().all(|k| *k), "{kept:?}");
    assert!(first > 0, "some were deleted: {kept:?}");
    assert!(*last_came.0.lock().unwrap());
    r.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (at most 60 s) for a `vss-incident` message of `kind`.
fn wait_incident(r: &Run, kind: &str) -> gst::Structure {
    let bus = r.pipeline.bus().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Some(m) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Element],
        ) else {
            break;
        };
        if let Some(s) = m.structure() {
            if s.name() == "vss-incident" && s.get::<String>("kind").unwrap() == kind {
                return s.to_owned();
            }
        }
    }
    panic!("no vss-incident {kind}");
}

/// Flush and stop end an open incident on the bus (rule 7): one
/// `incident-end` each, with its reason.
#[test]
fn a_flush_and_a_stop_end_the_open_incident_on_the_bus() {
    for how in ["flush", "stopped"] {
        let server = MockServer::start();
        let v = Video::small(6);
        let r = with_video(&props(&server, "events=a incident-gap=1000"), &v, false);
        r.play().unwrap();
        // Seconds 0-5: `a` in chunk 4 opens an incident the gap keeps open.
        r.push_range(&v, 0, 6 * v.fps);
        let s = wait_incident(&r, "incident-start");
        assert_eq!(s.get::<u64>("first-chunk").unwrap(), 4);
        let id = s.get::<String>("incident-id").unwrap();
        if how == "flush" {
            let sink = r.element.static_pad("sink").unwrap();
            assert!(sink.send_event(gst::event::FlushStart::new()));
            assert!(sink.send_event(gst::event::FlushStop::new(true)));
        } else {
            r.pipeline.set_state(gst::State::Ready).unwrap();
        }
        let e = wait_incident(&r, "incident-end");
        assert_eq!(e.get::<String>("reason").unwrap(), how);
        assert_eq!(e.get::<String>("incident-id").unwrap(), id);
        r.pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// `events` set while running (steering): the open incident of an event
/// removed from the list ends at once, on the bus and on `summary_src`, in
/// order with the records (`reason: event-removed`), and its later chunks
/// open none.
#[test]
fn removing_an_event_while_running_ends_its_incident() {
    let server = MockServer::start();
    let v = Video::small(12);
    let r = with_video(
        &props(&server, "summarize=true events=a incident-gap=1000"),
        &v,
        false,
    );
    r.play().unwrap();
    // Seconds 0-5: `a` in chunk 4 opens an incident the gap keeps open.
    r.push_range(&v, 0, 6 * v.fps);
    let s = wait_incident(&r, "incident-start");
    let id = s.get::<String>("incident-id").unwrap();
    r.element.set_property("events", "e");
    let e = wait_incident(&r, "incident-end");
    assert_eq!(e.get::<String>("reason").unwrap(), "event-removed");
    assert_eq!(e.get::<String>("incident-id").unwrap(), id);
    // The rest of the clip: `a` (chunks 6, 7) is no longer watched for.
    r.push_range(&v, 6 * v.fps, 12 * v.fps);
    r.end();
    assert!(r.wait_eos(T), "{:?}", r.outputs().errors);
    let recs = r.outputs().json();
    let ends: Vec<&Value> = recs
        .iter()
        .filter(|x| x["kind"] == "incident-end" && x["event"] == "a")
        .collect();
    assert_eq!(ends.len(), 1, "exactly one end for the incident of a");
    assert_eq!(ends[0]["reason"], "event-removed");
    let starts_a = recs
        .iter()
        .filter(|x| x["kind"] == "incident-start" && x["event"] == "a")
        .count();
    assert_eq!(starts_a, 1, "a removed event opens no new incident");
    // Its end leaves before the final summary, which is last.
    let end_at = recs.iter().position(|x| std::ptr::eq(x, ends[0])).unwrap();
    assert_eq!(recs.last().unwrap()["kind"], "final-summary");
    assert!(end_at < recs.len() - 1);
    r.stop();
}
