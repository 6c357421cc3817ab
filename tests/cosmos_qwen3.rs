// SPDX-License-Identifier: MPL-2.0
//! `backend=cosmos-reason2` and `backend=cosmos-reason3` end to end with the
//! tiny random-weight Qwen3-VL checkpoints of tests/qwen3 (the Hugging Face
//! layout, the older key prefix, Cosmos3's split layout and an FP8 copy):
//! one caption per chunk, window and final summaries and event checks
//! through the same loaded model, deterministic text; and an H.264 MP4
//! through `decodebin`.
#![cfg(feature = "cosmos")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use gst::prelude::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(180);

fn ckpt(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/qwen3")
        .join(name)
}

fn props(backend: &str, dir: &str, extra: &str) -> String {
    format!(
        "backend={backend} model-path={} chunk-duration=1 num-frames-per-chunk=4 max-tokens=12 {extra}",
        ckpt(dir).display()
    )
}

/// Captions, summaries and event checks with every checkpoint layout.
#[test]
fn each_checkpoint_captions_and_summarizes() {
    let v = Video::small(3);
    for (backend, dir) in [
        ("cosmos-reason2", "tiny"),
        ("cosmos-reason3", "tiny-cosmos3"),
        ("cosmos-reason2", "tiny-oldprefix"),
        ("cosmos-reason2", "tiny-fp8-channel"),
    ] {
        let p = props(
            backend,
            dir,
            "summarize=true summary-duration=2 llm-max-tokens=16 events=\"a person falls\"",
        );
        let r = run_video(&p, &v, T);
        let recs = r.outputs().json();
        let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count("caption"), 3, "{dir}: {kinds:?}");
        assert_eq!(count("summary"), 2, "{dir}: {kinds:?}");
        assert_eq!(*kinds.last().unwrap(), "final-summary", "{dir}");
        for (k, rec) in recs.iter().filter(|r| r["kind"] == "caption").enumerate() {
            assert_eq!(rec["chunk-index"], k as u64, "{dir}");
            assert_eq!(rec["backend"], backend, "{dir}: {rec}");
            assert_eq!(rec["model"], dir, "{dir}: {rec}");
            assert!(rec.get("error").is_none(), "{dir}: {rec}");
            let out = rec["output-tokens"].as_u64().unwrap();
            assert!((1..=12).contains(&out), "{dir}: {rec}");
            // Time tags + one block per frame pair + the prompt.
            assert!(rec["input-tokens"].as_u64().unwrap() > 40, "{dir}: {rec}");
        }
        let fin = recs.last().unwrap();
        assert!(fin["input-tokens"].as_u64().unwrap() > 30, "{dir}: {fin}");
        for rec in &recs {
            if let Some(e) = rec.get("error").and_then(|e| e.as_str()) {
                assert!(
                    e.contains("empty text"),
                    "{dir}: only an empty answer may fail: {rec}"
                );
            }
        }
        r.stop();
    }
}

/// Same frames, same settings, same seed: the same captions; and the same
/// model from two layouts says the same thing.
#[test]
fn captions_are_deterministic_across_runs_and_layouts() {
    let v = Video::small(2);
    let texts = |p: &str| -> Vec<Value> {
        let r = run_video(p, &v, T);
        let t = r
            .outputs()
            .json()
            .iter()
            .map(|x| x["text"].clone())
            .collect();
        r.stop();
        t
    };
    let a = texts(&props("cosmos-reason2", "tiny", ""));
    assert_eq!(a.len(), 2);
    assert_eq!(texts(&props("cosmos-reason2", "tiny", "")), a);
    assert_eq!(texts(&props("cosmos-reason3", "tiny-cosmos3", "")), a);
}

/// A real H.264 clip through demuxer and decoder (the README's pipeline
/// shape) into `backend=cosmos-reason3`.
#[test]
fn an_mp4_clip_through_decodebin() {
    init();
    if gst::ElementFactory::find("x264enc").is_none()
        || gst::ElementFactory::find("avdec_h264").is_none()
    {
        eprintln!(
            "SKIP: x264enc or avdec_h264 missing (gstreamer1.0-plugins-ugly, gstreamer1.0-libav)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("clip.mp4");
    let enc = gst::parse::launch(&format!(
        "videotestsrc num-buffers=75 pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 \
         ! x264enc ! mp4mux ! filesink location={}",
        mp4.display()
    ))
    .unwrap();
    enc.set_state(gst::State::Playing).unwrap();
    let bus = enc.bus().unwrap();
    let eos = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    assert!(matches!(
        eos.map(|m| m.type_()),
        Some(gst::MessageType::Eos)
    ));
    enc.set_state(gst::State::Null).unwrap();

    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! vsssummarize name=s {} \
         s.summary_src ! fakesink s.src ! fakesink",
        mp4.display(),
        props("cosmos-reason3", "tiny-cosmos3", "summarize=false")
    ))
    .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut captions = Vec::new();
    for msg in p
        .bus()
        .unwrap()
        .iter_timed(gst::ClockTime::from_seconds(180))
    {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{e:?}"),
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "vss-summary"
                    && s.get::<String>("kind").ok().as_deref() == Some("caption")
                {
                    assert!(s.get::<String>("error").is_err(), "{s:?}");
                    captions.push(s.get::<u64>("chunk-index").unwrap());
                }
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    // 3 s of video in 1 s chunks.
    assert_eq!(captions, vec![0, 1, 2]);
}

/// `enable-reasoning=true` adds Cosmos-Reason2's instruction to the user
/// turn: the prompt grows by its tokens and every chunk still ends as one
/// record.
#[test]
fn reasoning_instruction_reaches_the_model() {
    let v = Video::small(2);
    let tokens = |extra: &str| -> Vec<u64> {
        let r = run_video(&props("cosmos-reason2", "tiny", extra), &v, T);
        let t = r
            .outputs()
            .json()
            .iter()
            .map(|x| x["input-tokens"].as_u64().unwrap())
            .collect();
        r.stop();
        t
    };
    let plain = tokens("");
    let reasoning = tokens("enable-reasoning=true");
    assert_eq!((plain.len(), reasoning.len()), (2, 2));
    // The byte-level tiny tokenizer: one token per byte of the instruction
    // and the blank line before it.
    let added = gstvsssummarize::backend::cosmos::backend::REASONING_PROMPT_CR2.len() as u64 + 2;
    assert_eq!(reasoning[0], plain[0] + added);
}
