// SPDX-License-Identifier: MPL-2.0
//! End-to-end tests of `backend=custom`: VSS model directories
//! (inference.py + manifest.yaml) run by a Python worker process.
//!
//! They need two Python environments (made by `pipelines/setup-python.sh`,
//! which `.ci/run` calls): one with numpy + Pillow only, one with torch too.
//! Found through VSS_TEST_PYTHON_NUMPY / VSS_TEST_PYTHON_TORCH, else
//! `target/py/{numpy,torch}/bin/python`. A test whose Python is missing says
//! so and skips, unless VSS_TEST_REQUIRE_PYTHON=1 (set by CI) makes it fail.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use gst::prelude::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(name: &str) -> String {
    root().join("tests/models").join(name).display().to_string()
}

/// The Python of kind "numpy" or "torch", or None (with the reason printed).
fn python(kind: &str) -> Option<String> {
    let var = format!("VSS_TEST_PYTHON_{}", kind.to_uppercase());
    let p = std::env::var(&var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            root()
                .join(format!("target/py/{kind}/bin/python"))
                .display()
                .to_string()
        });
    if Path::new(&p).exists() {
        return Some(p);
    }
    let why =
        format!("SKIPPED: no {kind} Python at {p} (set {var} or run pipelines/setup-python.sh)");
    if std::env::var("VSS_TEST_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{why}; VSS_TEST_REQUIRE_PYTHON=1 forbids skipping");
    }
    eprintln!("{why}");
    None
}

fn texts(r: &Run) -> Vec<Value> {
    r.outputs()
        .json()
        .into_iter()
        .map(|rec| serde_json::from_str(rec["text"].as_str().unwrap()).expect("model answers JSON"))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn assert_colour(mean: &Value, rgb: [u8; 3], tol: f64, what: &str) {
    let m: Vec<f64> = mean
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for c in 0..3 {
        assert!(
            close(m[c], f64::from(rgb[c]), tol),
            "{what}: mean {m:?} is not {rgb:?}"
        );
    }
}

/// torch installed: raw frames arrive as one (N, H, W, 3) float tensor,
/// RGB 0..255, in the manifest's frame count and resolution; the module
/// finds files next to itself; get_embeddings gets (T, C, H, W) and its
/// result lands in the JSON record, the meta and the bus message.
#[test]
fn raw_frames_reach_a_torch_model_with_embeddings() {
    let Some(py) = python("torch") else { return };
    let v = Video::small(3);
    let r = run_video(
        &format!(
            "backend=custom model-path={} python={py} chunk-duration=1 prompt=\"describe it\"",
            model("probe")
        ),
        &v,
        T,
    );
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 3, "{recs:?}");
    for (k, (rec, t)) in recs.iter().zip(texts(&r)).enumerate() {
        assert!(rec.get("error").is_none(), "{rec}");
        assert_eq!(rec["backend"], "custom");
        assert_eq!(rec["model"], "probe");
        assert_eq!(t["kind"], "torch.Tensor", "{t}");
        assert_eq!(t["dtype"], "torch.float32");
        assert_eq!(t["device"], "cpu");
        assert_eq!(t["shape"], json!([4, 24, 32, 3]));
        assert_eq!(t["frame_shape"], json!([24, 32, 3]));
        assert_eq!(t["label"], "probe-label-from-a-file");
        assert_eq!(t["prompt"], "describe it");
        assert_eq!(t["configs"], json!({}));
        assert!(t["min"].as_f64().unwrap() >= 0.0 && t["max"].as_f64().unwrap() <= 255.0);
        let (_, rgb) = colour_of_second(k as u64);
        for m in t["means"].as_array().unwrap() {
            assert_colour(m, rgb, 6.0, &format!("chunk {k}"));
        }
        let emb: Vec<f64> = rec["embedding"]
            .as_array()
            .expect("embedding in the record")
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(emb.len(), 3);
        for c in 0..3 {
            assert!(
                close(emb[c], f64::from(rgb[c]) / 255.0, 0.03),
                "{emb:?} vs {rgb:?}"
            );
        }
    }
    // The same embedding is in the bus messages (and the metas, which are
    // the same structure: see meta.rs's unit test).
    let o = r.outputs();
    assert_eq!(o.messages.len(), 3);
    for m in &o.messages {
        let arr = m.get::<gst::Array>("embedding").expect("embedding field");
        assert_eq!(arr.len(), 3);
        assert!(arr.iter().all(|x| x.get::<f64>().is_ok()));
    }
    assert!(
        o.errors.is_empty() && o.warnings.is_empty(),
        "{:?} {:?}",
        o.errors,
        o.warnings
    );
    drop(o);
    r.stop();
}

