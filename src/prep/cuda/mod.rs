// SPDX-License-Identifier: MPL-2.0
//! The GPU path of frame preparation: the CUDA kernels (`kernels.cu`),
//! compiled by NVRTC for the GPU found and driven through cudarc
//! ([`exec`]), the plan of uploads, launches and downloads that they run
//! ([`plan`]), the GPU-versus-CPU comparison ([`check`]) and, with the
//! `cuda` feature, output straight into candle tensors (`candle`).
//!
//! Rules:
//! 1. [`GpuPrep`] serialises the calls from several threads on one stream;
//!    each call waits for its own result.
//! 2. A GPU is trusted with frames only after its self-test
//!    ([`GpuPrep::self_test`]) matched the CPU path.
//! 3. When the GPU fails and the CPU path then succeeds on the same input,
//!    the GPU is marked broken (once, telling [`GpuPrep::on_broken`]'s
//!    callback) and every later frame goes to the CPU; a GPU failure never
//!    costs a chunk. When both fail, the frame itself is bad and the CPU's
//!    error is returned.
//! 4. Nothing calls into the driver before checking that its library can be
//!    loaded (cudarc panics when a library it needs is missing).

#[cfg(feature = "cuda")]
pub mod candle;
pub mod check;
pub mod exec;
pub mod plan;

use std::borrow::Borrow;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::driver::DriverError;
use parking_lot::Mutex;

pub use exec::{
    compile, driver_present, nvrtc_present, open, CudaExec, Device, KERNELS, NVRTC_NAMES,
};

use super::qwen::{PixelValues, QwenError, VisionParams};
use crate::frames::{FrameError, RawFrame, RgbImage};

/// Why the GPU path failed. The texts are those the element logs and
/// reports (`device=cuda:N` at NULL→READY, the fallback warning).
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("the NVIDIA driver library (libcuda.so.1) was not found")]
    DriverMissing,
    #[error("NVRTC (the CUDA runtime compiler) was not found ({NVRTC_NAMES}); install it (apt: cuda-nvrtc-12-x, or pip install nvidia-cuda-nvrtc-cu12 and add its lib directory to LD_LIBRARY_PATH)")]
    NvrtcMissing,
    /// NVRTC refused the kernels for `arch` (`detail`: its log).
    #[error("NVRTC could not compile the frame kernels for {arch}: {detail}")]
    Compile { arch: String, detail: String },
    /// No architecture tried compiled (each one's error).
    #[error("{}", join(.0))]
    NoArchitecture(Vec<GpuError>),
    #[error("the CUDA driver failed: {0}")]
    DeviceCount(DriverError),
    #[error("GPU {ordinal} does not exist (the driver sees {count} GPU(s))")]
    NoSuchGpu { ordinal: usize, count: i32 },
    #[error("cannot open GPU {ordinal}: {error}")]
    Open { ordinal: usize, error: DriverError },
    #[error("cannot query GPU {ordinal}: {error}")]
    Query { ordinal: usize, error: DriverError },
    #[error("cannot load the frame kernels on GPU {ordinal}: {error}")]
    LoadKernels { ordinal: usize, error: DriverError },
    #[error("kernel {name} missing: {error}")]
    KernelMissing {
        name: &'static str,
        error: DriverError,
    },
    /// A driver call (`what`: allocation, upload, synchronize, …).
    #[error("CUDA {what} failed: {error}")]
    Driver {
        what: &'static str,
        error: DriverError,
    },
    #[error("CUDA launch of {kernel} failed: {error}")]
    Launch {
        kernel: &'static str,
        error: DriverError,
    },
    #[error("upload of {bytes} bytes into {capacity}")]
    UploadTooLarge { bytes: usize, capacity: usize },
    #[error("download of {bytes} bytes from {capacity}")]
    DownloadTooLarge { bytes: usize, capacity: usize },
    /// The self-test's worst case.
    #[error(
        "the GPU self-test failed: {case} differs from the CPU path by {max_diff} (bound {bound})"
    )]
    SelfTest {
        case: String,
        max_diff: f64,
        bound: f64,
    },
    #[error("no frames")]
    NoFrames,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Qwen(#[from] QwenError),
    /// (`cuda` feature) candle refused the model's device.
    #[error("{0}")]
    Candle(String),
}

fn join(errors: &[GpuError]) -> String {
    let v: Vec<String> = errors.iter().map(ToString::to_string).collect();
    v.join("; ")
}

/// Frame preparation on one GPU. Calls from several threads are
/// serialised (one stream); each call waits for its own result.
pub struct GpuPrep {
    name: String,
    card: String,
    dev: Arc<Device>,
    exec: Mutex<CudaExec>,
    #[cfg(feature = "cuda")]
    on_candle: candle::OnCandle,
    fallback: Fallback,
}

/// Told once, with the reason, when the GPU fails and the CPU takes over.
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

impl GpuPrep {
    /// Opens GPU `ordinal` with its own stream.
    pub fn open(ordinal: usize) -> Result<GpuPrep, GpuError> {
        let dev = open(ordinal)?;
        Ok(GpuPrep {
            name: format!("cuda:{ordinal}"),
            card: dev.card.clone(),
            exec: Mutex::new(CudaExec::new(dev.clone())?),
            dev,
            #[cfg(feature = "cuda")]
            on_candle: Default::default(),
            fallback: Fallback::new(format!("cuda:{ordinal}")),
        })
    }

    /// Who to tell when the GPU fails and the CPU takes over.
    pub fn on_broken(&self, notify: Notify) {
        *self.fallback.notify.lock() = Some(notify);
    }

    /// Whether a GPU failure moved frame preparation to the CPU.
    pub fn is_broken(&self) -> bool {
        self.fallback.is_broken()
    }

