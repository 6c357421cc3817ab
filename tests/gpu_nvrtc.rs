// SPDX-License-Identifier: MPL-2.0
//! The kernel sources compile with NVRTC (no GPU needed). Skipped, saying
//! so, when NVRTC cannot be loaded, unless VSS_TEST_REQUIRE_NVRTC=1 (CI sets
//! it, with NVRTC from PyPI on LD_LIBRARY_PATH).

use gstvsssummarize::prep::cuda;

#[test]
fn kernels_compile_with_nvrtc() {
    if !cuda::nvrtc_present() {
        let msg = format!(
            "NVRTC not found ({}); pip install nvidia-cuda-nvrtc-cu12 and put its lib directory on LD_LIBRARY_PATH",
            cuda::NVRTC_NAMES
        );
        assert!(
            std::env::var("VSS_TEST_REQUIRE_NVRTC").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
        return;
    }
    for arch in ["compute_75", "compute_80", "compute_90"] {
        let ptx = cuda::compile(arch).unwrap_or_else(|e| panic!("{e}"));
        let src = ptx.to_src();
        for k in [
            "vss_convert",
            "vss_resize",
            "vss_resize_plane",
            "vss_patchify",
        ] {
            assert!(
                src.contains(&format!(".entry {k}(")),
                "{arch}: no entry {k}"
            );
        }
        // No FMA contraction in the normalisation (CPU-identical rounding).
        assert!(!src.contains("fma.rn.f32"), "{arch}: fma in PTX");
        eprintln!("{arch}: {} bytes of PTX", src.len());
    }
}
