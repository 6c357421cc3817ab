// SPDX-License-Identifier: MPL-2.0
//! What the GPU does for a frame, independent of how it is executed.
//!
//! This module builds the kernel arguments (the `#[repr(C)]` mirrors of the
//! structs in `kernels.cu`), the integer filter taps the resize kernel
//! applies, and the sequence of uploads, launches and downloads for the two
//! jobs: a sampled frame to packed RGB of a requested size (JPEG-bound and
//! raw-frame backends), and a chunk's frames to Qwen2.5-VL `pixel_values`.
//! It runs them on an [`Exec`]: the CUDA one in `exec.rs`, or the test
//! emulator that runs the same kernel sources on the CPU.
//!
//! The taps are the CPU path's own: fast_image_resize's bilinear
//! convolution (vertical pass first, u8 intermediate, i16 weights) for
//! [`crate::frames::resize`], and torch's antialiased bicubic (horizontal
//! first, u8 intermediate) for [`crate::prep::qwen`]. All
//! of it is integer arithmetic, so the GPU result is meant to be
//! bit-identical to the CPU one; the acceptance bound is ±1 level
//! (colour, bilinear) and ±2 (bicubic).

use std::borrow::Borrow;

use super::GpuError;
use crate::frames::{self, Colorimetry, PixelFormat, RawFrame, RgbImage};
use crate::prep::qwen::{self, VisionParams};

/// `VssSrc` in kernels.cu: a frame or packed RGB image in device memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcArgs {
    pub p0: u64,
    pub p1: u64,
    pub p2: u64,
    pub s0: i32,
    pub s1: i32,
    pub s2: i32,
    pub kind: i32,
    pub bpp: i32,
    pub c0: i32,
    pub c1: i32,
    pub c2: i32,
    pub y_off: i32,
    pub y_mul: i32,
    pub rv: i32,
    pub gu: i32,
    pub gv: i32,
    pub bu: i32,
    pub width: i32,
    pub height: i32,
}

/// `VssConvert` in kernels.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvertArgs {
    pub src: SrcArgs,
    pub dst: u64,
}

/// `VssTaps` in kernels.cu: a [`Taps`] table in device memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TapArgs {
    pub starts: u64,
    pub counts: u64,
    pub weights: u64,
    pub window: i32,
    pub precision: i32,
}

/// `VssResize` in kernels.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ResizeArgs {
    pub src: SrcArgs,
    pub dst: u64,
    pub taps: TapArgs,
    pub out_w: i32,
    pub out_h: i32,
    pub vertical: i32,
    pub pad_: i32,
}

/// `VssPlaneResize` in kernels.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PlaneResizeArgs {
    pub src: u64,
    pub dst: u64,
    pub taps: TapArgs,
    pub src_stride: i32,
    pub channels: i32,
    pub out_w: i32,
    pub out_h: i32,
    pub vertical: i32,
    pub pad_: i32,
}

/// `VssPatchify` in kernels.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PatchifyArgs {
    pub frames: u64,
    pub out: u64,
    pub n_frames: i32,
    pub w: i32,
    pub h: i32,
    pub ps: i32,
    pub tps: i32,
    pub ms: i32,
    pub rows: i32,
    pub cols: i32,
    pub div: [f32; 3],
    pub shift: [f32; 3],
}

/// One kernel launch: which kernel, its grid and block, its argument.
#[derive(Clone, Copy, Debug)]
pub enum Launch {
    Convert(ConvertArgs),
    Resize(ResizeArgs),
    PlaneResize(PlaneResizeArgs),
    Patchify(PatchifyArgs),
}

/// Threads per block of the 2-D kernels (32 × 8) and the 1-D one.
pub const BLOCK_2D: (u32, u32) = (32, 8);
pub const BLOCK_1D: u32 = 256;

