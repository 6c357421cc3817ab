//! `openai-compat`'s video mode end to end against the mock, which decodes
//! the MP4 it is sent (qtdemux + avdec_h264) and names each frame's colour
//! and time: `vision-mode` (images, video, auto and its fallback),
//! prompt placeholders and the timestamp line, `image-detail`,
//! `max-images-per-request` and `extra-body`.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

const T: Duration = Duration::from_secs(60);

fn props(server: &MockServer, extra: &str) -> String {
    format!(
        "endpoint={} model-name=test-model api-key=sk-test-SECRET-123 max-retries=0 request-timeout=20 chunk-duration=2 num-frames-per-chunk=4 frame-width=80 {extra}",
        server.url()
    )
}

fn run(props: &str, setup: impl FnOnce(&gst::Element)) -> Run {
    let v = Video {
        width: 160,
        height: 120,
        fps: 10,
        seconds: 6,
    };
    let r = with_video(props, &v, false);
    setup(&r.element);
    r.play().expect("pipeline plays");
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T), "no EOS: {:?}", r.outputs().errors);
    r.drain_bus();
    r
}

/// The colours of a record's frames, from its frame-times.
fn expected_colours(rec: &serde_json::Value) -> Vec<&'static str> {
    rec["frame-times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| colour_of_second(t.as_f64().unwrap() as u64).0)
        .collect()
}

/// Every record is a caption naming the colours of its frames (the mock
/// answers with the colour of every frame it was shown, in order).
fn assert_captions_name_their_frames(recs: &[serde_json::Value]) {
    for rec in recs {
        assert!(rec.get("error").is_none(), "{rec}");
        assert_eq!(
            rec["text"],
            format!("colours: {}", expected_colours(rec).join(" "))
        );
    }
}

/// vision-mode=video: one MP4 per chunk; the mock decodes every frame, in
/// order, at the chunk's frame times (relative to its first frame).
#[test]
fn video_mode_sends_one_mp4_per_chunk_with_its_times() {
    let server = MockServer::start();
    let r = run(&props(&server, "vision-mode=video"), |_| {});
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert_captions_name_their_frames(&recs);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for q in &reqs {
        assert_eq!(q.videos.len(), 1, "one video_url per request");
        let parts = q.body["messages"][0]["content"].as_array().unwrap();
        assert!(parts.iter().all(|p| p["type"] != "image_url"));
        assert!(
            q.text
                .starts_with("This video's frames are at timestamps in seconds: <"),
            "{}",
            q.text
        );
        // Frames 0.5 s apart; the file starts at the first one.
        let times = &q.videos[0];
        assert_eq!(times.len(), 4);
        for (i, t) in times.iter().enumerate() {
            assert!((t - 0.5 * i as f64).abs() < 1e-3, "{times:?}");
        }
        assert!(q.images.iter().all(|i| (i.width, i.height) == (80, 60)));
    }
    r.stop();
}

/// auto: the server refuses video; one warning quoting it, the refused chunk
/// is resent as images, and every later chunk goes as images.
#[test]
fn auto_falls_back_to_images_for_the_session() {
    let server = MockServer::start();
    server.set_policy(|req, _| {
        if req.videos.is_empty() {
            Reply::ok()
        } else {
            Reply::Json {
                code: 400,
                body: serde_json::json!({"error": {"message": "video input is not supported by this model (test-model)", "type": "BadRequestError"}}),
            }
        }
    });
    let r = run(
        &props(&server, "vision-mode=auto max-concurrency=1"),
        |_| {},
    );
    let o = r.outputs();
    let recs = o.json();
    assert_eq!(recs.len(), 3);
    assert_captions_name_their_frames(&recs);
    let reqs = server.requests();
    let video_reqs = reqs.iter().filter(|q| !q.videos.is_empty()).count();
    assert_eq!(video_reqs, 1, "video tried once");
    assert_eq!(reqs.len(), 4, "the refused chunk resent as images");
    let w: Vec<_> = o
        .warnings
        .iter()
        .filter(|w| w.contains("refused video"))
        .collect();
    assert_eq!(w.len(), 1, "{:?}", o.warnings);
    assert!(w[0].contains("video input is not supported"), "{}", w[0]);
    r.stop();
}

/// vision-mode=video never falls back: the refusal is each chunk's error
/// record, naming vision-mode=images.
#[test]
fn video_mode_refused_gives_error_records() {
    let server = MockServer::start();
    server.set_policy(|_, _| Reply::Json {
        code: 400,
        body: serde_json::json!({"error": {"message": "Unknown part type: video_url"}}),
    });
    let r = run(&props(&server, "vision-mode=video"), |_| {});
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 3);
    for rec in &recs {
        let e = rec["error"].as_str().unwrap_or_default();
        assert!(e.contains("vision-mode=images"), "{e}");
        assert!(e.contains("Unknown part type"), "{e}");
    }
    assert!(server.requests().iter().all(|q| q.videos.len() == 1));
    r.stop();
}

