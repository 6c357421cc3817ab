// SPDX-License-Identifier: MPL-2.0
//! (`cuda` feature) `pixel_values` written by the kernels straight into
//! memory that candle owns: the kernels run on candle's stream of the same
//! GPU, and the output buffer becomes a candle tensor without a copy or a
//! synchronisation.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{Device, DeviceLocation, Storage, Tensor};
use parking_lot::Mutex;

use super::exec::{self, CudaExec};
use super::{plan, GpuError};
use crate::frames::RawFrame;
use crate::prep::qwen::VisionParams;

/// An executor on candle's stream, made on first use.
#[derive(Default)]
pub struct OnCandle(Mutex<Option<CudaExec>>);

impl OnCandle {
    /// The chunk's `pixel_values` as an f32 tensor on `device`, or `None`
    /// when `device` is not GPU `dev`.
    pub fn pixel_values<F: std::borrow::Borrow<RawFrame>>(
        &self,
        dev: &Arc<exec::Device>,
        device: &Device,
        frames: &[F],
        pre_w: u32,
        pre_h: u32,
        p: &VisionParams,
    ) -> Result<Option<(Tensor, [u32; 3])>, GpuError> {
        match device.location() {
            DeviceLocation::Cuda { gpu_id } if gpu_id == dev.ordinal => {}
            _ => return Ok(None),
        }
        let cd = device
            .as_cuda_device()
            .map_err(|e| GpuError::Candle(e.to_string()))?;
        let mut guard = self.0.lock();
        if guard.is_none() {
            *guard = Some(CudaExec::with_stream(dev.clone(), cd.cuda_stream())?);
        }
        let exec = guard.as_mut().expect("set above");
        let d = plan::pixel_values(exec, frames, pre_w, pre_h, p)?;
        let n = d.rows * d.cols;
        let stream = exec.stream().clone();
        let ptr = d.buf.leak();
        // SAFETY: `ptr` was allocated on this stream with rows·cols·4 bytes
        // and is now owned by the new slice (freed by candle, stream-ordered).
        let slice = unsafe { stream.upgrade_device_ptr::<f32>(ptr, n) };
        let storage = CudaStorage::wrap_cuda_slice(slice, cd.clone());
        debug_assert_eq!(storage.dtype(), candle_core::DType::F32);
        let t = Tensor::from_storage(
            Storage::Cuda(storage),
            (d.rows, d.cols),
            BackpropOp::none(),
            false,
        );
        Ok(Some((t, d.grid_thw)))
    }
}