impl Launch {
    /// Kernel name in kernels.cu.
    pub fn name(&self) -> &'static str {
        match self {
            Launch::Convert(_) => "vss_convert",
            Launch::Resize(_) => "vss_resize",
            Launch::PlaneResize(_) => "vss_resize_plane",
            Launch::Patchify(_) => "vss_patchify",
        }
    }

    /// (grid, block) dimensions.
    pub fn dims(&self) -> ((u32, u32, u32), (u32, u32, u32)) {
        let grid2 = |w: i32, h: i32| {
            (
                (w as u32).div_ceil(BLOCK_2D.0),
                (h as u32).div_ceil(BLOCK_2D.1),
                1,
            )
        };
        let b2 = (BLOCK_2D.0, BLOCK_2D.1, 1);
        match self {
            Launch::Convert(a) => (grid2(a.src.width, a.src.height), b2),
            Launch::Resize(a) => (grid2(a.out_w, a.out_h), b2),
            Launch::PlaneResize(a) => (grid2(a.out_w, a.out_h), b2),
            Launch::Patchify(a) => {
                let n = a.rows as u64 * a.cols as u64;
                (
                    (n.div_ceil(u64::from(BLOCK_1D)) as u32, 1, 1),
                    (BLOCK_1D, 1, 1),
                )
            }
        }
    }
}

/// Something that runs the kernels: device memory, copies and launches, in
/// order (one stream). Buffers are freed when dropped.
pub trait Exec {
    type Buf;
    /// `bytes` of device memory, contents unspecified.
    fn alloc(&mut self, bytes: usize) -> Result<Self::Buf, GpuError>;
    /// The device address of a buffer (what the kernels receive).
    fn addr(&self, buf: &Self::Buf) -> u64;
    /// Copies `parts`, back to back, to the start of `dst` (through pinned
    /// staging memory on CUDA).
    fn upload(&mut self, dst: &mut Self::Buf, parts: &[&[u8]]) -> Result<(), GpuError>;
    /// Copies the first `out.len()` bytes of `src` to the host (waits).
    fn download(&mut self, src: &Self::Buf, out: &mut [u8]) -> Result<(), GpuError>;
    fn launch(&mut self, l: &Launch) -> Result<(), GpuError>;
    /// The device address of a read-only copy of `bytes`, uploaded the
    /// first time these bytes are asked for and kept (filter taps, which
    /// repeat from frame to frame).
    fn constant(&mut self, bytes: &[u8]) -> Result<u64, GpuError>;
}

/// Integer taps of one separable pass: output index `i` reads `counts[i]`
/// inputs from `starts[i]` with `weights[i * window ..]`, then rounds and
/// shifts by `precision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taps {
    pub starts: Vec<i32>,
    pub counts: Vec<i32>,
    pub weights: Vec<i32>,
    pub window: usize,
    pub precision: u32,
}

impl Taps {
    fn from_rows(rows: Vec<(usize, Vec<i32>)>, precision: u32) -> Taps {
        let window = rows.iter().map(|(_, w)| w.len()).max().unwrap_or(0).max(1);
        let mut t = Taps {
            starts: Vec::with_capacity(rows.len()),
            counts: Vec::with_capacity(rows.len()),
            weights: Vec::with_capacity(rows.len() * window),
            window,
            precision,
        };
        for (start, w) in rows {
            t.starts.push(start as i32);
            t.counts.push(w.len() as i32);
            t.weights.extend_from_slice(&w);
            t.weights.resize(t.starts.len() * window, 0);
        }
        t
    }

    /// Number of output positions.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// starts | counts | weights as little-endian bytes (one upload).
    fn bytes(&self) -> Vec<u8> {
        self.starts
            .iter()
            .chain(&self.counts)
            .chain(&self.weights)
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }
}

/// fast_image_resize 5's bilinear convolution taps for `input` → `output`
/// samples (adaptive kernel size, zero weights trimmed from both ends, i16
/// weights at the largest precision below 22 bits that keeps the largest
/// weight under 2^15).
pub fn bilinear_taps(input: usize, output: usize) -> Taps {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let radius = filter_scale; // bilinear support is 1
    let recip = 1.0 / filter_scale;
    let tri = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    let mut rows = Vec::with_capacity(output);
    let mut max_w = 0.0f64;
    for o in 0..output {
        let in_center = (o as f64 + 0.5) * scale;
        let x_min = (in_center - radius).floor().max(0.0) as usize;
        let x_max = (in_center + radius).ceil().min(input as f64) as usize;
        let center = in_center - 0.5;
        let mut start = x_min;
        let mut w = Vec::new();
        let mut total = 0.0;
        for x in x_min..x_max {
            let v = tri((x as f64 - center) * recip);
            if x == start && v == 0.0 {
                start += 1;
            } else {
                w.push(v);
                total += v;
            }
        }
        while w.last() == Some(&0.0) {
            w.pop();
        }
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        max_w = w.iter().fold(max_w, |m, v| m.max(*v));
        rows.push((start, w));
    }
    let mut precision = 0u32;
    for p in 0..22u32 {
        precision = p;
        if (max_w * f64::from(1u32 << (p + 1))).round() as i64 >= 1 << 15 {
            break;
        }
    }
    let one = f64::from(1u32 << precision);
    let rows = rows
        .into_iter()
        .map(|(s, w)| (s, w.iter().map(|v| (v * one).round() as i32).collect()))
        .collect();
    Taps::from_rows(rows, precision)
}

