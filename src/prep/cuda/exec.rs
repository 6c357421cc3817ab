// SPDX-License-Identifier: MPL-2.0
//! The CUDA executor: cudarc with the driver (`libcuda.so.1`) and NVRTC
//! loaded at run time, so the default build needs no toolkit and runs where
//! there is no GPU. `kernels.cu` is compiled by NVRTC for the GPU found, once
//! per device per process.
//!
//! Nothing here calls into the driver before checking that its library can
//! be loaded: cudarc panics when a library it needs is missing.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    DevicePtrMut, DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use parking_lot::Mutex;

use super::plan::{ConvertArgs, Exec, Launch, PatchifyArgs, PlaneResizeArgs, ResizeArgs};
use super::GpuError;

// SAFETY: #[repr(C)] plain-data mirrors of the kernels' parameter structs.
unsafe impl DeviceRepr for ConvertArgs {}
unsafe impl DeviceRepr for ResizeArgs {}
unsafe impl DeviceRepr for PatchifyArgs {}
unsafe impl DeviceRepr for PlaneResizeArgs {}

/// The CUDA C sources of the kernels.
pub const KERNELS: &str = include_str!("kernels.cu");

/// Names cudarc tries for NVRTC (this build's CUDA 12.8 bindings).
pub const NVRTC_NAMES: &str = "libnvrtc.so, libnvrtc.so.12 (and older)";

/// Whether the driver library can be loaded.
pub fn driver_present() -> bool {
    #[cfg(not(feature = "cuda"))]
    {
        // SAFETY: only tries to dlopen the candidates.
        unsafe { cudarc::driver::sys::is_culib_present() }
    }
    #[cfg(feature = "cuda")]
    {
        true // linked
    }
}

/// Whether NVRTC can be loaded.
pub fn nvrtc_present() -> bool {
    #[cfg(not(feature = "cuda"))]
    {
        // SAFETY: only tries to dlopen the candidates.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    }
    #[cfg(feature = "cuda")]
    {
        true // linked
    }
}

/// Compiles the kernels to PTX for `arch` (`compute_90`, …). FMA
/// contraction is off so the float normalisation rounds exactly as on the
/// CPU.
pub fn compile(arch: &str) -> Result<Ptx, GpuError> {
    if !nvrtc_present() {
        return Err(GpuError::NvrtcMissing);
    }
    let opts = CompileOptions {
        fmad: Some(false),
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("vsssummarize_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(KERNELS, opts).map_err(|e| GpuError::Compile {
        arch: arch.into(),
        detail: format!("{e:?}"),
    })
}

/// An opened GPU with the kernels loaded.
pub struct Device {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub module: Arc<CudaModule>,
    /// The card's name, e.g. "NVIDIA H100 80GB HBM3".
    pub card: String,
    pub compute_capability: (i32, i32),
    /// The architecture the PTX was compiled for.
    pub arch: String,
}

fn devices() -> &'static Mutex<HashMap<usize, Arc<Device>>> {
    static D: OnceLock<Mutex<HashMap<usize, Arc<Device>>>> = OnceLock::new();
    D.get_or_init(Default::default)
}

