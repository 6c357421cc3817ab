// SPDX-License-Identifier: MPL-2.0
//! The GPU kernels (src/prep/cuda/kernels.cu), compiled for the host CPU with a
//! launch-emulation shim (tests/gpu/emu.cpp), run through the same plan the
//! CUDA executor runs, against the CPU path. Needs a C++ compiler (g++ from
//! build-essential, or $CXX); no GPU.
//!
//! This checks the kernels' indexing and arithmetic, the taps and the pass
//! order; what it cannot check (the driver calls, real GPU floating point)
//! is what `examples/gpu_check.rs` checks on a GPU.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use gstvsssummarize::prep::cuda::check::{self, Poison};
use gstvsssummarize::prep::cuda::plan::{
    ConvertArgs, Exec, Launch, PatchifyArgs, PlaneResizeArgs, ResizeArgs,
};
use gstvsssummarize::prep::cuda::GpuError;
use gstvsssummarize::prep::qwen::VisionParams;

type EmuFn<T> = unsafe extern "C" fn(*const T, u32, u32, u32, u32);

struct Emu {
    _lib: libloading::Library,
    convert: EmuFn<ConvertArgs>,
    resize: EmuFn<ResizeArgs>,
    resize_plane: EmuFn<PlaneResizeArgs>,
    patchify: EmuFn<PatchifyArgs>,
    sizeof: unsafe extern "C" fn(i32) -> u32,
    poison: u8,
    constants: Vec<Box<[u8]>>,
    /// Drops patchify launches (to see the self-test fail).
    skip_patchify: bool,
}

/// Compiles the emulator once per test process (the tests run in
/// parallel), to a name of its own.
fn build_emulator() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(compile_emulator).clone()
}

fn compile_emulator() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("libvss_kernels_emu-{}.so", std::process::id()));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&cxx)
        .args(["-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(root.join("tests/gpu/emu.cpp"))
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run the C++ compiler '{cxx}' ({e}): install g++ (apt-get install build-essential) or set CXX")
        });
    assert!(status.success(), "{cxx} failed on tests/gpu/emu.cpp");
    out
}

impl Emu {
    fn load() -> Emu {
        let path = build_emulator();
        // SAFETY: our own library, built just above, with these signatures.
        unsafe {
            let lib = libloading::Library::new(&path).expect("load the emulator");
            let convert = *lib.get::<EmuFn<ConvertArgs>>(b"emu_vss_convert").unwrap();
            let resize = *lib.get::<EmuFn<ResizeArgs>>(b"emu_vss_resize").unwrap();
            let patchify = *lib.get::<EmuFn<PatchifyArgs>>(b"emu_vss_patchify").unwrap();
            let resize_plane = *lib
                .get::<EmuFn<PlaneResizeArgs>>(b"emu_vss_resize_plane")
                .unwrap();
            let sizeof = *lib
                .get::<unsafe extern "C" fn(i32) -> u32>(b"emu_sizeof")
                .unwrap();
            Emu {
                _lib: lib,
                convert,
                resize,
                resize_plane,
                patchify,
                sizeof,
                poison: 0,
                constants: Vec::new(),
                skip_patchify: false,
            }
        }
    }
}