/// torch's antialiased bicubic taps (the CPU reference's own, see
/// `qwen::resize_bicubic_aa`).
pub fn bicubic_taps(input: usize, output: usize) -> Taps {
    let (rows, precision) = qwen::bicubic_taps(input, output);
    Taps::from_rows(rows, precision)
}

/// Applies one pass of `taps` to packed RGB on the CPU (the kernels'
/// arithmetic, for tests and as documentation).
pub fn apply_taps(img: &RgbImage, taps: &Taps, vertical: bool) -> RgbImage {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let (ow, oh) = if vertical {
        (iw, taps.len())
    } else {
        (taps.len(), ih)
    };
    let round = if taps.precision > 0 {
        1i64 << (taps.precision - 1)
    } else {
        0
    };
    let mut data = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let i = if vertical { y } else { x };
            let start = taps.starts[i] as usize;
            for c in 0..3 {
                let mut acc = 0i64;
                for k in 0..taps.counts[i] as usize {
                    let (sx, sy) = if vertical {
                        (x, start + k)
                    } else {
                        (start + k, y)
                    };
                    acc += i64::from(taps.weights[i * taps.window + k])
                        * i64::from(img.data[(sy * iw + sx) * 3 + c]);
                }
                data[(y * ow + x) * 3 + c] = ((acc + round) >> taps.precision).clamp(0, 255) as u8;
            }
        }
    }
    RgbImage {
        width: ow as u32,
        height: oh as u32,
        data,
    }
}

/// Which filter a resize uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// [`crate::frames::resize`]: vertical pass first.
    Bilinear,
    /// [`qwen::resize_bicubic_aa`]: horizontal pass first.
    BicubicAa,
}

/// Bytes of each plane that the kernels may read (the last row need not be
/// padded to the stride).
fn plane_extents(f: &RawFrame) -> Vec<usize> {
    (0..f.format.n_planes())
        .map(|i| {
            let rows = f.format.plane_rows(i, f.height);
            f.strides[i] * (rows - 1) + f.format.plane_row_bytes(i, f.width)
        })
        .collect()
}

/// The source descriptor of a frame whose planes were uploaded back to back
/// at `base`.
pub fn frame_src(f: &RawFrame, base: u64) -> SrcArgs {
    let ext = plane_extents(f);
    let mut off = [0u64; 3];
    for i in 1..ext.len() {
        off[i] = off[i - 1] + ext[i - 1] as u64;
    }
    let stride = |i: usize| f.strides.get(i).copied().unwrap_or(0) as i32;
    let mut s = SrcArgs {
        p0: base,
        s0: stride(0),
        width: f.width as i32,
        height: f.height as i32,
        ..Default::default()
    };
    let c = frames::yuv_coefficients(f.colorimetry);
    (s.y_off, s.y_mul, s.rv, s.gu, s.gv, s.bu) = (c[0], c[1], c[2], c[3], c[4], c[5]);
    let packed = |s: &mut SrcArgs, bpp: i32, r: i32, g: i32, b: i32| {
        (s.kind, s.bpp, s.c0, s.c1, s.c2) = (2, bpp, r, g, b);
    };
    match f.format {
        PixelFormat::I420 | PixelFormat::Yv12 => {
            let (u, v) = if f.format == PixelFormat::I420 {
                (1, 2)
            } else {
                (2, 1)
            };
            s.kind = 0;
            (s.p1, s.s1) = (base + off[u], stride(u));
            (s.p2, s.s2) = (base + off[v], stride(v));
        }
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            s.kind = 1;
            (s.p1, s.s1) = (base + off[1], stride(1));
            (s.c0, s.c1) = if f.format == PixelFormat::Nv12 {
                (0, 1)
            } else {
                (1, 0)
            };
        }
        PixelFormat::Rgb => packed(&mut s, 3, 0, 1, 2),
        PixelFormat::Bgr => packed(&mut s, 3, 2, 1, 0),
        PixelFormat::Rgba | PixelFormat::Rgbx => packed(&mut s, 4, 0, 1, 2),
        PixelFormat::Bgra | PixelFormat::Bgrx => packed(&mut s, 4, 2, 1, 0),
        PixelFormat::Argb | PixelFormat::Xrgb => packed(&mut s, 4, 1, 2, 3),
        PixelFormat::Abgr | PixelFormat::Xbgr => packed(&mut s, 4, 3, 2, 1),
    }
    s
}

