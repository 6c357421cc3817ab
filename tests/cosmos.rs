// SPDX-License-Identifier: MPL-2.0
//! `backend=cosmos-reason1` end to end with the tiny random-weight
//! checkpoint in tests/qwen/tiny: one record per chunk, deterministic text,
//! shared model, and the load-time errors; `cosmos-reason2/3` refusing a
//! checkpoint of the other family (or NVFP4) before it loads.
#![cfg(feature = "cosmos")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use gst::prelude::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/qwen/tiny")
}

fn props(dir: &Path, extra: &str) -> String {
    format!(
        "backend=cosmos-reason1 model-path={} chunk-duration=1 num-frames-per-chunk=4 max-tokens=12 {extra}",
        dir.display()
    )
}

fn texts(r: &Run) -> Vec<String> {
    r.outputs()
        .json()
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_deterministic_record_per_chunk() {
    let v = Video::small(3);
    let r = run_video(&props(&tiny(), ""), &v, T);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 3, "{recs:?}");
    for (k, rec) in recs.iter().enumerate() {
        assert!(rec.get("error").is_none(), "{rec}");
        assert_eq!(rec["chunk-index"], k as u64);
        assert_eq!(rec["backend"], "cosmos-reason1");
        assert_eq!(rec["model"], "tiny");
        let out = rec["output-tokens"].as_u64().unwrap();
        assert!((1..=12).contains(&out), "{rec}");
        // System turn + video tokens + prompt: far more than the video alone.
        assert!(rec["input-tokens"].as_u64().unwrap() > 100, "{rec}");
    }
    assert_eq!(r.element.property::<String>("device"), "cpu");
    let first = texts(&r);
    r.stop();
    // Same frames, same settings, same seed: same text.
    let again = run_video(&props(&tiny(), ""), &v, T);
    assert_eq!(texts(&again), first);
    again.stop();
}

#[test]
fn elements_naming_the_same_checkpoint_share_one_model() {
    use gstvsssummarize::backend::cosmos::backend::loads;
    init();
    // A copy of its own, so that other tests' loads do not count.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    copy_tiny(&dir);
    let dir = dir.canonicalize().unwrap();
    let desc = format!(
        "videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48,framerate=10/1 ! tee name=t \
         t. ! queue ! vsssummarize name=a {p} ! fakesink \
         t. ! queue ! vsssummarize name=b {p} ! fakesink",
        p = props(&dir, "")
    );
    let p = gst::parse::launch(&desc).unwrap();
    p.set_state(gst::State::Ready).unwrap();
    assert_eq!(loads(&dir), 1, "one load for two elements");
    p.set_state(gst::State::Null).unwrap();
    // Released with the last element: a new pipeline loads it again.
    let p = gst::parse::launch(&desc).unwrap();
    p.set_state(gst::State::Ready).unwrap();
    assert_eq!(loads(&dir), 2);
    p.set_state(gst::State::Null).unwrap();
    drop(tmp);
}