impl Exec for Emu {
    type Buf = Box<[u8]>;
    fn alloc(&mut self, bytes: usize) -> Result<Box<[u8]>, GpuError> {
        Ok(vec![self.poison; bytes.max(1)].into_boxed_slice())
    }
    fn addr(&self, buf: &Box<[u8]>) -> u64 {
        buf.as_ptr() as u64
    }
    fn upload(&mut self, dst: &mut Box<[u8]>, parts: &[&[u8]]) -> Result<(), GpuError> {
        let mut at = 0;
        for p in parts {
            dst[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Ok(())
    }
    fn download(&mut self, src: &Box<[u8]>, out: &mut [u8]) -> Result<(), GpuError> {
        out.copy_from_slice(&src[..out.len()]);
        Ok(())
    }
    fn constant(&mut self, bytes: &[u8]) -> Result<u64, GpuError> {
        if let Some(b) = self.constants.iter().find(|b| &b[..] == bytes) {
            return Ok(b.as_ptr() as u64);
        }
        self.constants.push(bytes.to_vec().into_boxed_slice());
        Ok(self.constants.last().unwrap().as_ptr() as u64)
    }
    fn launch(&mut self, l: &Launch) -> Result<(), GpuError> {
        let ((gx, gy, _), (bx, by, _)) = l.dims();
        // SAFETY: the arguments point into live buffers of this executor.
        unsafe {
            match l {
                Launch::Convert(a) => (self.convert)(a, gx, gy, bx, by),
                Launch::Resize(a) => (self.resize)(a, gx, gy, bx, by),
                Launch::PlaneResize(a) => (self.resize_plane)(a, gx, gy, bx, by),
                Launch::Patchify(_) if self.skip_patchify => {}
                Launch::Patchify(a) => (self.patchify)(a, gx, gy, bx, by),
            }
        }
        Ok(())
    }
}

impl Poison for Emu {
    fn set_poison(&mut self, byte: u8) {
        self.poison = byte;
    }
}

#[test]
fn argument_structs_have_the_c_layout() {
    let e = Emu::load();
    let sizes = unsafe { [0, 1, 2, 3, 4].map(|i| (e.sizeof)(i) as usize) };
    assert_eq!(
        sizes,
        [
            std::mem::size_of::<gstvsssummarize::prep::cuda::plan::SrcArgs>(),
            std::mem::size_of::<ConvertArgs>(),
            std::mem::size_of::<ResizeArgs>(),
            std::mem::size_of::<PatchifyArgs>(),
            std::mem::size_of::<PlaneResizeArgs>(),
        ]
    );
}

/// Every format, odd sizes, padded strides, all colorimetries, conversion
/// only and four resizes: the kernels give the CPU path's bytes exactly.
#[test]
fn kernels_match_the_cpu_path_for_rgb() {
    let mut e = Emu::load();
    let mut bad = Vec::new();
    let cases = check::rgb_cases();
    for (f, w, h) in &cases {
        let o = check::compare_rgb(&mut e, f, *w, *h);
        if o.max_diff != 0.0 {
            bad.push(format!(
                "{} max diff {} in {} of {}",
                o.case, o.max_diff, o.n_diff, o.n
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
    eprintln!("{} frame -> RGB cases identical", cases.len());
}

/// Chunks → Qwen2.5-VL pixel_values (bicubic, pre-scale, padding of odd
/// counts, normalisation and patch order): identical to the CPU path.
#[test]
fn kernels_match_the_cpu_path_for_pixel_values() {
    let mut e = Emu::load();
    let p = VisionParams::default();
    let small = VisionParams {
        max_pixels: 64 * 28 * 28, // a bigger resize ratio
        ..Default::default()
    };
    for (i, (frames, pw, ph)) in check::pixel_cases().iter().enumerate() {
        let params = if i % 2 == 0 { &p } else { &small };
        let o = check::compare_pixels(&mut e, frames, *pw, *ph, params);
        assert_eq!(
            o.max_diff, 0.0,
            "{} max diff {} in {} of {}",
            o.case, o.max_diff, o.n_diff, o.n
        );
        eprintln!("{}: identical ({} values)", o.case, o.n);
    }
}

/// The start-up self-test passes on correct kernels and catches a kernel
/// that does not run.
#[test]
fn self_test_catches_a_missing_kernel() {
    let mut e = Emu::load();
    check::self_test(&mut e).unwrap();
    e.skip_patchify = true;
    let err = check::self_test(&mut e).unwrap_err();
    assert!(matches!(err, GpuError::SelfTest { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("pixel_values") && err.contains("self-test"),
        "{err}"
    );
}