/// A packed RGB image in device memory as a kernel source.
fn rgb_src(addr: u64, w: u32, h: u32) -> SrcArgs {
    let mut s = frame_src(
        &RawFrame {
            format: PixelFormat::Rgb,
            width: w,
            height: h,
            planes: Vec::new(),
            strides: vec![w as usize * 3],
            colorimetry: Colorimetry::default(),
        },
        addr,
    );
    s.p0 = addr;
    s
}

/// Uploads a validated frame; returns the buffer (keep it alive until the
/// kernels reading it ran) and its source descriptor.
fn upload_frame<E: Exec>(e: &mut E, f: &RawFrame) -> Result<(E::Buf, SrcArgs), GpuError> {
    f.validate()?;
    let ext = plane_extents(f);
    let parts: Vec<&[u8]> = f.planes.iter().zip(&ext).map(|(p, &n)| &p[..n]).collect();
    let mut buf = e.alloc(ext.iter().sum())?;
    e.upload(&mut buf, &parts)?;
    let src = frame_src(f, e.addr(&buf));
    Ok((buf, src))
}

/// `taps` in device memory (uploaded once per executor).
fn tap_args<E: Exec>(e: &mut E, taps: &Taps) -> Result<TapArgs, GpuError> {
    let base = e.constant(&taps.bytes())?;
    let n = taps.len() as u64 * 4;
    Ok(TapArgs {
        starts: base,
        counts: base + n,
        weights: base + 2 * n,
        window: taps.window as i32,
        precision: taps.precision as i32,
    })
}

/// Runs one pass of `taps` from `src` into `dst_addr` (`out_w` × `out_h`).
fn resize_pass<E: Exec>(
    e: &mut E,
    src: SrcArgs,
    dst_addr: u64,
    taps: &Taps,
    vertical: bool,
) -> Result<(), GpuError> {
    let (out_w, out_h) = if vertical {
        (src.width, taps.len() as i32)
    } else {
        (taps.len() as i32, src.height)
    };
    let taps = tap_args(e, taps)?;
    e.launch(&Launch::Resize(ResizeArgs {
        src,
        dst: dst_addr,
        taps,
        out_w,
        out_h,
        vertical: i32::from(vertical),
        pad_: 0,
    }))
}

/// Resizes `src` (a frame or RGB image on the device) to `w` × `h` with
/// `filter`, writing packed RGB at `dst_addr`; the colour conversion is
/// fused into the first pass. Same size: conversion only.
fn resize_into<E: Exec>(
    e: &mut E,
    src: SrcArgs,
    w: u32,
    h: u32,
    filter: Filter,
    dst_addr: u64,
    keep: &mut Vec<E::Buf>,
) -> Result<(), GpuError> {
    let (iw, ih) = (src.width as u32, src.height as u32);
    let need_h = w != iw;
    let need_v = h != ih;
    let taps = |i: u32, o: u32| match filter {
        Filter::Bilinear => bilinear_taps(i as usize, o as usize),
        Filter::BicubicAa => bicubic_taps(i as usize, o as usize),
    };
    match (need_h, need_v) {
        (false, false) => e.launch(&Launch::Convert(ConvertArgs { src, dst: dst_addr })),
        (true, false) => resize_pass(e, src, dst_addr, &taps(iw, w), false),
        (false, true) => resize_pass(e, src, dst_addr, &taps(ih, h), true),
        (true, true) => {
            // The intermediate is u8, as on the CPU.
            let vertical_first = filter == Filter::Bilinear;
            let (tw, th) = if vertical_first { (iw, h) } else { (w, ih) };
            let tmp = e.alloc(tw as usize * th as usize * 3)?;
            let ta = e.addr(&tmp);
            if vertical_first {
                resize_pass(e, src, ta, &taps(ih, h), true)?;
                resize_pass(e, rgb_src(ta, tw, th), dst_addr, &taps(iw, w), false)?;
            } else {
                resize_pass(e, src, ta, &taps(iw, w), false)?;
                resize_pass(e, rgb_src(ta, tw, th), dst_addr, &taps(ih, h), true)?;
            }
            keep.push(tmp);
            Ok(())
        }
    }
}