fn copy_tiny(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn bad_checkpoints_fail_at_ready_saying_what_was_found() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    // Not a directory / missing.
    let e = ready_error(&props(&base.join("nope"), ""));
    assert!(
        e.contains("cannot be opened") && e.contains("model-path"),
        "{e}"
    );
    // No weights.
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(tiny().join("config.json"), empty.join("config.json")).unwrap();
    let e = ready_error(&props(&empty, ""));
    assert!(e.contains("model.safetensors"), "{e}");
    // An FP8 checkpoint.
    let fp8 = base.join("fp8");
    copy_tiny(&fp8);
    let header =
        br#"{"model.embed_tokens.weight":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0, 0]);
    std::fs::write(fp8.join("model.safetensors"), bytes).unwrap();
    let e = ready_error(&props(&fp8, ""));
    assert!(e.contains("F8_E4M3") && e.contains("BF16"), "{e}");
    // A quantised config.
    let q = base.join("quant");
    copy_tiny(&q);
    let cfg = std::fs::read_to_string(q.join("config.json")).unwrap();
    let cfg = cfg.replacen('{', r#"{"quantization_config":{"quant_method":"fp8"},"#, 1);
    std::fs::write(q.join("config.json"), cfg).unwrap();
    let e = ready_error(&props(&q, ""));
    assert!(e.contains("quant_method 'fp8'"), "{e}");
    // Outside model-root-dir.
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let e = ready_error(&props(
        &tiny(),
        &format!("model-root-dir={}", root.display()),
    ));
    assert!(e.contains("outside model-root-dir"), "{e}");
    // A CUDA device in a CPU build: frame preparation fails first where
    // there is no GPU, the model where there is one.
    #[cfg(not(feature = "cuda"))]
    {
        let e = ready_error(&props(&tiny(), "device=cuda:0"));
        assert!(
            e.contains("cuda:0")
                && e.contains("device=cpu")
                && (e.contains("cuda feature") || e.contains("cannot prepare frames")),
            "{e}"
        );
    }
    drop(tmp);
}

/// The family check (src/backend/cosmos/family.rs) runs before any weight
/// is read: the element fails NULL→READY naming the backend that runs the
/// checkpoint, and refuses NVFP4 by name.
#[test]
fn a_checkpoint_of_the_other_family_names_its_backend() {
    let with = |backend: &str, dir: &Path| {
        props(dir, "").replacen("backend=cosmos-reason1", &format!("backend={backend}"), 1)
    };
    // Qwen2.5-VL (the tiny checkpoint) given to cosmos-reason2 / 3.
    for b in ["cosmos-reason2", "cosmos-reason3"] {
        let e = ready_error(&with(b, &tiny()));
        assert!(
            e.contains("is a Qwen2.5-VL checkpoint (config.json model_type qwen2_5_vl)")
                && e.contains("Cosmos-Reason1: use backend=cosmos-reason1"),
            "{e}"
        );
    }
    // A Qwen3-VL directory (config.json only: nothing else is read) given
    // to cosmos-reason1.
    let tmp = tempfile::tempdir().unwrap();
    let q3 = tmp.path().join("qwen3");
    std::fs::create_dir_all(&q3).unwrap();
    std::fs::write(
        q3.join("config.json"),
        r#"{"architectures":["Qwen3VLForConditionalGeneration"],"model_type":"qwen3_vl"}"#,
    )
    .unwrap();
    let e = ready_error(&props(&q3, ""));
    assert!(
        e.contains("is a Qwen3-VL checkpoint (config.json model_type qwen3_vl): use backend=cosmos-reason2 (Cosmos-Reason2, Qwen3-VL) or backend=cosmos-reason3 (Cosmos3 Nano Reasoner)"),
        "{e}"
    );
    // A Cosmos3-layout NVFP4 copy: refused by name whatever the backend.
    let nv = tmp.path().join("cosmos3-nvfp4");
    for sub in ["transformer", "vision_encoder"] {
        std::fs::create_dir_all(nv.join(sub)).unwrap();
        std::fs::write(nv.join(sub).join("model.safetensors"), b"not read").unwrap();
    }
    std::fs::write(
        nv.join("config.json"),
        r#"{"architectures":["Cosmos3ForConditionalGeneration"]}"#,
    )
    .unwrap();
    std::fs::write(
        nv.join("transformer/hf_quant_config.json"),
        r#"{"producer":{"name":"modelopt"},"quantization":{"quant_algo":"NVFP4"}}"#,
    )
    .unwrap();
    for b in ["cosmos-reason1", "cosmos-reason3"] {
        let e = ready_error(&with(b, &nv));
        assert!(
            e.contains("NVFP4 checkpoints need Blackwell-class FP4 kernels: serve this model with vLLM or NIM and use backend=openai-compat"),
            "{e}"
        );
    }
}

/// `no-repeat-ngram-size` set on the element reaches the engine thread's
/// sampler (the ban itself is unit-tested in sampling.rs): the run
/// captions every chunk and the property reads back as set.
#[test]
fn no_repeat_ngram_size_runs_through_the_engine() {
    let v = Video::small(2);
    let r = run_video(&props(&tiny(), "no-repeat-ngram-size=2"), &v, T);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs.iter().all(|x| x.get("error").is_none()), "{recs:?}");
    assert_eq!(r.element.property::<i32>("no-repeat-ngram-size"), 2);
    r.stop();
}

#[test]
fn reasoning_prompt_and_parsing() {
    // The tiny model cannot follow instructions; check what reaches it and
    // that the run still yields one record per chunk.
    let v = Video::small(2);
    let r = run_video(&props(&tiny(), "enable-reasoning=true"), &v, T);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2);
    // The reasoning instruction lengthens the system turn.
    let plain = run_video(&props(&tiny(), ""), &v, T);
    let plain_in = plain.outputs().json()[0]["input-tokens"].as_u64().unwrap();
    assert!(recs[0]["input-tokens"].as_u64().unwrap() > plain_in);
    r.stop();
    plain.stop();
}