/// No torch: raw frames are a numpy uint8 array of the same layout. The
/// properties override the manifest, and configs holds exactly what was set.
#[test]
fn numpy_only_python_gets_uint8_arrays_and_the_configs_set() {
    let Some(py) = python("numpy") else { return };
    let v = Video::small(2);
    let r = run_video(
        &format!(
            "backend=custom model-path={} python={py} chunk-duration=1 num-frames-per-chunk=2 frame-width=16 \
             max-tokens=77 temperature=0.5 top-p=0.9 top-k=5 seed=7",
            model("probe")
        ),
        &v,
        T,
    );
    let t = texts(&r);
    assert_eq!(t.len(), 2);
    for (k, t) in t.iter().enumerate() {
        assert_eq!(t["kind"], "numpy.ndarray", "{t}");
        assert_eq!(t["dtype"], "uint8");
        assert_eq!(t["shape"], json!([2, 12, 16, 3]));
        assert_eq!(
            t["configs"],
            json!({"max_new_tokens": 77, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "seed": 7})
        );
        // The user prompt as is (VSS passes no timestamps to custom models).
        assert!(
            t["prompt"].as_str().unwrap().starts_with("Write a concise"),
            "{t}"
        );
        let (_, rgb) = colour_of_second(k as u64);
        for m in t["means"].as_array().unwrap() {
            assert_colour(m, rgb, 6.0, &format!("chunk {k}"));
        }
        // One Inference() for the whole stream.
        assert_eq!(t["calls"], json!(k + 1));
    }
    assert!(r
        .outputs()
        .json()
        .iter()
        .all(|rec| rec["embedding"].is_array()));
    assert_eq!(r.element.property::<u32>("num-frames-per-chunk"), 2);
    r.stop();
}

/// A custom model has no text LLM: summaries are skipped with one message
/// at start, and `llm-endpoint` brings them back (here the test mock).
#[test]
fn custom_models_summarize_only_with_an_llm_endpoint() {
    let Some(py) = python("numpy") else { return };
    let v = Video::small(2);
    let base = format!(
        "backend=custom model-path={} python={py} chunk-duration=1 num-frames-per-chunk=1 summarize=true",
        model("probe")
    );
    let r = run_video(&base, &v, T);
    let kinds: Vec<Value> = r
        .outputs()
        .json()
        .iter()
        .map(|r| r["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("caption"), json!("caption")]);
    let infos = r.outputs().infos.clone();
    let said: Vec<&String> = infos
        .iter()
        .filter(|i| i.contains("no summaries"))
        .collect();
    assert_eq!(said.len(), 1, "{infos:?}");
    assert!(said[0].contains("llm-endpoint"), "{}", said[0]);
    r.stop();

    let server = MockServer::start();
    let r = run_video(
        &format!(
            "{base} llm-endpoint={} llm-model-name=mock-llm",
            server.url()
        ),
        &v,
        T,
    );
    let recs = r.outputs().json();
    let kinds: Vec<&str> = recs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["caption", "caption", "summary", "final-summary"]);
    assert_eq!(recs[3]["model"], "mock-llm");
    let reqs = server.requests();
    assert!(reqs
        .iter()
        .all(|q| q.is_text_llm() && q.body["model"] == "mock-llm"));
    r.stop();
}

/// jpeg_encoded: a list of 1-D uint8 numpy arrays holding JPEG files; no
/// get_embeddings → no embedding field.
#[test]
fn jpeg_mode_gives_a_list_of_jpeg_byte_arrays() {
    let Some(py) = python("numpy") else { return };
    let v = Video::small(2);
    let r = run_video(
        &format!(
            "backend=custom model-path={} python={py} chunk-duration=1",
            model("probe_jpeg")
        ),
        &v,
        T,
    );
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        assert!(rec.get("embedding").is_none(), "{rec}");
    }
    for (k, t) in texts(&r).iter().enumerate() {
        assert_eq!(t["kind"], "list", "{t}");
        assert_eq!(t["n"], 2);
        let (_, rgb) = colour_of_second(k as u64);
        for f in t["frames"].as_array().unwrap() {
            assert_eq!(f["type"], "numpy.ndarray");
            assert_eq!(f["dtype"], "uint8");
            assert_eq!(f["ndim"], 1);
            assert_eq!(f["soi"], "ffd8");
            assert_eq!(f["format"], "JPEG");
            assert_eq!(f["size"], json!([64, 48]));
            assert_colour(&f["mean"], rgb, 8.0, &format!("chunk {k}"));
        }
    }
    r.stop();
}

