// SPDX-License-Identifier: MPL-2.0
//! Where sampled frames are turned into model input: the CPU path
//! ([`crate::frames`], [`crate::backend::cosmos::preprocess`]) or the GPU
//! (CUDA kernels compiled by NVRTC at READY, driven through cudarc).
//!
//! The `device` property picks: `auto` (the default) uses GPU 0 when the
//! NVIDIA driver, a GPU and NVRTC are all present, else the CPU; `cpu`;
//! `cuda:N` uses GPU N or fails at NULL→READY saying what is missing. The
//! CPU path is the reference the GPU path is tested against (same integer
//! arithmetic; see `plan.rs`).
//!
//! Free of GStreamer types.

#[cfg(feature = "cuda")]
pub mod candle;
pub mod check;
pub mod cuda;
pub mod plan;

use std::borrow::Borrow;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::cosmos::preprocess::{self, PixelValues, VisionParams};
use crate::frames::{self, RawFrame, RgbImage};

/// The `device` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "" | "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("device '{s}' is not one of auto, cpu, cuda:N")),
        }
    }
}

/// Frame preparation on one GPU. Calls from several threads are
/// serialised (one stream); each call waits for its own result.
pub struct GpuPrep {
    name: String,
    card: String,
    dev: Arc<cuda::Device>,
    exec: Mutex<cuda::CudaExec>,
    #[cfg(feature = "cuda")]
    on_candle: candle::OnCandle,
    fallback: Fallback,
}

/// Told once, with the reason, when the GPU fails and the CPU takes over.
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

impl GpuPrep {
    /// Opens GPU `ordinal` with its own stream.
    pub fn open(ordinal: usize) -> Result<GpuPrep, String> {
        let dev = cuda::open(ordinal)?;
        Ok(GpuPrep {
            name: format!("cuda:{ordinal}"),
            card: dev.card.clone(),
            exec: Mutex::new(cuda::CudaExec::new(dev.clone())?),
            dev,
            #[cfg(feature = "cuda")]
            on_candle: Default::default(),
            fallback: Fallback::new(format!("cuda:{ordinal}")),
        })
    }

    /// Who to tell when the GPU fails and the CPU takes over.
    pub fn on_broken(&self, notify: Notify) {
        *lock_ok(&self.fallback.notify) = Some(notify);
    }

    /// Whether a GPU failure moved frame preparation to the CPU.
    pub fn is_broken(&self) -> bool {
        self.fallback.is_broken()
    }

    fn or_cpu<T>(
        &self,
        gpu: impl FnOnce() -> Result<T, String>,
        cpu: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
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

    fn exec(&self) -> std::sync::MutexGuard<'_, cuda::CudaExec> {
        lock_ok(&self.exec)
    }

    /// [`frames::prepare_rgb`] on the GPU.
    pub fn prepare_rgb(&self, f: &RawFrame, req_w: u32, req_h: u32) -> Result<RgbImage, String> {
        plan::prepare_rgb(&mut *self.exec(), f, req_w, req_h)
    }

    /// `preprocess_video(prepare_rgb(..))` on the GPU, copied to the host.
    pub fn pixel_values<F: Borrow<RawFrame>>(
        &self,
        f: &[F],
        pre_w: u32,
        pre_h: u32,
        p: &VisionParams,
    ) -> Result<PixelValues, String> {
        plan::pixel_values_host(&mut *self.exec(), f, pre_w, pre_h, p)
    }

    /// Runs small frames through the GPU and the CPU path and compares them
    /// (the same checks as the GPU check, on tiny inputs: a few ms). Any
    /// error or a difference beyond the bounds fails: `select` then keeps
    /// frames on the CPU (`auto`) or refuses the device (`cuda:N`).
    pub fn self_test(&self) -> Result<(), String> {
        let mut e = self.exec();
        let r = check::self_test(&mut *e);
        e.clear_poison();
        r
    }

    /// The opened device (ordinal, card, compute capability).
    pub fn device(&self) -> &Arc<cuda::Device> {
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
    ) -> Result<Option<(candle_core::Tensor, [u32; 3])>, String> {
        if self.is_broken() {
            return Ok(None);
        }
        self.on_candle
            .pixel_values(&self.dev, device, f, pre_w, pre_h, p)
    }
}

fn lock_ok<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    fn run<T>(
        &self,
        gpu: impl FnOnce() -> Result<T, String>,
        cpu: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        if self.is_broken() {
            return cpu();
        }
        let err = match gpu() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let r = cpu();
        if r.is_ok() && !self.broken.swap(true, Ordering::AcqRel) {
            if let Some(n) = lock_ok(&self.notify).clone() {
                n(&format!(
                    "frame preparation on {} failed ({err}); preparing frames on the CPU from now on",
                    self.name
                ));
            }
        }
        r
    }
}

/// Where a backend prepares its frames.
#[derive(Clone, Default)]
pub enum FramePrep {
    #[default]
    Cpu,
    Gpu(Arc<GpuPrep>),
}

impl std::fmt::Debug for FramePrep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FramePrep {
    /// `cpu` or `cuda:N` (the `device` read-back).
    pub fn name(&self) -> &str {
        match self {
            FramePrep::Cpu => "cpu",
            FramePrep::Gpu(g) => g.name(),
        }
    }

    pub fn rgb(&self, f: &RawFrame, req_w: u32, req_h: u32) -> Result<RgbImage, String> {
        let cpu = || frames::prepare_rgb(f, req_w, req_h).map_err(|e| e.to_string());
        match self {
            FramePrep::Cpu => cpu(),
            FramePrep::Gpu(g) => g.or_cpu(|| g.prepare_rgb(f, req_w, req_h), cpu),
        }
    }