#[test]
fn bf16_weights_run_and_unknown_dtypes_are_refused() {
    let v = Video::small(2);
    let r = run_video(&props(&tiny(), "dtype=bf16"), &v, T);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|x| x.get("error").is_none()), "{recs:?}");
    r.stop();
    let e = ready_error(&props(&tiny(), "dtype=f16"));
    assert!(e.contains("dtype 'f16'") && e.contains("bf16"), "{e}");
}

/// A scratch root for `model-path=ngc:…` through the element: the env-file
/// puts the fake NGC CLI (tests/ngc/ngc) first on the PATH and the cache
/// under `root`; `extra` adds lines. Returns the element's properties.
fn ngc_case(root: &Path, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("home")).unwrap();
    let fake = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ngc");
    let f = fake.join("ngc");
    let mode = std::fs::metadata(&f).unwrap().permissions().mode();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
    let env_file = root.join("vss.env");
    std::fs::write(
        &env_file,
        format!(
            "PATH={}:/usr/bin:/bin\nHOME={}\nNGC_MODEL_CACHE={}\nNGC_API_KEY=nvapi-ELEMENT-TEST\nFAKE_NGC_SRC={}\nFAKE_NGC_LOG={}\n{extra}",
            fake.display(),
            root.join("home").display(),
            root.join("cache").display(),
            tiny().display(),
            root.join("calls.log").display()
        ),
    )
    .unwrap();
    format!(
        "backend=cosmos-reason1 model-path=ngc:acme/vision/tiny:1.0 env-file={} chunk-duration=1 num-frames-per-chunk=4 max-tokens=8",
        env_file.display()
    )
}

/// `model-path=ngc:…` through the element: the NGC CLI (a fake on the
/// env-file's PATH, tests/ngc/ngc) downloads into NGC_MODEL_CACHE once,
/// and the model captions.
#[test]
fn ngc_model_path_downloads_once_and_captions() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cosmos-ngc");
    let props = ngc_case(&root, "");
    let v = Video::small(2);
    let r = run_video(&props, &v, T);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs.iter().all(|j| j.get("error").is_none()), "{recs:?}");
    let dir = root.join("cache/acme_vision_tiny_1.0");
    assert!(dir.join("config.json").exists() && dir.join(".vss-complete").exists());
    let calls = std::fs::read_to_string(root.join("calls.log")).unwrap();
    assert!(calls.contains("download-version"), "{calls}");
    // The key goes to the CLI through its environment, never its arguments.
    assert!(
        calls
            .lines()
            .filter(|l| l.starts_with("arg "))
            .all(|l| !l.contains("nvapi-ELEMENT-TEST")),
        "{calls}"
    );
    r.stop();
    // Second run: the cache is reused, the CLI is not run again.
    let before = calls.matches("download-version").count();
    let r = run_video(&props, &v, T);
    assert_eq!(r.outputs().json().len(), 2);
    let calls = std::fs::read_to_string(root.join("calls.log")).unwrap();
    assert_eq!(calls.matches("download-version").count(), before);
    r.stop();
}

#[test]
fn summaries_and_event_checks_use_the_loaded_model_text_only() {
    let v = Video::small(3);
    let p = props(
        &tiny(),
        "summarize=true summary-duration=2 llm-max-tokens=16 events=\"a person falls\"",
    );
    let r = run_video(&p, &v, T);
    let recs = r.outputs().json();
    let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "caption").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "summary").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(*kinds.last().unwrap(), "final-summary");
    let fin = recs.last().unwrap();
    assert_eq!(fin["model"], "tiny");
    // The random model answers noise, but through the text path: the prompt
    // was tokenized with the chat template (no video) and generation ran.
    assert!(fin["input-tokens"].as_u64().unwrap() > 50, "{fin}");
    assert!(fin["output-tokens"].as_u64().unwrap() >= 1, "{fin}");
    for rec in &recs {
        if let Some(e) = rec.get("error").and_then(|e| e.as_str()) {
            assert!(
                e.contains("empty text"),
                "only an empty answer may fail: {rec}"
            );
        }
        if rec["kind"] == "caption" {
            // Noise is not JSON: the check says so instead of guessing.
            let e = rec["alert-error"].as_str().unwrap_or_default();
            assert!(
                e.contains("no JSON") || rec.get("alert-error").is_none(),
                "{rec}"
            );
        }
    }
    let first: Vec<Value> = recs
        .iter()
        .filter(|r| r["kind"] != "caption")
        .cloned()
        .collect();
    r.stop();
    // Deterministic like the captions.
    let again = run_video(&p, &v, T);
    let second: Vec<Value> = again
        .outputs()
        .json()
        .into_iter()
        .filter(|r| r["kind"] != "caption")
        .collect();
    let text = |v: &[Value]| v.iter().map(|r| r["text"].clone()).collect::<Vec<_>>();
    assert_eq!(text(&first), text(&second));
    again.stop();
}

