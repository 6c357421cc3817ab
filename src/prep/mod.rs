// SPDX-License-Identifier: MPL-2.0
//! Frame preparation: where sampled frames are turned into model input.
//!
//! * [`cpu`]: the CPU path (colour conversion, resize and JPEG from
//!   [`crate::frames`], the Qwen pixel path from [`qwen`]). It is the
//!   reference the GPU path is tested against.
//! * [`cuda`]: the GPU path (CUDA kernels compiled by NVRTC at READY,
//!   driven through cudarc), with its fall back to the CPU.
//! * [`qwen`]: Qwen2.5-VL / Cosmos-Reason1 video preprocessing
//!   (`pixel_values`), shared by the CPU path, the GPU path and the
//!   cosmos-reason1 backend.
//!
//! Rules:
//! 1. Nothing here imports from `backend/` or the element: backends import
//!    this module, never the other way round.
//! 2. The `device` property picks the device: `auto` (the default) uses
//!    GPU 0 when the NVIDIA driver, a GPU and NVRTC are all present and the
//!    GPU passes a self-test, else the CPU; `cpu`; `cuda:N` uses GPU N or
//!    fails at NULL→READY saying what is missing ([`select`]).
//! 3. The GPU and the CPU paths compute the same integer arithmetic (see
//!    `cuda/plan.rs`); a GPU failure moves frame preparation to the CPU for
//!    good without losing the frame ([`cuda::GpuPrep`]).
//! 4. Errors are typed ([`PrepError`], [`cuda::GpuError`],
//!    [`qwen::QwenError`], [`crate::frames::FrameError`]); their texts are
//!    the user-facing ones.
//!
//! Free of GStreamer types.

pub mod cpu;
pub mod cuda;
pub mod qwen;

use std::borrow::Borrow;
use std::str::FromStr;
use std::sync::Arc;

use crate::frames::{FrameError, RawFrame, RgbImage};
use cuda::{GpuError, GpuPrep};
use qwen::{PixelValues, QwenError, VisionParams};

/// Why frames could not be prepared, or a device not chosen.
#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    /// The `device` property names no device.
    #[error("device '{0}' is not one of auto, cpu, cuda:N")]
    UnknownDevice(String),
    /// `cuda:N` was asked for and GPU N cannot prepare frames.
    #[error(
        "device cuda:{ordinal} cannot prepare frames: {reason}; set device=cpu or auto to use the CPU"
    )]
    DeviceUnusable { ordinal: usize, reason: GpuError },
    /// A chunk without frames.
    #[error("the chunk has no frames")]
    NoFrames,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Qwen(#[from] QwenError),
}

/// The `device` property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = PrepError;
    fn from_str(s: &str) -> Result<Self, PrepError> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "" | "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or(PrepError::UnknownDevice(s)),
        }
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

    /// [`crate::frames::prepare_rgb`], on the GPU when there is one. An
    /// error is the CPU path's (the frame is bad).
    pub fn rgb(&self, f: &RawFrame, req_w: u32, req_h: u32) -> Result<RgbImage, FrameError> {
        let cpu = || cpu::rgb(f, req_w, req_h);
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
    ) -> Result<Vec<u8>, FrameError> {
        let rgb = self.rgb(f, req_w, req_h)?;
        crate::frames::encode_jpeg(&rgb, quality)
    }

    /// A chunk's frames → Qwen2.5-VL `pixel_values` (pre-scaled to
    /// `pre_w` × `pre_h` first when set, as the CPU path does). An error is
    /// the CPU path's.
    pub fn pixel_values<F: Borrow<RawFrame>>(
        &self,
        f: &[F],
        pre_w: u32,
        pre_h: u32,
        p: &VisionParams,
    ) -> Result<PixelValues, PrepError> {
        let cpu = || cpu::pixel_values(f, pre_w, pre_h, p);
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
pub fn select(choice: DeviceChoice) -> Result<Selected, PrepError> {
    let open = |n: usize| -> Result<Selected, GpuError> {
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
        DeviceChoice::Auto => Ok(open(0).unwrap_or_else(|e| Selected {
            prep: FramePrep::Cpu,
            reason: format!("frames are prepared on the CPU: no usable GPU ({e})"),
        })),
        DeviceChoice::Cuda(n) => {
            open(n).map_err(|reason| PrepError::DeviceUnusable { ordinal: n, reason })
        }
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
            assert!(matches!(&e, PrepError::UnknownDevice(s) if s == bad), "{e}");
            assert_eq!(
                e.to_string(),
                format!("device '{bad}' is not one of auto, cpu, cuda:N")
            );
        }
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
                let why = why.to_string();
                assert_eq!(auto.prep.name(), "cpu");
                assert!(auto.reason.contains(&why), "{}", auto.reason);
                let e = select(DeviceChoice::Cuda(0))
                    .err()
                    .expect("cuda:0 must fail");
                assert!(
                    matches!(e, PrepError::DeviceUnusable { ordinal: 0, .. }),
                    "{e}"
                );
                let e = e.to_string();
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
        assert!(e.to_string().contains("cuda:4096"), "{e}");
    }
}