fn flaky_env(dir: &Path, plan: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let state = dir.join("state");
    let _ = std::fs::remove_file(&state);
    let env = dir.join("flaky.env");
    std::fs::write(
        &env,
        format!(
            "export FLAKY_STATE={}\nexport FLAKY_PLAN={plan}\n",
            state.display()
        ),
    )
    .unwrap();
    (env, state)
}

/// A pipeline (not started) around the `flaky` test model following `plan`;
/// returns it with its video, scratch directory and state file.
fn flaky(
    py: &str,
    name: &str,
    plan: &str,
    seconds: u64,
    extra: &str,
) -> (Run, Video, tempfile::TempDir, PathBuf) {
    let dir = tmp(name);
    let (env, state) = flaky_env(dir.path(), plan);
    let v = Video::small(seconds);
    let r = with_video(
        &format!(
            "backend=custom model-path={} python={py} env-file={} chunk-duration=1 {extra}",
            model("flaky"),
            env.display()
        ),
        &v,
        false,
    );
    (r, v, dir, state)
}

/// Plays the whole video and waits for EOS (panics without it).
fn play_to_eos(r: &Run, v: &Video) {
    r.play().unwrap();
    r.push_video(v);
    r.end();
    assert!(r.wait_eos(T), "no EOS: {:?}", r.outputs().errors);
    r.drain_bus();
}

/// A scratch directory, removed when dropped.
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vss-custom-{name}-"))
        .tempdir()
        .unwrap()
}

/// Exceptions, None, a segfault, sys.exit, stdout chatter and wrong return
/// types: each chunk still ends as exactly one record, in order; crashes
/// reload the model and the stream goes on to EOS.
#[test]
fn failures_become_error_records_and_crashes_reload_the_model() {
    let Some(py) = python("numpy") else { return };
    let plan = "ok,raise,none,segv,ok,print,exit,bytes,number,ok";
    let (r, v, dir, state) = flaky(&py, "flaky", plan, 10, "");
    play_to_eos(&r, &v);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 10, "{recs:#?}");
    let err = |k: usize| recs[k]["error"].as_str().unwrap_or_default().to_string();
    for (k, rec) in recs.iter().enumerate() {
        assert_eq!(rec["chunk-index"], k as u64);
    }
    assert_eq!(recs[0]["text"], "ok 0");
    assert!(
        err(1).contains("generate() raised ValueError: planned failure 1"),
        "{}",
        err(1)
    );
    assert!(err(1).contains("inference.py line"), "{}", err(1));
    assert!(err(2).contains("generate() returned None"), "{}", err(2));
    assert!(err(3).contains("SIGSEGV"), "{}", err(3));
    assert!(err(3).contains("restart 1 of 3"), "{}", err(3));
    assert_eq!(recs[4]["text"], "ok 4", "reloaded model answers");
    assert_eq!(
        recs[5]["text"], "ok 5",
        "stdout chatter does not break the pipe"
    );
    assert!(err(6).contains("exited with status 3"), "{}", err(6));
    // A success in between resets the crash count.
    assert!(err(6).contains("restart 1 of 3"), "{}", err(6));
    assert_eq!(recs[7]["text"], "ok bytes");
    assert!(err(8).contains("returned int, expected str"), "{}", err(8));
    assert_eq!(recs[9]["text"], "ok 9");
    let inits = std::fs::read_to_string(&state)
        .unwrap()
        .lines()
        .filter(|l| *l == "init")
        .count();
    assert_eq!(inits, 3, "one load plus two reloads");
    assert_eq!(r.prop_u64("chunks-failed"), 5);
    assert!(r.outputs().errors.is_empty(), "{:?}", r.outputs().errors);
    r.stop();
    drop(dir);
}