/// Placeholders in prompt and system-prompt, timestamp-line=false,
/// image-detail, max-images-per-request (frame-times lists what was sent)
/// and extra-body merged into every request.
#[test]
fn placeholders_image_controls_and_extra_body() {
    let server = MockServer::start();
    let r = run(
        &props(
            &server,
            "timestamp-line=false image-detail=low max-images-per-request=2 stream-id=cam-3",
        ),
        |e| {
            e.set_property(
                "prompt",
                "Frames {timestamps}: {num_frames} from {first_ts} to {last_ts}.",
            );
            e.set_property("system-prompt", "You watch {stream_id}.");
            e.set_property(
                "extra-body",
                r#"{"mm_processor_kwargs": {"fps": 2}, "top_k": 7, "chat_template_kwargs": {"enable_thinking": false}}"#,
            );
        },
    );
    let o = r.outputs();
    let recs = o.json();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["frame-times"], serde_json::json!([0.0, 1.5]));
    assert_captions_name_their_frames(&recs);
    let reqs = server.requests();
    let first = reqs.iter().find(|q| q.text.contains("0.00")).unwrap();
    assert_eq!(first.text, "Frames <0.00> <1.50>: 2 from 0.00 to 1.50.");
    for q in &reqs {
        assert_eq!(q.system.as_deref(), Some("You watch cam-3."));
        assert_eq!(q.images.len(), 2);
        assert_eq!(q.body["top_k"], 7);
        assert_eq!(q.body["mm_processor_kwargs"]["fps"], 2);
        assert_eq!(q.body["chat_template_kwargs"]["enable_thinking"], false);
        let parts = q.body["messages"][1]["content"].as_array().unwrap();
        assert_eq!(parts[0]["image_url"]["detail"], "low");
    }
    let said: Vec<_> = o
        .warnings
        .iter()
        .filter(|w| w.contains("max-images-per-request"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", o.warnings);
    r.stop();
}

/// extra-body and the mode names are checked at NULL→READY; a credential
/// in extra-body is refused without being quoted.
#[test]
fn bad_vision_settings_fail_at_ready() {
    let e = ready_error("endpoint=http://127.0.0.1:9/v1 model-name=m vision-mode=movie");
    assert!(e.contains("vision-mode"), "{e}");
    let e = ready_error("endpoint=http://127.0.0.1:9/v1 model-name=m image-detail=ultra");
    assert!(e.contains("image-detail"), "{e}");
    init();
    for (body, want) in [
        (r#"{"api_key": "hunter2-secret"}"#, "credential"),
        (r#"[1, 2]"#, "JSON object"),
        (r#"{"messages": []}"#, "'messages'"),
    ] {
        let p = gst::parse::launch(
            "fakesrc ! vsssummarize name=s endpoint=http://127.0.0.1:9/v1 model-name=m ! fakesink",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        p.by_name("s").unwrap().set_property("extra-body", body);
        assert!(p.set_state(gst::State::Ready).is_err(), "{body}");
        let msg = p
            .bus()
            .unwrap()
            .iter()
            .find_map(|m| match m.view() {
                gst::MessageView::Error(e) => Some(format!("{} | {:?}", e.error(), e.debug())),
                _ => None,
            })
            .unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let _ = p.set_state(gst::State::Null);
    }
}

/// pipelines/mock-endpoint.py (stdlib Python) on a free port, killed on drop.
struct PyMock(std::process::Child, String);

impl PyMock {
    fn start(args: &[&str]) -> PyMock {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/pipelines/mock-endpoint.py"
            ))
            .args(["--port", "0", "--quiet"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the mock");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("mock did not start: {line:?}"))
            .to_string();
        PyMock(child, url)
    }
}

impl Drop for PyMock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bundled mock reads the MP4's frames and times from its container;
/// with --no-video it refuses video and auto goes on with images.
#[test]
fn bundled_mock_reports_the_video_it_was_sent() {
    let m = PyMock::start(&[]);
    let p = format!(
        "endpoint={} model-name=mock max-retries=0 chunk-duration=2 num-frames-per-chunk=4 frame-width=80 vision-mode=video",
        m.1
    );
    let r = run(&p, |_| {});
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 3);
    for rec in &recs {
        let t = rec["text"].as_str().unwrap_or_default();
        assert!(
            t.contains("video: 4 frames at 0.000 0.500 1.000 1.500 s (80x60)"),
            "{rec}"
        );
    }
    r.stop();

    let m = PyMock::start(&["--no-video"]);
    let p = format!(
        "endpoint={} model-name=mock max-retries=0 chunk-duration=2 num-frames-per-chunk=4 frame-width=80 vision-mode=auto max-concurrency=1",
        m.1
    );
    let r = run(&p, |_| {});
    let o = r.outputs();
    let recs = o.json();
    assert_eq!(recs.len(), 3);
    for rec in &recs {
        let t = rec["text"].as_str().unwrap_or_default();
        assert!(t.contains("received 4 frames"), "{rec}");
    }
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("refused video") && w.contains("--no-video")),
        "{:?}",
        o.warnings
    );
    r.stop();
}