/// One pass of `taps` over a raw plane of `channels`-byte pixels.
#[allow(clippy::too_many_arguments)]
fn plane_pass<E: Exec>(
    e: &mut E,
    src: u64,
    src_stride: usize,
    channels: usize,
    (out_w, out_h): (u32, u32),
    dst: u64,
    taps: &Taps,
    vertical: bool,
) -> Result<(), GpuError> {
    let taps = tap_args(e, taps)?;
    e.launch(&Launch::PlaneResize(PlaneResizeArgs {
        src,
        dst,
        taps,
        src_stride: src_stride as i32,
        channels: channels as i32,
        out_w: out_w as i32,
        out_h: out_h as i32,
        vertical: i32::from(vertical),
        pad_: 0,
    }))
}

/// A raw plane (`iw` × `ih` pixels of `channels` bytes, rows `stride`
/// apart) resized with the bilinear taps to a tight `w` × `h` plane at
/// `dst`: vertical pass first with a u8 intermediate, as fast_image_resize
/// does for 8-bit pixels. Same size: one identity pass (a copy).
#[allow(clippy::too_many_arguments)]
fn resize_plane<E: Exec>(
    e: &mut E,
    src: u64,
    stride: usize,
    channels: usize,
    (iw, ih): (u32, u32),
    (w, h): (u32, u32),
    dst: u64,
    keep: &mut Vec<E::Buf>,
) -> Result<(), GpuError> {
    let bil = |i: u32, o: u32| bilinear_taps(i as usize, o as usize);
    match (w != iw, h != ih) {
        (false, _) => plane_pass(e, src, stride, channels, (w, h), dst, &bil(ih, h), true),
        (true, false) => plane_pass(e, src, stride, channels, (w, h), dst, &bil(iw, w), false),
        (true, true) => {
            let tmp = e.alloc(iw as usize * h as usize * channels)?;
            let t = e.addr(&tmp);
            plane_pass(e, src, stride, channels, (iw, h), t, &bil(ih, h), true)?;
            let ts = iw as usize * channels;
            plane_pass(e, t, ts, channels, (w, h), dst, &bil(iw, w), false)?;
            keep.push(tmp);
            Ok(())
        }
    }
}

/// [`crate::frames::prepare_rgb`] of the uploaded frame `src` into `dst`
/// (`w` × `h` packed RGB): conversion only at the native size; 4:2:0
/// frames have Y and chroma resized to `w` × `h` first and are then
/// converted; packed RGB is converted within the first resize pass.
fn rgb_into<E: Exec>(
    e: &mut E,
    src: SrcArgs,
    (w, h): (u32, u32),
    dst: u64,
    keep: &mut Vec<E::Buf>,
) -> Result<(), GpuError> {
    let (iw, ih) = (src.width as u32, src.height as u32);
    if (w, h) == (iw, ih) || src.kind >= 2 {
        return resize_into(e, src, w, h, Filter::Bilinear, dst, keep);
    }
    let n = w as usize * h as usize;
    let (cw, ch) = (iw.div_ceil(2), ih.div_ceil(2));
    let planes = e.alloc(n * 3)?;
    let (py, pc) = (e.addr(&planes), e.addr(&planes) + n as u64);
    let s0 = src.s0 as usize;
    resize_plane(e, src.p0, s0, 1, (iw, ih), (w, h), py, keep)?;
    let mut out = SrcArgs {
        p0: py,
        s0: w as i32,
        p1: pc,
        width: w as i32,
        height: h as i32,
        ..src
    };
    if src.kind == 0 {
        let (s1, s2) = (src.s1 as usize, src.s2 as usize);
        resize_plane(e, src.p1, s1, 1, (cw, ch), (w, h), pc, keep)?;
        resize_plane(e, src.p2, s2, 1, (cw, ch), (w, h), pc + n as u64, keep)?;
        (out.kind, out.s1, out.p2, out.s2) = (3, w as i32, pc + n as u64, w as i32);
    } else {
        resize_plane(e, src.p1, src.s1 as usize, 2, (cw, ch), (w, h), pc, keep)?;
        (out.kind, out.s1) = (4, 2 * w as i32);
    }
    e.launch(&Launch::Convert(ConvertArgs { src: out, dst }))?;
    keep.push(planes);
    Ok(())
}