/// A model that keeps crashing: after max-restarts reloads the element
/// posts an error instead of looping forever.
#[test]
fn repeated_crashes_end_in_an_element_error() {
    let Some(py) = python("numpy") else { return };
    let plan = "segv,segv,segv,segv,segv,segv,segv,segv";
    let (r, v, dir, _) = flaky(&py, "crashy", plan, 6, "max-restarts=1");
    r.play().unwrap();
    r.push_video(&v);
    r.end();
    assert!(!r.wait_eos(T), "the stream must fail");
    r.drain_bus();
    let o = r.outputs();
    assert!(
        o.errors
            .iter()
            .any(|e| e.contains("failed 2 times in a row")),
        "{:?}",
        o.errors
    );
    let recs = o.json();
    assert!(recs.len() >= 2, "{recs:?}");
    assert!(recs[0]["error"]
        .as_str()
        .unwrap()
        .contains("restart 1 of 1"));
    assert!(recs[1]["error"]
        .as_str()
        .unwrap()
        .contains("no restarts left"));
    drop(o);
    r.stop();
    drop(dir);
}

/// A generate() that outlives request-timeout becomes an error record; the
/// stuck process is replaced and the next chunk is answered.
#[test]
fn a_stuck_generate_times_out_and_the_model_is_reloaded() {
    let Some(py) = python("numpy") else { return };
    let (r, v, dir, state) = flaky(&py, "stuck", "ok,sleep,ok", 3, "request-timeout=1");
    play_to_eos(&r, &v);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 3, "{recs:#?}");
    assert_eq!(recs[0]["text"], "ok 0");
    let e = recs[1]["error"].as_str().unwrap();
    assert!(
        e.contains("did not return within 1 s (request-timeout)"),
        "{e}"
    );
    assert_eq!(recs[2]["text"], "ok 2");
    let inits = std::fs::read_to_string(&state)
        .unwrap()
        .matches("init")
        .count();
    assert_eq!(inits, 2);
    r.stop();
    drop(dir);
}

/// Stopping the pipeline while Python is busy neither hangs nor leaves the
/// worker behind.
#[test]
fn stopping_during_a_long_generate_does_not_wait_for_it() {
    let Some(py) = python("numpy") else { return };
    let (r, v, dir, state) = flaky(&py, "stop", "sleep,sleep,sleep", 3, "");
    r.play().unwrap();
    r.push_video(&v);
    // Wait until Python is inside generate().
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&state)
        .unwrap_or_default()
        .contains("call")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "generate() never called"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = std::time::Instant::now();
    r.stop();
    // The model sleeps 30 s per call; stopping must not wait for it.
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        t.elapsed()
    );
    // …and the worker process goes away (killed and reaped).
    let text = std::fs::read_to_string(&state).unwrap();
    let pid = text
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .expect("the model wrote its pid");
    // The last dispatcher thread lets go of the backend within its poll
    // interval of the cancel; then the process is killed and reaped.
    let gone = std::time::Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < gone,
            "worker {pid} still running 5 s after stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(dir);
}

/// The pids of the helpers the `flaky` model's `fork` action started.
fn helpers(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("helper "))
        .map(str::to_string)
        .collect()
}

/// Whether process `pid` is not running: gone, or a zombie (an orphan's
/// zombie is its new parent's to reap; a container's PID 1 may never do it).
fn not_running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => matches!(
            s[s.rfind(')').unwrap() + 1..].split_whitespace().next(),
            Some("Z" | "X")
        ),
    }
}