    /// RGB (GPU or CPU) then JPEG on the CPU.
    pub fn jpeg(
        &self,
        f: &RawFrame,
        req_w: u32,
        req_h: u32,
        quality: u8,
    ) -> Result<Vec<u8>, String> {
        let rgb = self.rgb(f, req_w, req_h)?;
        frames::encode_jpeg(&rgb, quality).map_err(|e| e.to_string())
    }

    /// A chunk's frames → Qwen2.5-VL `pixel_values` (pre-scaled to
    /// `pre_w` × `pre_h` first when set, as the CPU path does).
    pub fn pixel_values<F: Borrow<RawFrame>>(
        &self,
        f: &[F],
        pre_w: u32,
        pre_h: u32,
        p: &VisionParams,
    ) -> Result<PixelValues, String> {
        let cpu = || {
            let first: &RawFrame = f.first().ok_or("the chunk has no frames")?.borrow();
            let (w, h) = frames::target_size(first.width, first.height, pre_w, pre_h);
            let rgb = f
                .iter()
                .map(|x| frames::prepare_rgb(x.borrow(), w, h).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            preprocess::preprocess_video(&rgb, p).map_err(String::from)
        };
        match self {
            FramePrep::Cpu => cpu(),
            FramePrep::Gpu(g) => g.or_cpu(|| g.pixel_values(f, pre_w, pre_h, p), cpu),
        }
    }
}

/// The outcome of [`select`]: where frames are prepared and, for the log,
/// why.
pub struct Selected {
    pub prep: FramePrep,
    pub reason: String,
}

/// Picks the frame-preparation device. `auto` never fails (it falls back to
/// the CPU and says why); `cuda:N` fails with what is missing.
pub fn select(choice: DeviceChoice) -> Result<Selected, String> {
    let open = |n: usize| -> Result<Selected, String> {
        let g = GpuPrep::open(n)?;
        g.self_test()?;
        let reason = format!(
            "frames are prepared on {} ({}, kernels compiled by NVRTC, self-test passed)",
            g.name(),
            g.card()
        );
        Ok(Selected {
            prep: FramePrep::Gpu(Arc::new(g)),
            reason,
        })
    };
    match choice {
        DeviceChoice::Cpu => Ok(Selected {
            prep: FramePrep::Cpu,
            reason: "frames are prepared on the CPU (device=cpu)".into(),
        }),
        DeviceChoice::Auto => open(0).or_else(|e| {
            Ok(Selected {
                prep: FramePrep::Cpu,
                reason: format!("frames are prepared on the CPU: no usable GPU ({e})"),
            })
        }),
        DeviceChoice::Cuda(n) => open(n).map_err(|e| {
            format!(
                "device cuda:{n} cannot prepare frames: {e}; set device=cpu or auto to use the CPU"
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("auto, cpu, cuda:N"), "{e}");
        }
    }

    #[test]
    fn gpu_failures_fall_back_to_the_cpu_once() {
        let f = Fallback::new("cuda:0".into());
        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let t = told.clone();
        *lock_ok(&f.notify) = Some(Arc::new(move |m: &str| t.lock().unwrap().push(m.into())));
        // A bad frame: both paths fail, the GPU is not blamed.
        let r: Result<u8, _> = f.run(|| Err("gpu: bad".into()), || Err("cpu: bad frame".into()));
        assert_eq!(r.unwrap_err(), "cpu: bad frame");
        assert!(!f.is_broken());
        // GPU works.
        assert_eq!(f.run(|| Ok(1), || Ok(2)).unwrap(), 1);
        // GPU fails, CPU succeeds: the CPU result, the GPU marked, told once.
        assert_eq!(
            f.run(|| Err("CUDA launch failed".into()), || Ok(2))
                .unwrap(),
            2
        );
        assert!(f.is_broken());
        let r = f.run(|| panic!("the GPU must not be tried again"), || Ok(3));
        assert_eq!(r.unwrap(), 3);
        let told = told.lock().unwrap();
        assert_eq!(told.len(), 1);
        assert!(
            told[0].contains("cuda:0") && told[0].contains("CUDA launch failed"),
            "{}",
            told[0]
        );
    }

    /// Without a driver (CI), `auto` falls back and says why, and `cuda:N`
    /// fails naming the missing library. With a GPU, both open it.
    #[test]
    fn selection_without_or_with_a_gpu() {
        let cpu = select(DeviceChoice::Cpu).unwrap();
        assert_eq!(cpu.prep.name(), "cpu");
        let auto = select(DeviceChoice::Auto).unwrap();
        match cuda::open(0) {
            Err(why) => {
                eprintln!("no usable GPU here ({why}): checking the fallback");
                assert_eq!(auto.prep.name(), "cpu");
                assert!(auto.reason.contains(&why), "{}", auto.reason);
                let e = select(DeviceChoice::Cuda(0))
                    .err()
                    .expect("cuda:0 must fail");
                assert!(
                    e.contains("cuda:0") && e.contains(&why) && e.contains("device=cpu"),
                    "{e}"
                );
                if !cuda::driver_present() {
                    assert!(why.contains("libcuda.so.1"), "{why}");
                }
            }
            Ok(d) => {
                eprintln!("GPU found: {} (sm {:?})", d.card, d.compute_capability);
                assert_eq!(auto.prep.name(), "cuda:0");
                assert_eq!(select(DeviceChoice::Cuda(0)).unwrap().prep.name(), "cuda:0");
            }
        }
        let e = select(DeviceChoice::Cuda(4096)).err().expect("no GPU 4096");
        assert!(e.contains("cuda:4096"), "{e}");
    }
}
