//! The element's MP4s (src/mp4.rs, what `vision-mode=video` sends) against
//! the decoders servers use: PyAV and OpenCV from PyPI (vLLM's default video
//! loader is OpenCV; transformers reads with PyAV), and the visual-token
//! cost of a chunk as images and as video, counted by the real Hugging Face
//! processor of the tiny Qwen2.5-VL in tests/qwen/tiny.
//!
//! Python: `target/py/video` (numpy, av, opencv-python-headless) and
//! `target/py/torch` with transformers 5.24, torchvision and av, both made by
//! `pipelines/setup-python.sh video` (run by .ci/run). Without them a test
//! says SKIPPED and passes, unless VSS_TEST_REQUIRE_PYTHON=1 (CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::*;

use gstvsssummarize::mp4::{encode, Mp4Frame, Mp4Options, Mp4Pixels};
use serde_json::{json, Value};

const S: u64 = 1_000_000_000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python(kind: &str, needs: &str) -> Option<String> {
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
    let ok = Path::new(&p).exists()
        && Command::new(&p)
            .args(["-c", &format!("import {needs}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if ok {
        return Some(p);
    }
    let why = format!(
        "SKIPPED: no Python with {needs} at {p} (set {var} or run pipelines/setup-python.sh video)"
    );
    if std::env::var("VSS_TEST_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{why}; VSS_TEST_REQUIRE_PYTHON=1 forbids skipping");
    }
    eprintln!("{why}");
    None
}

/// One test clip: frames of rising brightness (so order shows) and a
/// little texture, at `times` (ns), each of its size.
struct Case {
    name: String,
    sizes: Vec<(u32, u32)>,
    times: Vec<u64>,
}

fn frame(w: u32, h: u32, level: u8) -> Vec<u8> {
    let mut d = vec![level; (w * h * 3) as usize];
    // A diagonal stripe: real content for the encoder, same mean each time.
    for y in 0..h {
        let x = (y * w / h) as usize;
        let at = (y as usize * w as usize + x) * 3;
        d[at..at + 3].copy_from_slice(&[level / 2; 3]);
    }
    d
}

/// Encodes the cases into `dir` and writes the manifest; returns it.
fn write_cases(dir: &Path, cases: &[Case]) -> PathBuf {
    let mut manifest = Vec::new();
    for c in cases {
        let n = c.times.len();
        let data: Vec<Vec<u8>> = (0..n)
            .map(|i| frame(c.sizes[i].0, c.sizes[i].1, (16 + i * 200 / n) as u8))
            .collect();
        let frames: Vec<Mp4Frame> = (0..n)
            .map(|i| Mp4Frame {
                pixels: Mp4Pixels::Rgb,
                width: c.sizes[i].0,
                height: c.sizes[i].1,
                data: &data[i],
                pts_ns: c.times[i],
            })
            .collect();
        let v = encode(&frames, &Mp4Options::default()).expect("encodes");
        let path = dir.join(format!("{}.mp4", c.name));
        std::fs::write(&path, &v.bytes).unwrap();
        manifest.push(json!({"name": c.name, "path": path, "width": v.width, "height": v.height}));
    }
    let m = dir.join("cases.json");
    std::fs::write(&m, serde_json::to_vec(&manifest).unwrap()).unwrap();
    m
}

fn run_py(py: &str, args: &[&Path]) -> Value {
    let out = Command::new(py).args(args).output().expect("python runs");
    assert!(
        out.status.success(),
        "{py} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("one JSON line")
}

fn uniform(name: &str, n: usize, w: u32, h: u32, t0: u64, step: u64) -> Case {
    Case {
        name: name.into(),
        sizes: vec![(w, h); n],
        times: (0..n as u64).map(|i| t0 + i * step).collect(),
    }
}

/// Frame count, order, size and times as PyAV and OpenCV read them, for 2
/// to 32 frames, an odd size (641×361 → 640×360) and a size change inside
/// a chunk; OpenCV's fps-derived times (vLLM's) within one frame of the
/// real ones for evenly spaced frames, and PyAV's within 1 ms for uneven
/// ones.
#[test]
fn pyav_and_opencv_read_back_frames_and_times() {
    let Some(py) = python("video", "av, cv2, numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<Case> = [2usize, 3, 5, 8, 10, 16, 32]
        .iter()
        .map(|&n| uniform(&format!("n{n}"), n, 160, 120, 3_600 * S + 7, S / 2))
        .collect();
    cases.push(uniform("odd", 6, 641, 361, 12 * S, S / 3));
    cases.push(Case {
        name: "resize".into(),
        sizes: vec![(320, 240), (320, 240), (160, 120), (640, 480), (320, 240)],
        times: (0..5).map(|i| i * S).collect(),
    });
    // Uneven times: what the sampler gives when frames are missing.
    cases.push(Case {
        name: "uneven".into(),
        sizes: vec![(96, 64); 5],
        times: vec![0, 400_000_000, 1_100_000_000, 1_500_000_000, 2_000_000_000],
    });
    let manifest = write_cases(dir.path(), &cases);
    let report = run_py(&py, &[&root().join("tests/python/check_mp4.py"), &manifest]);
    eprintln!("decoders: {}", report["versions"]);
    for c in &cases {
        let r = &report["cases"][&c.name];
        let n = c.times.len();
        let want: Vec<f64> = c
            .times
            .iter()
            .map(|t| (t - c.times[0]) as f64 / 1e9)
            .collect();
        let size = if c.name == "odd" {
            (640, 360)
        } else {
            ((c.sizes[0].0 & !1), (c.sizes[0].1 & !1))
        };
        for dec in ["pyav", "opencv"] {
            let d = &r[dec];
            assert_eq!(d["count"], n, "{} {dec}: {d}", c.name);
            let luma: Vec<f64> = serde_json::from_value(d["luma"].clone()).unwrap();
            assert!(
                luma.windows(2).all(|w| w[1] > w[0] + 1.0),
                "{} {dec}: frames out of order {luma:?}",
                c.name
            );
            for s in d["sizes"].as_array().unwrap() {
                assert_eq!(s, &json!([size.0, size.1]), "{} {dec}", c.name);
            }
            let times: Vec<f64> = serde_json::from_value(d["times"].clone()).unwrap();
            for (g, w) in times.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-3,
                    "{} {dec}: {times:?} vs {want:?}",
                    c.name
                );
            }
        }
        let cv = &r["opencv"];
        assert_eq!(cv["declared_frames"], n, "{}: {cv}", c.name);
        if c.name != "uneven" && n > 1 {
            // vLLM's OpenCV loader: time of frame i = i / CAP_PROP_FPS.
            let step = want[1];
            let fps = cv["fps"].as_f64().unwrap();
            assert!(
                (fps - 1.0 / step).abs() < 1e-3 * fps,
                "{}: fps {fps}",
                c.name
            );
            let idx: Vec<f64> = serde_json::from_value(cv["index_times"].clone()).unwrap();
            for (g, w) in idx.iter().zip(&want) {
                assert!((g - w).abs() < step, "{}: {idx:?} vs {want:?}", c.name);
            }
        }
    }
}

/// The same chunk as images and as one video through the real Qwen2.5-VL
/// processor: the video costs at most 0.55× the visual tokens (temporal
/// patch size 2), its fps from the container.
#[test]
fn video_halves_the_visual_tokens_of_qwen25_vl() {
    let Some(py) = python("torch", "transformers, torchvision, av") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = [4usize, 8, 10, 16, 32]
        .iter()
        .map(|&n| uniform(&format!("n{n}"), n, 448, 448, 5 * S, S / 2))
        .chain([uniform("n10_640x360", 10, 640, 360, 0, S)])
        .chain([Case {
            name: "uneven".into(),
            sizes: vec![(448, 448); 6],
            times: vec![
                0,
                400_000_000,
                1_100_000_000,
                1_500_000_000,
                2_000_000_000,
                2_600_000_000,
            ],
        }])
        .collect();
    let manifest = write_cases(dir.path(), &cases);
    let r = run_py(
        &py,
        &[
            &root().join("tests/python/video_tokens.py"),
            &root().join("tests/qwen/tiny"),
            &manifest,
        ],
    );
    for c in &cases {
        let x = &r[&c.name];
        let (img, vid) = (
            x["image_tokens"].as_f64().unwrap(),
            x["video_tokens"].as_f64().unwrap(),
        );
        let ratio = vid / img;
        eprintln!(
            "{}: {} frames {}: images {img} visual tokens (prompt {}), video {vid} (prompt {}), ratio {ratio:.3}, fps {}",
            c.name, x["frames"], x["size"], x["image_prompt_len"], x["video_prompt_len"], x["fps"]
        );
        assert!(img > 0.0 && vid > 0.0, "{x}");
        assert!(ratio <= 0.55, "{}: ratio {ratio}", c.name);
        // cosmos-reason1 (in process) gives its model the fps and
        // second_per_grid the real processor computes from the MP4 of the
        // same frames.
        let secs: Vec<f64> = c.times.iter().map(|&t| t as f64 / 1e9).collect();
        let ours = gstvsssummarize::prep::qwen::clip_fps(&secs);
        let theirs = x["second_per_grid_ts"][0].as_f64().unwrap();
        assert!(
            (theirs - 2.0 / ours).abs() < 1e-3 * theirs,
            "{}: transformers second_per_grid {theirs}, cosmos-reason1 {}",
            c.name,
            2.0 / ours
        );
    }
}

/// The MP4s the element itself sends (vision-mode=video against the test
/// mock), taken from the requests, read back by PyAV and OpenCV: 4 frames a
/// chunk, 0.5 s apart, in order, fps 2.
#[test]
fn the_elements_own_mp4s_decode_with_their_times() {
    let Some(py) = python("video", "av, cv2, numpy") else {
        return;
    };
    let server = MockServer::start();
    let v = Video {
        width: 160,
        height: 120,
        fps: 10,
        seconds: 4,
    };
    let r = run_video(
        &format!(
            "endpoint={} model-name=m api-key=k max-retries=0 chunk-duration=2 num-frames-per-chunk=4 vision-mode=video",
            server.url()
        ),
        &v,
        std::time::Duration::from_secs(60),
    );
    r.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = Vec::new();
    for (i, q) in server.requests().iter().enumerate() {
        let url = q.body["messages"][0]["content"][0]["video_url"]["url"]
            .as_str()
            .expect("a video_url part");
        let b64 = url.strip_prefix("data:video/mp4;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let path = dir.path().join(format!("chunk{i}.mp4"));
        std::fs::write(&path, bytes).unwrap();
        manifest.push(json!({"name": format!("chunk{i}"), "path": path}));
    }
    assert_eq!(manifest.len(), 2);
    let m = dir.path().join("cases.json");
    std::fs::write(&m, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let report = run_py(&py, &[&root().join("tests/python/check_mp4.py"), &m]);
    for c in &manifest {
        let name = c["name"].as_str().unwrap();
        for dec in ["pyav", "opencv"] {
            let d = &report["cases"][name][dec];
            assert_eq!(d["count"], 4, "{name} {dec}: {d}");
            let times: Vec<f64> = serde_json::from_value(d["times"].clone()).unwrap();
            for (k, t) in times.iter().enumerate() {
                assert!((t - 0.5 * k as f64).abs() < 1e-3, "{name} {dec}: {times:?}");
            }
            assert!(d["sizes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s == &json!([160, 120])));
        }
        let fps = report["cases"][name]["opencv"]["fps"].as_f64().unwrap();
        assert!((fps - 2.0).abs() < 1e-3, "{name}: fps {fps}");
    }
}