/// Waits until none of `pids` runs; panics after 10 s ("did not hang"
/// bound: a helper left behind sleeps 300 s).
fn assert_all_end(pids: &[String], what: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    for pid in pids {
        while !not_running(pid) {
            assert!(
                std::time::Instant::now() < until,
                "helper {pid} still running 10 s {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Issue 21 F5: a helper the model forked holds the worker's pipes open, so
/// pipe EOF never comes. A crash is still reported at once with its signal
/// or exit status (not as a request-timeout, here 600 s), and the crashed
/// worker's helpers end with it.
#[test]
fn a_crash_is_reported_at_once_although_a_forked_helper_holds_the_pipes() {
    let Some(py) = python("numpy") else { return };
    let plan = "fork,segv,fork,osexit,ok";
    let (r, v, dir, state) = flaky(&py, "fork-crash", plan, 5, "request-timeout=600");
    play_to_eos(&r, &v);
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 5, "{recs:#?}");
    let err = |k: usize| recs[k]["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(recs[0]["text"], "ok 0");
    assert!(
        err(1).contains("killed by signal 11 (SIGSEGV)"),
        "{}",
        err(1)
    );
    assert!(err(1).contains("restart 1 of 3"), "{}", err(1));
    assert_eq!(recs[2]["text"], "ok 2");
    assert!(err(3).contains("exited with status 4"), "{}", err(3));
    assert_eq!(recs[4]["text"], "ok 4");
    let h = helpers(&state);
    assert_eq!(h.len(), 4, "{h:?}");
    assert_all_end(&h, "after their worker crashed");
    r.stop();
    drop(dir);
}

/// Issue 21 F5: helpers the model forked (`os.fork`, `subprocess` with
/// `close_fds=False`) do not outlive the pipeline.
#[test]
fn helpers_the_model_forked_end_with_the_pipeline() {
    let Some(py) = python("numpy") else { return };
    let (r, v, dir, state) = flaky(&py, "fork-stop", "fork,ok", 2, "");
    play_to_eos(&r, &v);
    let texts: Vec<Value> = r
        .outputs()
        .json()
        .iter()
        .map(|x| x["text"].clone())
        .collect();
    assert_eq!(texts, [json!("ok 0"), json!("ok 1")]);
    let h = helpers(&state);
    assert_eq!(h.len(), 2, "{h:?}");
    for pid in &h {
        assert!(!not_running(pid), "helper {pid} ended before the stop");
    }
    r.stop();
    assert_all_end(&h, "after the pipeline stopped");
    drop(dir);
}

/// Sets a pipeline holding vsssummarize with `props` to READY; returns the
/// error posted, or None if it succeeded (warnings go to `warnings`).
fn ready(props: &str, warnings: &mut Vec<String>) -> Option<String> {
    init();
    let p = gst::parse::launch(&format!("fakesrc ! vsssummarize {props} ! fakesink"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let res = p.set_state(gst::State::Ready);
    let bus = p.bus().unwrap();
    let mut err = None;
    while let Some(m) = bus.pop() {
        match m.view() {
            gst::MessageView::Error(e) => {
                err = Some(format!("{} | {}", e.error(), e.debug().unwrap_or_default()))
            }
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    match res {
        Ok(_) => {
            assert!(err.is_none(), "{err:?}");
            None
        }
        Err(_) => Some(err.expect("an error message explains the failure")),
    }
}

fn write_model(dir: &Path, inference: Option<&str>, manifest: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let _ = std::fs::remove_file(dir.join("inference.py"));
    if let Some(code) = inference {
        std::fs::write(dir.join("inference.py"), code).unwrap();
    }
    std::fs::write(dir.join("manifest.yaml"), manifest).unwrap();
}

const GOOD: &str =
    "class Inference:\n    def generate(self, prompt, input, configs):\n        return 'fine'\n";

/// Broken models fail at NULL→READY with what Python said.
#[test]
fn broken_models_fail_at_ready_with_the_python_error() {
    let Some(py) = python("numpy") else { return };
    let tmpdir = tmp("broken");
    let dir = tmpdir.path().to_path_buf();
    let m = "input:\n  number_of_frames: 2\n";
    let cases: &[(Option<&str>, &str, &[&str])] = &[
        (Some("def broken(:\n"), m, &["syntax error", "line 1"]),
        (
            Some("import no_such_module_xyz\n"),
            m,
            &["ModuleNotFoundError", "no_such_module_xyz", "inference.py line 1", "Traceback"],
        ),
        (Some("class Other:\n    pass\n"), m, &["no class Inference"]),
        (
            Some("class Inference:\n    pass\n"),
            m,
            &["no generate(prompt, input, configs) method"],
        ),
        (
            Some("class Inference:\n    def __init__(self):\n        raise RuntimeError('weights missing: /models/x')\n    def generate(self, p, i, c):\n        return ''\n"),
            m,
            &["RuntimeError: weights missing: /models/x", "inference.py line 3"],
        ),
        (Some("import sys\nsys.exit(5)\n"), m, &["SystemExit"]),
        (
            Some("import ctypes\nctypes.string_at(0)\n"),
            m,
            &["SIGSEGV", "Fatal Python error", "inference.py\", line 2"],
        ),
        (Some(GOOD), "input: [\n", &["manifest.yaml", "YAML"]),
        (Some(GOOD), "input:\n  number_of_frames: lots\n", &["number_of_frames", "an integer from 1 to 256"]),
        (Some(GOOD), "input:\n  jpeg_encoded: 3\n", &["jpeg_encoded"]),
        (None, m, &["no inference.py"]),
    ];
    for (code, manifest, needles) in cases {
        write_model(&dir, *code, manifest);
        let e = ready(
            &format!("backend=custom model-path={} python={py}", dir.display()),
            &mut vec![],
        )
        .unwrap_or_else(|| panic!("{code:?} / {manifest:?} loaded"));
        for n in *needles {
            assert!(e.contains(n), "{code:?} / {manifest:?}: {n:?} not in\n{e}");
        }
    }
    // A Python that does not exist.
    write_model(&dir, Some(GOOD), m);
    let e = ready(
        &format!(
            "backend=custom model-path={} python=/nonexistent/python3",
            dir.display()
        ),
        &mut vec![],
    )
    .unwrap();
    assert!(
        e.contains("cannot start Python '/nonexistent/python3'") && e.contains("VSS_PYTHON"),
        "{e}"
    );
    // Unknown manifest keys are warnings, not failures.
    write_model(
        &dir,
        Some(GOOD),
        "input:\n  number_of_frames: 2\n  fps: 3\n  crop_size: [1, 1]\n",
    );
    let mut w = vec![];
    assert_eq!(
        ready(
            &format!("backend=custom model-path={} python={py}", dir.display()),
            &mut w
        ),
        None
    );
    assert!(
        w.iter().any(|x| x.contains("unknown key 'input.fps'")),
        "{w:?}"
    );
    assert!(w.iter().any(|x| x.contains("crop_size")), "{w:?}");
    drop(dir);
}

/// MODEL_PATH must stay inside MODEL_ROOT_DIR after `..` and symlinks are
/// resolved; here set the VSS way, through environment variables (env-file).
#[test]
fn model_path_must_stay_inside_model_root_dir() {
    let Some(py) = python("numpy") else { return };
    let tmpbase = tmp("root");
    let base = tmpbase.path().to_path_buf();
    let root = base.join("root");
    let outside = base.join("outside");
    write_model(&root.join("good"), Some(GOOD), "input:\n");
    write_model(&outside, Some(GOOD), "input:\n");
    let link = root.join("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let env = base.join("vss.env");
    let run = |model_path: &Path| {
        std::fs::write(
            &env,
            format!(
                "export VLM_MODEL_TO_USE=custom\nexport MODEL_ROOT_DIR={}\nexport MODEL_PATH={}\nexport VSS_PYTHON={py}\n",
                root.display(),
                model_path.display()
            ),
        )
        .unwrap();
        ready(&format!("env-file={}", env.display()), &mut vec![])
    };
    assert_eq!(run(&root.join("good")), None);
    for escape in [root.join("good/../../outside"), link.clone()] {
        let e = run(&escape).expect("escape refused");
        assert!(e.contains("outside model-root-dir"), "{e}");
        assert!(e.contains(&*escape.to_string_lossy()), "{e}");
        assert!(e.contains(&*root.to_string_lossy()), "{e}");
    }
    drop(base);
}

/// The prompt placeholders reach a custom model filled per chunk, with no
/// timestamp line added.
#[test]
fn prompt_placeholders_are_filled_for_custom_models() {
    let Some(py) = python("numpy") else { return };
    let v = Video::small(2);
    let r = with_video(
        &format!(
            "backend=custom model-path={} python={py} chunk-duration=1 stream-id=cam-9",
            model("probe")
        ),
        &v,
        false,
    );
    r.element.set_property(
        "prompt",
        "{stream_id}: {num_frames} frames {first_ts}..{last_ts} at {timestamps}",
    );
    r.play().unwrap();
    r.push_video(&v);
    r.end();
    assert!(r.wait_eos(T));
    let recs = r.outputs().json();
    assert_eq!(recs.len(), 2, "{recs:?}");
    for (rec, t) in recs.iter().zip(texts(&r)) {
        let times: Vec<String> = rec["frame-times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{:.2}", x.as_f64().unwrap()))
            .collect();
        let stamps: Vec<String> = times.iter().map(|t| format!("<{t}>")).collect();
        assert_eq!(
            t["prompt"],
            format!(
                "cam-9: {} frames {}..{} at {}",
                times.len(),
                times[0],
                times.last().unwrap(),
                stamps.join(" ")
            )
        );
    }
    r.stop();
}