    /// `gpu` unless the GPU is broken, else or after its failure `cpu`
    /// (rule 3).
    pub(crate) fn or_cpu<T, E>(
        &self,
        gpu: impl FnOnce() -> Result<T, GpuError>,
        cpu: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.fallback.run(gpu, cpu)
    }

    /// `cuda:N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The card, e.g. "NVIDIA H100 80GB HBM3".
    pub fn card(&self) -> &str {
        &self.card
    }

    /// [`crate::frames::prepare_rgb`] on the GPU.
    pub fn prepare_rgb(&self, f: &RawFrame, req_w: u32, req_h: u32) -> Result<RgbImage, GpuError> {
        plan::prepare_rgb(&mut *self.exec.lock(), f, req_w, req_h)
    }

    /// `preprocess_video(prepare_rgb(..))` on the GPU, copied to the host.
    pub fn pixel_values<F: Borrow<RawFrame>>(
        &self,
        f: &[F],
        pre_w: u32,
        pre_h: u32,
        p: &VisionParams,
    ) -> Result<PixelValues, GpuError> {
        plan::pixel_values_host(&mut *self.exec.lock(), f, pre_w, pre_h, p)
    }

    /// Runs small frames through the GPU and the CPU path and compares them
    /// (the same checks as the GPU check, on tiny inputs: a few ms). Any
    /// error or a difference beyond the bounds fails: `select` then keeps
    /// frames on the CPU (`auto`) or refuses the device (`cuda:N`).
    pub fn self_test(&self) -> Result<(), GpuError> {
        let mut e = self.exec.lock();
        let r = check::self_test(&mut *e);
        e.clear_poison();
        r
    }

    /// The opened device (ordinal, card, compute capability).
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// (`cuda` feature) `pixel_values` straight into a candle tensor when
    /// the model runs on this GPU; `None` otherwise (and once the GPU is
    /// broken).
    #[cfg(feature = "cuda")]
    pub fn pixel_values_tensor<F: Borrow<RawFrame>>(
        &self,
        device: &candle_core::Device,
        f: &[F],
        pre_w: u32,
        pre_h: u32,
        p: &VisionParams,
    ) -> Result<Option<(candle_core::Tensor, [u32; 3])>, GpuError> {
        if self.is_broken() {
            return Ok(None);
        }
        self.on_candle
            .pixel_values(&self.dev, device, f, pre_w, pre_h, p)
    }
}

/// The GPU-to-CPU fallback: set by the first GPU failure that the CPU path
/// then handled; from then on frames are prepared on the CPU.
struct Fallback {
    name: String,
    broken: AtomicBool,
    notify: Mutex<Option<Notify>>,
}

impl Fallback {
    fn new(name: String) -> Fallback {
        Fallback {
            name,
            broken: AtomicBool::new(false),
            notify: Mutex::new(None),
        }
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Runs `gpu` unless the GPU is broken. When it fails and `cpu` then
    /// succeeds, the GPU was at fault: it is marked broken (once, telling
    /// `notify`) and the CPU result is used, so a GPU failure never costs a
    /// chunk. When both fail, the frame itself is bad: the CPU's error.
    fn run<T, G: Display, E>(
        &self,
        gpu: impl FnOnce() -> Result<T, G>,
        cpu: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if self.is_broken() {
            return cpu();
        }
        let err = match gpu() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let r = cpu();
        if r.is_ok() && !self.broken.swap(true, Ordering::AcqRel) {
            if let Some(n) = self.notify.lock().clone() {
                n(&format!(
                    "frame preparation on {} failed ({err}); preparing frames on the CPU from now on",
                    self.name
                ));
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_failures_fall_back_to_the_cpu_once() {
        let f = Fallback::new("cuda:0".into());
        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let t = told.clone();
        *f.notify.lock() = Some(Arc::new(move |m: &str| t.lock().push(m.into())));
        // A bad frame: both paths fail, the GPU is not blamed.
        let r: Result<u8, _> = f.run(|| Err("gpu: bad"), || Err("cpu: bad frame"));
        assert_eq!(r.unwrap_err(), "cpu: bad frame");
        assert!(!f.is_broken());
        // GPU works.
        assert_eq!(f.run(|| Ok::<_, &str>(1), || Ok::<_, ()>(2)).unwrap(), 1);
        // GPU fails, CPU succeeds: the CPU result, the GPU marked, told once.
        // (Not a DriverError: its text comes from the driver, absent in CI.)
        let failed = GpuError::UploadTooLarge {
            bytes: 9,
            capacity: 8,
        };
        assert_eq!(f.run(|| Err(failed), || Ok::<_, ()>(2)).unwrap(), 2);
        assert!(f.is_broken());
        let r = f.run(
            || -> Result<u8, &str> { panic!("the GPU must not be tried again") },
            || Ok::<_, ()>(3),
        );
        assert_eq!(r.unwrap(), 3);
        let told = told.lock();
        assert_eq!(told.len(), 1);
        assert!(
            told[0].contains("cuda:0") && told[0].contains("(upload of 9 bytes into 8)"),
            "{}",
            told[0]
        );
    }

    #[test]
    fn error_texts() {
        let e = GpuError::NoArchitecture(vec![
            GpuError::Compile {
                arch: "compute_90".into(),
                detail: "x".into(),
            },
            GpuError::NoSuchGpu {
                ordinal: 2,
                count: 1,
            },
        ]);
        assert_eq!(
            e.to_string(),
            "NVRTC could not compile the frame kernels for compute_90: x; GPU 2 does not exist (the driver sees 1 GPU(s))"
        );
        assert!(GpuError::NvrtcMissing
            .to_string()
            .starts_with("NVRTC (the CUDA runtime compiler) was not found (libnvrtc.so"));
    }
}