/// Opens GPU `ordinal` (its primary context) and loads the kernels, once per
/// process; errors say what is missing.
pub fn open(ordinal: usize) -> Result<Arc<Device>, GpuError> {
    let mut map = devices().lock();
    if let Some(d) = map.get(&ordinal) {
        return Ok(d.clone());
    }
    if !driver_present() {
        return Err(GpuError::DriverMissing);
    }
    let count = CudaContext::device_count().map_err(GpuError::DeviceCount)?;
    if ordinal >= count.max(0) as usize {
        return Err(GpuError::NoSuchGpu { ordinal, count });
    }
    let ctx = CudaContext::new(ordinal).map_err(|error| GpuError::Open { ordinal, error })?;
    let card = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
    let cc = ctx
        .compute_capability()
        .map_err(|error| GpuError::Query { ordinal, error })?;
    // PTX for the card's own architecture; if this NVRTC is older than the
    // card, PTX for an older architecture, which the driver JIT-compiles.
    let mut errors = Vec::new();
    let mut loaded = None;
    for arch in [
        format!("compute_{}{}", cc.0, cc.1),
        "compute_90".into(),
        "compute_80".into(),
        "compute_75".into(),
    ] {
        match compile(&arch) {
            Ok(ptx) => {
                let m = ctx
                    .load_module(ptx)
                    .map_err(|error| GpuError::LoadKernels { ordinal, error })?;
                loaded = Some((m, arch));
                break;
            }
            Err(e) if !nvrtc_present() => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    let (module, arch) = loaded.ok_or(GpuError::NoArchitecture(errors))?;
    let d = Arc::new(Device {
        ordinal,
        ctx,
        module,
        card,
        compute_capability: cc,
        arch,
    });
    map.insert(ordinal, d.clone());
    Ok(d)
}

/// One pinned staging buffer and the event of the copy that last read it.
struct Staging {
    buf: PinnedHostSlice<u8>,
    busy: Option<CudaEvent>,
}

const STAGING_SLOTS: usize = 3;

/// Runs [`Launch`]es on one stream of one GPU.
pub struct CudaExec {
    dev: Arc<Device>,
    stream: Arc<CudaStream>,
    convert: CudaFunction,
    resize: CudaFunction,
    resize_plane: CudaFunction,
    patchify: CudaFunction,
    staging: Vec<Option<Staging>>,
    next: usize,
    readback: Option<PinnedHostSlice<u8>>,
    /// Fill for fresh allocations (the GPU check's poisoned outputs).
    poison: Option<u8>,
    /// Uploaded constants (filter taps) by content.
    constants: HashMap<Vec<u8>, CudaSlice<u8>>,
}

/// Distinct constants kept before the cache starts over (a stream whose
/// frame size keeps changing must not grow it without bound).
const MAX_CONSTANTS: usize = 64;

fn derr(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
    move |error| GpuError::Driver { what, error }
}

impl CudaExec {
    /// A new stream on `dev`.
    pub fn new(dev: Arc<Device>) -> Result<CudaExec, GpuError> {
        let stream = dev.ctx.new_stream().map_err(derr("stream creation"))?;
        CudaExec::with_stream(dev, stream)
    }

    /// Runs on `stream` (e.g. candle's, so its tensors can use the output
    /// without synchronisation or a copy).
    pub fn with_stream(dev: Arc<Device>, stream: Arc<CudaStream>) -> Result<CudaExec, GpuError> {
        let f = |name: &'static str| {
            dev.module
                .load_function(name)
                .map_err(|error| GpuError::KernelMissing { name, error })
        };
        Ok(CudaExec {
            convert: f("vss_convert")?,
            resize: f("vss_resize")?,
            resize_plane: f("vss_resize_plane")?,
            patchify: f("vss_patchify")?,
            dev,
            stream,
            staging: (0..STAGING_SLOTS).map(|_| None).collect(),
            next: 0,
            readback: None,
            poison: None,
            constants: HashMap::new(),
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Fresh allocations are no longer filled (after [`check::Poison`]).
    ///
    /// [`check::Poison`]: super::check::Poison
    pub fn clear_poison(&mut self) {
        self.poison = None;
    }

    /// Waits for everything queued so far.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(derr("synchronize"))
    }
}

impl Exec for CudaExec {
    type Buf = CudaSlice<u8>;

    fn alloc(&mut self, bytes: usize) -> Result<CudaSlice<u8>, GpuError> {
        // SAFETY: every byte the kernels read is written first (uploads and
        // earlier passes); outputs are only read after they were written.
        let mut b = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }.map_err(derr("allocation"))?;
        if let Some(v) = self.poison {
            let n = b.len();
            let (p, _sync) = b.device_ptr_mut(&self.stream);
            // SAFETY: `p` is the start of `b`, which holds `b.len()` bytes.
            unsafe { cudarc::driver::result::memset_d8_async(p, v, n, self.stream.cu_stream()) }
                .map_err(derr("memset"))?;
        }
        Ok(b)
    }

    fn addr(&self, buf: &CudaSlice<u8>) -> u64 {
        let (p, _sync) = buf.device_ptr(&self.stream);
        p
    }

    fn upload(&mut self, dst: &mut CudaSlice<u8>, parts: &[&[u8]]) -> Result<(), GpuError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > dst.len() {
            return Err(GpuError::UploadTooLarge {
                bytes: total,
                capacity: dst.len(),
            });
        }
        self.dev.ctx.bind_to_thread().map_err(derr("bind"))?;
        let slot = &mut self.staging[self.next];
        self.next = (self.next + 1) % STAGING_SLOTS;
        if let Some(s) = slot.as_mut() {
            if let Some(ev) = s.busy.take() {
                ev.synchronize().map_err(derr("staging wait"))?;
            }
        }
        if slot.as_ref().is_none_or(|s| s.buf.len() < total) {
            *slot = None; // free the old one first
                          // SAFETY: written below before any copy reads it.
            let buf = unsafe { self.dev.ctx.alloc_pinned::<u8>(total.next_power_of_two()) }
                .map_err(derr("pinned allocation"))?;
            *slot = Some(Staging { buf, busy: None });
        }
        let s = slot.as_mut().expect("set above");
        let host = s.buf.as_mut_slice().map_err(derr("staging"))?;
        let mut at = 0;
        for p in parts {
            host[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        let (dptr, _sync) = dst.device_ptr_mut(&self.stream);
        // SAFETY: `host[..total]` is pinned and stays untouched until `busy`
        // has completed; `dst` holds at least `total` bytes.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(dptr, &host[..total], self.stream.cu_stream())
        }
        .map_err(derr("upload"))?;
        s.busy = Some(self.stream.record_event(None).map_err(derr("event"))?);
        Ok(())
    }

    fn download(&mut self, src: &CudaSlice<u8>, out: &mut [u8]) -> Result<(), GpuError> {
        let n = out.len();
        if n > src.len() {
            return Err(GpuError::DownloadTooLarge {
                bytes: n,
                capacity: src.len(),
            });
        }
        self.dev.ctx.bind_to_thread().map_err(derr("bind"))?;
        if self.readback.as_ref().is_none_or(|b| b.len() < n) {
            self.readback = None;
            // SAFETY: written by the copy below before it is read. Not
            // write-combined: the host reads it.
            let b = unsafe {
                self.dev
                    .ctx
                    .alloc_pinned_with_flags::<u8>(n.next_power_of_two(), 0)
            }
            .map_err(derr("pinned allocation"))?;
            self.readback = Some(b);
        }
        let rb = self.readback.as_mut().expect("set above");
        let host = rb.as_mut_slice().map_err(derr("readback"))?;
        {
            let (sptr, _sync) = src.device_ptr(&self.stream);
            // SAFETY: `host` is pinned and at least `n` bytes; waited for below.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut host[..n],
                    sptr,
                    self.stream.cu_stream(),
                )
            }
            .map_err(derr("download"))?;
        }
        self.stream.synchronize().map_err(derr("synchronize"))?;
        out.copy_from_slice(&host[..n]);
        Ok(())
    }

    fn constant(&mut self, bytes: &[u8]) -> Result<u64, GpuError> {
        if let Some(b) = self.constants.get(bytes) {
            return Ok(self.addr(b));
        }
        if self.constants.len() >= MAX_CONSTANTS {
            // Frees are ordered on the stream after the work using them.
            self.constants.clear();
        }
        let poison = self.poison.take();
        let b = self.alloc(bytes.len());
        self.poison = poison;
        let mut b = b?;
        self.upload(&mut b, &[bytes])?;
        let a = self.addr(&b);
        self.constants.insert(bytes.to_vec(), b);
        Ok(a)
    }

    fn launch(&mut self, l: &Launch) -> Result<(), GpuError> {
        let (grid_dim, block_dim) = l.dims();
        if grid_dim.0 == 0 || grid_dim.1 == 0 {
            return Ok(()); // nothing to compute
        }
        let cfg = LaunchConfig {
            grid_dim,
            block_dim,
            shared_mem_bytes: 0,
        };
        /// One kernel, one by-value struct argument.
        fn go<T: DeviceRepr>(
            stream: &CudaStream,
            f: &CudaFunction,
            arg: &T,
            cfg: LaunchConfig,
        ) -> Result<(), cudarc::driver::DriverError> {
            let mut b = stream.launch_builder(f);
            b.arg(arg);
            // SAFETY: every argument struct matches its kernel's, and every
            // address in it points into a live buffer of this context.
            unsafe { b.launch(cfg) }.map(|_| ())
        }
        let s = &self.stream;
        let r = match l {
            Launch::Convert(a) => go(s, &self.convert, a, cfg),
            Launch::Resize(a) => go(s, &self.resize, a, cfg),
            Launch::PlaneResize(a) => go(s, &self.resize_plane, a, cfg),
            Launch::Patchify(a) => go(s, &self.patchify, a, cfg),
        };
        r.map_err(|error| GpuError::Launch {
            kernel: l.name(),
            error,
        })
    }
}

impl super::check::Poison for CudaExec {
    fn set_poison(&mut self, byte: u8) {
        self.poison = Some(byte);
    }
}