/// Issue 21, F7: a download that hangs no longer holds the state lock.
/// `set_state(PLAYING)` returns ASYNC while the model downloads (progress
/// on the bus), and `set_state(NULL)` from the application cancels it: it
/// returns, and the NGC CLI, its child and the partial download are gone.
/// (Before, NULL→READY ran the download: both calls waited for it.)
#[test]
fn a_hung_ngc_download_is_cancelled_by_set_state_null() {
    use std::sync::mpsc;
    // Generous bound for "it did not hang" (never a timing claim).
    const DID_NOT_HANG: Duration = Duration::from_secs(90);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cosmos-ngc-hang");
    let pids = root.join("pids");
    let props = ngc_case(
        &root,
        &format!(
            "FAKE_NGC_HANG=1\nFAKE_NGC_CHILD=1\nFAKE_NGC_PIDS={}\n",
            pids.display()
        ),
    );
    let _cleanup = KillPids(pids.clone());
    let r = with_video(&props, &Video::small(2), false);
    let (tx, rx) = mpsc::channel();
    let p = r.pipeline.clone();
    std::thread::spawn(move || {
        let _ = tx.send(p.set_state(gst::State::Playing));
    });
    let ret = rx
        .recv_timeout(DID_NOT_HANG)
        .expect("set_state(PLAYING) must not wait for the download");
    assert_eq!(ret, Ok(gst::StateChangeSuccess::Async));
    // The download runs (the fake wrote its pids and hangs after its
    // first file), and says so on the bus.
    let bus = r.pipeline.bus().unwrap();
    let mut started = false;
    let end = std::time::Instant::now() + DID_NOT_HANG;
    while !(started && common::procs::fake_pids(&pids).len() == 2) {
        assert!(
            std::time::Instant::now() < end,
            "the download did not start"
        );
        if let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(20)) {
            if let gst::MessageView::Progress(pr) = m.view() {
                let (kind, code, _) = pr.get();
                started |= code == "download" && kind == gst::ProgressType::Start;
            }
        }
    }
    let (tx, rx) = mpsc::channel();
    let p = r.pipeline.clone();
    std::thread::spawn(move || {
        let _ = tx.send(p.set_state(gst::State::Null));
    });
    rx.recv_timeout(DID_NOT_HANG)
        .expect("set_state(NULL) must cancel the download")
        .expect("NULL");
    // Cancelling killed the CLI and its child, and left no partial download.
    for (what, pid) in common::procs::fake_pids(&pids) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while common::procs::alive(pid) {
            assert!(
                std::time::Instant::now() < end,
                "the fake's {what} (pid {pid}) is still running"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // (The cache's lock file stays, as after every download.)
    let cache: Vec<_> = std::fs::read_dir(root.join("cache"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(cache.is_empty(), "partial download left: {cache:?}");
}

/// Kills what the fake left when the test fails.
struct KillPids(PathBuf);

impl Drop for KillPids {
    fn drop(&mut self) {
        for (_, pid) in common::procs::fake_pids(&self.0) {
            if common::procs::alive(pid) {
                // SAFETY: plain kill(2) of a process the fake started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A download that fails while the element prerolls asynchronously: the
/// error (saying what to fix) is the element's error on the bus, and the
/// state change fails, as when NULL→READY ran the download.
#[test]
fn a_failed_ngc_download_fails_the_async_state_change() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cosmos-ngc-auth");
    let props = ngc_case(&root, "FAKE_NGC_MODE=auth\n");
    let r = with_video(&props, &Video::small(1), false);
    let ret = r.pipeline.set_state(gst::State::Playing);
    assert_eq!(ret, Ok(gst::StateChangeSuccess::Async));
    let (ret, _, _) = r.pipeline.state(gst::ClockTime::from_seconds(120));
    // The bin aborts its state change when it handles the element's error
    // and forwards the message to the bus after that: `state()` may return
    // before the message is on the bus, so wait for it rather than drain.
    let msg = r
        .pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Error]);
    r.pipeline.set_state(gst::State::Null).unwrap();
    assert!(ret.is_err(), "{ret:?}");
    let msg = msg.expect("an error message on the bus");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = format!("{} ({:?})", e.error(), e.debug());
    assert!(text.contains("NGC refused the API key"), "{text}");
    r.drain_bus();
    let errors = r.outputs().errors.clone();
    assert!(errors
        .iter()
        .chain([&text])
        .all(|e| !e.contains("nvapi-ELEMENT-TEST")));
}
