// SPDX-License-Identifier: MPL-2.0
//! A Python program (PyGObject) reads VssSummaryMeta off buffers by name.
//! Runs tests/python/read_meta.py with the system Python (`VSS_TEST_PYTHON`
//! overrides) against the plugin built next to this test binary.

use std::path::PathBuf;
use std::process::Command;

fn plugin_dir() -> PathBuf {
    // target/<profile>/deps/python_meta-xxxx → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

#[test]
fn python_reads_the_meta_by_name() {
    let python = std::env::var("VSS_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let has_gi = Command::new(&python)
        .args([
            "-c",
            "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_gi {
        if std::env::var_os("CI").is_some() {
            panic!("{python} cannot import gi (PyGObject + GStreamer typelibs); CI must install python3-gi gir1.2-gstreamer-1.0");
        }
        eprintln!("SKIPPED: {python} cannot import gi; install python3-gi gir1.2-gstreamer-1.0");
        return;
    }
    // `cargo test` keeps target/<profile>/deps/libgstvsssummarize.so up to
    // date (the copy one level up is refreshed only by `cargo build`). Copy
    // it alone into a directory for GST_PLUGIN_PATH.
    let built = plugin_dir().join("deps/libgstvsssummarize.so");
    assert!(built.exists(), "plugin not built at {}", built.display());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(&built, dir.join("libgstvsssummarize.so")).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_meta.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("GST_PLUGIN_PATH", dir)
        .env("GST_REGISTRY", dir.join("python-test-registry.bin"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("VIA_VLM_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "read_meta.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("7 passed, 0 failed"), "{stdout}");
}