/// [`crate::frames::prepare_rgb`] on the device, packed RGB back on the
/// host.
pub fn prepare_rgb<E: Exec>(
    e: &mut E,
    f: &RawFrame,
    req_w: u32,
    req_h: u32,
) -> Result<RgbImage, GpuError> {
    let (w, h) = frames::target_size(f.width, f.height, req_w, req_h);
    let (src_buf, src) = upload_frame(e, f)?;
    let out = e.alloc(w as usize * h as usize * 3)?;
    let mut keep = vec![src_buf];
    rgb_into(e, src, (w, h), e.addr(&out), &mut keep)?;
    let mut data = vec![0u8; w as usize * h as usize * 3];
    e.download(&out, &mut data)?;
    drop(keep);
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

/// Qwen2.5-VL `pixel_values` in device memory.
pub struct DevicePixels<B> {
    /// f32 [rows × cols], row-major.
    pub buf: B,
    pub rows: usize,
    pub cols: usize,
    pub grid_thw: [u32; 3],
    pub resized: (u32, u32),
}

/// The cosmos-reason1 path on the device: each frame converted and, when
/// `pre_w`/`pre_h` ask for it, bilinear pre-scaled (as
/// [`crate::frames::prepare_rgb`]), then resized with the processor's
/// antialiased bicubic to the `smart_resize` size of the video, then all
/// frames normalised and patchified in one kernel (an odd count repeats the
/// last frame). Equals `preprocess_video(prepare_rgb(..))` on the CPU.
pub fn pixel_values<E: Exec, F: Borrow<RawFrame>>(
    e: &mut E,
    frames_in: &[F],
    pre_w: u32,
    pre_h: u32,
    p: &VisionParams,
) -> Result<DevicePixels<E::Buf>, GpuError> {
    let first: &RawFrame = frames_in.first().ok_or(GpuError::NoFrames)?.borrow();
    let (fw, fh) = frames::target_size(first.width, first.height, pre_w, pre_h);
    let (th, tw) = p.target_hw(frames_in.len(), fh, fw)?;
    let slot = tw as usize * th as usize * 3;
    let all = e.alloc(slot * frames_in.len())?;
    let base = e.addr(&all);
    let mut keep = Vec::new();
    for (i, f) in frames_in.iter().enumerate() {
        let f: &RawFrame = f.borrow();
        let (buf, mut src) = upload_frame(e, f)?;
        keep.push(buf);
        // Every frame gets the first one's size, as on the CPU.
        let (w, h) = (fw, fh);
        if (w, h) != (f.width, f.height) {
            let pre = e.alloc(w as usize * h as usize * 3)?;
            let pa = e.addr(&pre);
            rgb_into(e, src, (w, h), pa, &mut keep)?;
            keep.push(pre);
            src = rgb_src(pa, w, h);
        }
        let dst = base + (i * slot) as u64;
        resize_into(e, src, tw, th, Filter::BicubicAa, dst, &mut keep)?;
    }
    let (ps, tps, ms) = (p.patch_size, p.temporal_patch_size, p.merge_size);
    let n = frames_in.len().div_ceil(tps as usize) * tps as usize;
    let (gt, gh, gw) = (n as u32 / tps, th / ps, tw / ps);
    let cols = (3 * tps * ps * ps) as usize;
    let rows = (gt * gh * gw) as usize;
    let out = e.alloc(rows * cols * 4)?;
    e.launch(&Launch::Patchify(PatchifyArgs {
        frames: base,
        out: e.addr(&out),
        n_frames: frames_in.len() as i32,
        w: tw as i32,
        h: th as i32,
        ps: ps as i32,
        tps: tps as i32,
        ms: ms as i32,
        rows: rows as i32,
        cols: cols as i32,
        div: std::array::from_fn(|c| 255.0 * p.std[c]),
        shift: std::array::from_fn(|c| 255.0 * p.mean[c]),
    }))?;
    keep.push(all);
    drop(keep);
    Ok(DevicePixels {
        buf: out,
        rows,
        cols,
        grid_thw: [gt, gh, gw],
        resized: (th, tw),
    })
}

/// [`pixel_values`] with the result copied to the host.
pub fn pixel_values_host<E: Exec, F: Borrow<RawFrame>>(
    e: &mut E,
    frames_in: &[F],
    pre_w: u32,
    pre_h: u32,
    p: &VisionParams,
) -> Result<qwen::PixelValues, GpuError> {
    let d = pixel_values(e, frames_in, pre_w, pre_h, p)?;
    let mut bytes = vec![0u8; d.rows * d.cols * 4];
    e.download(&d.buf, &mut bytes)?;
    let data = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(qwen::PixelValues {
        data,
        rows: d.rows,
        cols: d.cols,
        grid_thw: d.grid_thw,
        resized: d.resized,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_rgb(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut x = seed;
        let data = (0..w * h * 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// The taps replicate fast_image_resize exactly: vertical then
    /// horizontal pass equals `frames::resize`, bit for bit.
    #[test]
    fn bilinear_taps_match_fast_image_resize() {
        for (iw, ih, ow, oh) in [
            (1920, 1080, 448, 448),
            (640, 360, 1280, 720),
            (101, 77, 33, 50),
            (7, 5, 3, 9),
            (300, 200, 299, 200),
            (64, 64, 64, 17),
        ] {
            let img = noise_rgb(iw, ih, iw * 31 + oh);
            let want = frames::resize(&img, ow, oh).unwrap();
            let mut got = img.clone();
            if oh != ih {
                got = apply_taps(&got, &bilinear_taps(ih as usize, oh as usize), true);
            }
            if ow != iw {
                got = apply_taps(&got, &bilinear_taps(iw as usize, ow as usize), false);
            }
            assert_eq!(got, want, "{iw}x{ih} -> {ow}x{oh}");
        }
    }

    #[test]
    fn bicubic_taps_match_the_reference() {
        for (iw, ih, ow, oh) in [(1920, 1080, 812, 448), (30, 40, 56, 28), (500, 90, 252, 84)] {
            let img = noise_rgb(iw, ih, ow ^ ih);
            let want = qwen::resize_bicubic_aa(&img, ow, oh);
            let h = apply_taps(&img, &bicubic_taps(iw as usize, ow as usize), false);
            let got = apply_taps(&h, &bicubic_taps(ih as usize, oh as usize), true);
            assert_eq!(got, want, "{iw}x{ih} -> {ow}x{oh}");
        }
    }

    #[test]
    fn arg_layouts_match_kernels_cu() {
        // kernels.cu: 3 pointers + 16 ints; the others append to it.
        assert_eq!(std::mem::size_of::<SrcArgs>(), 3 * 8 + 16 * 4);
        assert_eq!(std::mem::size_of::<ConvertArgs>(), 88 + 8);
        assert_eq!(std::mem::size_of::<TapArgs>(), 3 * 8 + 2 * 4);
        assert_eq!(std::mem::size_of::<ResizeArgs>(), 88 + 8 + 32 + 4 * 4);
        assert_eq!(std::mem::size_of::<PatchifyArgs>(), 2 * 8 + 8 * 4 + 6 * 4);
        assert_eq!(std::mem::size_of::<PlaneResizeArgs>(), 2 * 8 + 32 + 6 * 4);
    }

    #[test]
    fn launch_dims_cover_the_output() {
        let l = Launch::Patchify(PatchifyArgs {
            rows: 3,
            cols: 1176,
            ..Default::default()
        });
        let ((gx, _, _), (bx, _, _)) = l.dims();
        assert!(gx * bx >= 3 * 1176 && (gx - 1) * bx < 3 * 1176);
        let l = Launch::Resize(ResizeArgs {
            out_w: 33,
            out_h: 9,
            ..Default::default()
        });
        assert_eq!(l.dims().0, (2, 2, 1));
    }
}
