//! Frame preparation for the VLM backends: raw decoder output → packed RGB →
//! (optionally) resized → JPEG.
//!
//! This module is deliberately free of GStreamer types: the element copies a
//! sampled frame into a [`RawFrame`] and everything below is plain Rust, which
//! keeps it unit-testable and benchmarkable on its own.
//!
//! YUV → RGB conversion is integer fixed point (coefficients scaled by
//! 2^13, results rounded and clamped) and implements the standard
//! equations for BT.601, BT.709 and BT.2020 in limited range (Y 16–235,
//! C 16–240) and full range (0–255).
//!
//! **Chroma siting for 4:2:0:** chroma is upsampled by *nearest* sample: the
//! chroma of pixel `(x, y)` is the chroma sample `(x / 2, y / 2)` (integer
//! division). No interpolation is done; this is cheap and entirely adequate for
//! frames that are downscaled and JPEG-compressed (JPEG itself re-subsamples
//! chroma to 4:2:0) before a VLM looks at them.

use std::fmt;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Pixel layouts the frame preparation understands.
///
/// Names follow GStreamer's video format names (see [`PixelFormat::name`]).
/// Plane order is the GStreamer one: `Yv12` is Y, **V**, U; `Nv12` is Y then
/// interleaved UV; `Nv21` is Y then interleaved VU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Planar 4:2:0, planes Y, U, V.
    I420,
    /// Planar 4:2:0, planes Y, V, U.
    Yv12,
    /// Semi-planar 4:2:0, planes Y, UV interleaved.
    Nv12,
    /// Semi-planar 4:2:0, planes Y, VU interleaved.
    Nv21,
    /// Packed 24-bit R, G, B.
    Rgb,
    /// Packed 24-bit B, G, R.
    Bgr,
    /// Packed 32-bit R, G, B, A (alpha dropped).
    Rgba,
    /// Packed 32-bit B, G, R, A (alpha dropped).
    Bgra,
    /// Packed 32-bit R, G, B, padding.
    Rgbx,
    /// Packed 32-bit B, G, R, padding.
    Bgrx,
    /// Packed 32-bit padding, R, G, B.
    Xrgb,
    /// Packed 32-bit padding, B, G, R.
    Xbgr,
    /// Packed 32-bit A, R, G, B (alpha dropped).
    Argb,
    /// Packed 32-bit A, B, G, R (alpha dropped).
    Abgr,
}

impl PixelFormat {
    /// Every supported format.
    pub const ALL: [PixelFormat; 14] = [
        PixelFormat::I420,
        PixelFormat::Yv12,
        PixelFormat::Nv12,
        PixelFormat::Nv21,
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
        PixelFormat::Xrgb,
        PixelFormat::Xbgr,
        PixelFormat::Argb,
        PixelFormat::Abgr,
    ];

    /// Number of planes a frame of this format carries.
    pub fn n_planes(self) -> usize {
        match self {
            PixelFormat::I420 | PixelFormat::Yv12 => 3,
            PixelFormat::Nv12 | PixelFormat::Nv21 => 2,
            _ => 1,
        }
    }

    /// Whether this is one of the 4:2:0 YUV formats.
    pub fn is_yuv420(self) -> bool {
        matches!(
            self,
            PixelFormat::I420 | PixelFormat::Yv12 | PixelFormat::Nv12 | PixelFormat::Nv21
        )
    }

    /// Bytes per pixel for packed RGB formats, `None` for YUV formats.
    pub fn packed_bytes_per_pixel(self) -> Option<usize> {
        match self {
            PixelFormat::I420 | PixelFormat::Yv12 | PixelFormat::Nv12 | PixelFormat::Nv21 => None,
            PixelFormat::Rgb | PixelFormat::Bgr => Some(3),
            _ => Some(4),
        }
    }

    /// Meaningful bytes in one row of `plane` for a frame `width` pixels wide
    /// (the stride may be larger). 4:2:0 chroma planes are `ceil(width / 2)`
    /// samples wide. Returns 0 for a plane index the format does not have.
    pub fn plane_row_bytes(self, plane: usize, width: u32) -> usize {
        let w = width as usize;
        let cw = w.div_ceil(2);
        match (self, plane) {
            (f, 0) if f.is_yuv420() => w,
            (PixelFormat::I420 | PixelFormat::Yv12, 1 | 2) => cw,
            (PixelFormat::Nv12 | PixelFormat::Nv21, 1) => 2 * cw,
            (f, 0) => w * f.packed_bytes_per_pixel().unwrap_or(0),
            _ => 0,
        }
    }

    /// Number of rows in `plane` for a frame `height` pixels high. 4:2:0
    /// chroma planes have `ceil(height / 2)` rows. Returns 0 for a plane index
    /// the format does not have.
    pub fn plane_rows(self, plane: usize, height: u32) -> usize {
        let h = height as usize;
        if plane >= self.n_planes() {
            0
        } else if plane == 0 {
            h
        } else {
            h.div_ceil(2)
        }
    }

    /// GStreamer's name for the format (as in caps, e.g. `"I420"`, `"RGBx"`).
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::I420 => "I420",
            PixelFormat::Yv12 => "YV12",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Nv21 => "NV21",
            PixelFormat::Rgb => "RGB",
            PixelFormat::Bgr => "BGR",
            PixelFormat::Rgba => "RGBA",
            PixelFormat::Bgra => "BGRA",
            PixelFormat::Rgbx => "RGBx",
            PixelFormat::Bgrx => "BGRx",
            PixelFormat::Xrgb => "xRGB",
            PixelFormat::Xbgr => "xBGR",
            PixelFormat::Argb => "ARGB",
            PixelFormat::Abgr => "ABGR",
        }
    }

    /// Inverse of [`PixelFormat::name`] (exact, case-sensitive match).
    pub fn from_name(name: &str) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// YUV → RGB matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    /// ITU-R BT.601 (Kr 0.299, Kb 0.114).
    Bt601,
    /// ITU-R BT.709 (Kr 0.2126, Kb 0.0722).
    Bt709,
    /// ITU-R BT.2020 non-constant luminance (Kr 0.2627, Kb 0.0593).
    Bt2020,
}

impl Matrix {
    /// The luma coefficients `(Kr, Kb)` of the matrix.
    pub fn kr_kb(self) -> (f64, f64) {
        match self {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
        }
    }
}

/// How to interpret YUV samples. Ignored for packed RGB formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Colorimetry {
    pub matrix: Matrix,
    /// `true`: Y and C use 0–255; `false`: Y 16–235, C 16–240.
    pub full_range: bool,
}

impl Default for Colorimetry {
    /// BT.601, limited range (what GStreamer assumes for SD content without
    /// colorimetry information).
    fn default() -> Self {
        Colorimetry {
            matrix: Matrix::Bt601,
            full_range: false,
        }
    }
}

/// A copy of one sampled video frame as it came from the decoder.
///
/// `planes[i]` holds plane `i`, whose rows start `strides[i]` bytes apart.
/// The last row of a plane may be shorter than the stride (only its
/// meaningful bytes, see [`PixelFormat::plane_row_bytes`], are required).
#[derive(Clone, Debug)]
pub struct RawFrame {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub planes: Vec<Vec<u8>>,
    pub strides: Vec<usize>,
    pub colorimetry: Colorimetry,
}

/// Packed 8-bit RGB, rows `3 * width` bytes apart, no padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Checks that `data` holds exactly `width * height` RGB pixels and that
    /// neither dimension is zero; `kind` says which step refuses it
    /// ([`FrameError::Resize`] or [`FrameError::Encode`]).
    fn check(&self, kind: fn(String) -> FrameError) -> Result<(), FrameError> {
        if self.width == 0 || self.height == 0 {
            return Err(kind(format!(
                "RGB image has an empty dimension ({}x{})",
                self.width, self.height
            )));
        }
        let want = (self.width as usize)
            .checked_mul(self.height as usize)
            .and_then(|n| n.checked_mul(3))
            .ok_or_else(|| {
                kind(format!(
                    "RGB image {}x{} is too large",
                    self.width, self.height
                ))
            })?;
        if self.data.len() != want {
            return Err(kind(format!(
                "RGB image {}x{} needs {} bytes of data, has {}",
                self.width,
                self.height,
                want,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// What went wrong preparing a frame. The strings are details for the
/// message; nothing branches on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The [`RawFrame`] planes/strides do not match its format and size.
    #[error("bad frame layout: {0}")]
    BadLayout(String),
    /// JPEG encoding failed (or the image cannot be represented as JPEG).
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
    /// Resizing failed.
    #[error("resize failed: {0}")]
    Resize(String),
}

impl RawFrame {
    /// Checks the plane count and every plane's size against the format,
    /// width, height and strides.
    ///
    /// Odd widths/heights are fine for the 4:2:0 formats: chroma planes are
    /// `ceil(w / 2)` × `ceil(h / 2)`. A plane must hold
    /// `stride * (rows - 1) + row_bytes` bytes, i.e. padding after the last
    /// row is not required.
    pub fn validate(&self) -> Result<(), FrameError> {
        let bad = |m: String| Err(FrameError::BadLayout(m));
        let fmt = self.format;
        if self.width == 0 || self.height == 0 {
            return bad(format!(
                "{fmt} frame has an empty dimension ({}x{})",
                self.width, self.height
            ));
        }
        let n = fmt.n_planes();
        if self.planes.len() != n {
            return bad(format!(
                "{fmt} needs {n} plane(s), frame has {}",
                self.planes.len()
            ));
        }
        if self.strides.len() != n {
            return bad(format!(
                "{fmt} needs {n} stride(s), frame has {}",
                self.strides.len()
            ));
        }
        for (i, (plane, &stride)) in self.planes.iter().zip(&self.strides).enumerate() {
            let row_bytes = fmt.plane_row_bytes(i, self.width);
            let rows = fmt.plane_rows(i, self.height);
            if stride < row_bytes {
                return bad(format!(
                    "{fmt} {}x{}: plane {i} stride {stride} is smaller than its row size {row_bytes}",
                    self.width, self.height
                ));
            }
            let need = stride
                .checked_mul(rows - 1)
                .and_then(|n| n.checked_add(row_bytes));
            match need {
                Some(need) if plane.len() >= need => {}
                Some(need) => {
                    return bad(format!(
                        "{fmt} {}x{}: plane {i} has {} bytes, needs at least {need} \
                         ({rows} rows, stride {stride}, {row_bytes} bytes per row)",
                        self.width,
                        self.height,
                        plane.len()
                    ))
                }
                None => {
                    return bad(format!(
                        "{fmt} {}x{}: plane {i} size overflows (stride {stride})",
                        self.width, self.height
                    ))
                }
            }
        }
        Ok(())
    }

    /// Row `row` of plane `plane`, exactly `plane_row_bytes` long.
    /// Only valid after [`RawFrame::validate`] succeeded.
    #[inline]
    fn row(&self, plane: usize, row: usize) -> &[u8] {
        let start = self.strides[plane] * row;
        let len = self.format.plane_row_bytes(plane, self.width);
        &self.planes[plane][start..start + len]
    }
}

/// Fixed-point precision of the YUV → RGB coefficients.
const FIX_SHIFT: u32 = 13;
const FIX_ONE: f64 = (1u32 << FIX_SHIFT) as f64;
const FIX_HALF: i32 = 1 << (FIX_SHIFT - 1);

/// Integer YUV → RGB coefficients for one colorimetry.
///
/// With `y' = (Y - y_off) * y_mul` and `u = U - 128`, `v = V - 128` (all
/// scaled by 2^FIX_SHIFT):
/// `R = y' + rv*v`, `G = y' - gu*u - gv*v`, `B = y' + bu*u`.
#[derive(Clone, Copy, Debug)]
struct YuvCoeffs {
    y_off: i16,
    y_mul: i16,
    rv: i16,
    gu: i16,
    gv: i16,
    bu: i16,
}

/// The integer YUV → RGB coefficients the conversion uses for `c`
/// (scaled by 2^13): `[y_off, y_mul, rv, gu, gv, bu]`, with
/// `R = ((Y - y_off)·y_mul + 2^12 + rv·(V-128)) >> 13`,
/// `G = (… - gu·(U-128) - gv·(V-128)) >> 13`, `B = (… + bu·(U-128)) >> 13`,
/// each clamped to 0..=255. The GPU kernels receive exactly these.
pub fn yuv_coefficients(c: Colorimetry) -> [i32; 6] {
    let k = YuvCoeffs::new(c);
    [k.y_off, k.y_mul, k.rv, k.gu, k.gv, k.bu].map(i32::from)
}

impl YuvCoeffs {
    fn new(c: Colorimetry) -> Self {
        let (kr, kb) = c.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let (y_off, y_scale, c_scale) = if c.full_range {
            (0, 1.0, 1.0)
        } else {
            (16, 255.0 / 219.0, 255.0 / 224.0)
        };
        // All coefficients are below 2.12, so at 2^13 they fit in i16, which
        // lets the compiler use cheap 16x16→32-bit SIMD multiplies.
        let fix = |v: f64| {
            let f = (v * FIX_ONE).round();
            debug_assert!(f < f64::from(i16::MAX));
            f as i16
        };
        YuvCoeffs {
            y_off,
            y_mul: fix(y_scale),
            rv: fix(2.0 * (1.0 - kr) * c_scale),
            gu: fix(2.0 * kb * (1.0 - kb) / kg * c_scale),
            gv: fix(2.0 * kr * (1.0 - kr) / kg * c_scale),
            bu: fix(2.0 * (1.0 - kb) * c_scale),
        }
    }

    /// Chroma contributions `(r, g, b)` for one chroma sample.
    #[inline(always)]
    fn chroma(&self, u: u8, v: u8) -> (i32, i32, i32) {
        let u = i32::from(u as i16 - 128);
        let v = i32::from(v as i16 - 128);
        (
            i32::from(self.rv) * v,
            -(i32::from(self.gu) * u + i32::from(self.gv) * v),
            i32::from(self.bu) * u,
        )
    }

    /// Writes one RGB pixel into `out[0..3]`.
    #[inline(always)]
    fn put(&self, y: u8, (cr, cg, cb): (i32, i32, i32), out: &mut [u8]) {
        let y = i32::from(y as i16 - self.y_off) * i32::from(self.y_mul) + FIX_HALF;
        out[0] = clamp_u8((y + cr) >> FIX_SHIFT);
        out[1] = clamp_u8((y + cg) >> FIX_SHIFT);
        out[2] = clamp_u8((y + cb) >> FIX_SHIFT);
    }
}

/// Branch-free clamp to 0..=255 (`i32::clamp` compiles to branches here,
/// which mispredict badly on noisy content).
#[inline(always)]
fn clamp_u8(v: i32) -> u8 {
    let v = v & !(v >> 31); // max(v, 0)
    (v | ((255 - v) >> 31)) as u8 // min(v, 255): all ones if v > 255
}

/// Converts one 4:2:0 row from planar chroma. `y` is `w` bytes, `out` is
/// `3 * w` bytes, `u`/`v` hold at least `ceil(w / 2)` samples; pixel `x` uses
/// chroma sample `x / 2`.
#[inline(always)]
fn yuv_row(c: &YuvCoeffs, y: &[u8], out: &mut [u8], u: &[u8], v: &[u8]) {
    let mut y_pairs = y.chunks_exact(2);
    let mut o_pairs = out.chunks_exact_mut(6);
    for (((yp, o), &u), &v) in (&mut y_pairs).zip(&mut o_pairs).zip(u).zip(v) {
        let ch = c.chroma(u, v);
        c.put(yp[0], ch, &mut o[0..3]);
        c.put(yp[1], ch, &mut o[3..6]);
    }
    // Odd width: the last pixel uses the last chroma sample.
    if let (&[yl], o) = (y_pairs.remainder(), o_pairs.into_remainder()) {
        let i = y.len() / 2;
        c.put(yl, c.chroma(u[i], v[i]), o);
    }
}

/// Splits an interleaved chroma row into separate U and V rows (`UV` pairs,
/// or `VU` pairs when `vu` is set).
fn deinterleave(uv: &[u8], vu: bool, u: &mut [u8], v: &mut [u8]) {
    let (u, v) = if vu { (v, u) } else { (u, v) };
    for ((pair, a), b) in uv.chunks_exact(2).zip(u.iter_mut()).zip(v.iter_mut()) {
        *a = pair[0];
        *b = pair[1];
    }
}

/// Reorders one packed row of `BPP`-byte pixels into RGB, taking R, G, B from
/// byte offsets `R`, `G`, `B`.
#[inline(always)]
fn packed_row<const BPP: usize, const R: usize, const G: usize, const B: usize>(
    src: &[u8],
    out: &mut [u8],
) {
    for (s, o) in src.chunks_exact(BPP).zip(out.chunks_exact_mut(3)) {
        o[0] = s[R];
        o[1] = s[G];
        o[2] = s[B];
    }
}

/// Converts a frame to packed RGB.
///
/// YUV formats use the frame's [`Colorimetry`] (fixed-point, rounded,
/// clamped) with nearest chroma upsampling (pixel `(x, y)` takes chroma
/// sample `(x / 2, y / 2)`). Packed formats are reordered; alpha/padding is
/// dropped. Strides larger than the row size are respected.
pub fn to_rgb(frame: &RawFrame) -> Result<RgbImage, FrameError> {
    frame.validate()?;
    let w = frame.width as usize;
    let h = frame.height as usize;
    let row_out = w * 3;
    let mut data = vec![0u8; row_out * h];
    let rows = data.chunks_exact_mut(row_out).enumerate();

    match frame.format {
        PixelFormat::I420 | PixelFormat::Yv12 => {
            let c = YuvCoeffs::new(frame.colorimetry);
            let (pu, pv) = if frame.format == PixelFormat::I420 {
                (1, 2)
            } else {
                (2, 1)
            };
            for (r, out) in rows {
                yuv_row(
                    &c,
                    frame.row(0, r),
                    out,
                    frame.row(pu, r / 2),
                    frame.row(pv, r / 2),
                );
            }
        }
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            // Deinterleaving each chroma row first keeps the per-pixel loop
            // identical to the planar one (which the compiler vectorizes).
            let c = YuvCoeffs::new(frame.colorimetry);
            let vu = frame.format == PixelFormat::Nv21;
            let cw = w.div_ceil(2);
            let (mut u, mut v) = (vec![0u8; cw], vec![0u8; cw]);
            for (r, out) in rows {
                if r % 2 == 0 {
                    deinterleave(frame.row(1, r / 2), vu, &mut u, &mut v);
                }
                yuv_row(&c, frame.row(0, r), out, &u, &v);
            }
        }
        PixelFormat::Rgb => {
            for (r, out) in rows {
                out.copy_from_slice(frame.row(0, r));
            }
        }
        f => {
            let conv: fn(&[u8], &mut [u8]) = match f {
                PixelFormat::Bgr => packed_row::<3, 2, 1, 0>,
                PixelFormat::Rgba | PixelFormat::Rgbx => packed_row::<4, 0, 1, 2>,
                PixelFormat::Bgra | PixelFormat::Bgrx => packed_row::<4, 2, 1, 0>,
                PixelFormat::Argb | PixelFormat::Xrgb => packed_row::<4, 1, 2, 3>,
                PixelFormat::Abgr | PixelFormat::Xbgr => packed_row::<4, 3, 2, 1>,
                PixelFormat::I420
                | PixelFormat::Yv12
                | PixelFormat::Nv12
                | PixelFormat::Nv21
                | PixelFormat::Rgb => unreachable!("handled above"),
            };
            for (r, out) in rows {
                conv(frame.row(0, r), out);
            }
        }
    }

    Ok(RgbImage {
        width: frame.width,
        height: frame.height,
        data,
    })
}

/// Output size for requested width/height where 0 = native; if exactly one
/// is 0 keep the aspect ratio (round to nearest, min 1); both 0 → native.
///
/// A degenerate native size (a 0 dimension) is treated as 1 when computing
/// the aspect ratio.
pub fn target_size(native_w: u32, native_h: u32, req_w: u32, req_h: u32) -> (u32, u32) {
    // round(num * mul / div), at least 1, saturating at u32::MAX.
    let scale = |num: u32, mul: u32, div: u32| -> u32 {
        let div = u64::from(div.max(1));
        let v = (u64::from(num) * u64::from(mul) + div / 2) / div;
        v.clamp(1, u64::from(u32::MAX)) as u32
    };
    match (req_w, req_h) {
        (0, 0) => (native_w, native_h),
        (w, 0) => (w, scale(native_h, w, native_w)),
        (0, h) => (scale(native_w, h, native_h), h),
        (w, h) => (w, h),
    }
}

/// Resizes packed RGB to `w` × `h` with fast_image_resize's convolution
/// bilinear filter (which antialiases when downscaling). Same size → returns
/// a clone without work.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> Result<RgbImage, FrameError> {
    img.check(FrameError::Resize)?;
    if w == 0 || h == 0 {
        return Err(FrameError::Resize(format!(
            "cannot resize {}x{} to empty size {w}x{h}",
            img.width, img.height
        )));
    }
    if (w, h) == (img.width, img.height) {
        return Ok(img.clone());
    }
    let src = ImageRef::new(img.width, img.height, &img.data, PixelType::U8x3)
        .map_err(|e| FrameError::Resize(format!("source image: {e}")))?;
    let mut dst = Image::new(w, h, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| FrameError::Resize(format!("{}x{} -> {w}x{h}: {e}", img.width, img.height)))?;
    Ok(RgbImage {
        width: w,
        height: h,
        data: dst.into_vec(),
    })
}

/// Encodes packed RGB as baseline JPEG.
///
/// `quality` is clamped to 1..=100. Chroma subsampling is the encoder's
/// default: 4:2:0 below quality 90, 4:4:4 from 90 up. JPEG limits each
/// dimension to 65535 pixels; larger images give [`FrameError::Encode`].
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, FrameError> {
    img.check(FrameError::Encode)?;
    let too_big = || {
        FrameError::Encode(format!(
            "{}x{} exceeds the JPEG limit of 65535 pixels per dimension",
            img.width, img.height
        ))
    };
    let w = u16::try_from(img.width).map_err(|_| too_big())?;
    let h = u16::try_from(img.height).map_err(|_| too_big())?;
    // A generous guess for typical photographic content; avoids most regrowth.
    let mut out = Vec::with_capacity(img.data.len() / 8 + 1024);
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.encode(&img.data, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(out)
}

/// The whole path used per sampled frame: [`to_rgb`] → [`resize`] to
/// [`target_size`]`(width, height, req_w, req_h)` → [`encode_jpeg`].
pub fn prepare_jpeg(
    frame: &RawFrame,
    req_w: u32,
    req_h: u32,
    quality: u8,
) -> Result<Vec<u8>, FrameError> {
    let rgb = prepare_rgb(frame, req_w, req_h)?;
    encode_jpeg(&rgb, quality)
}

/// Same as [`prepare_jpeg`] but stops before encoding and returns the RGB
/// image (for backends that want raw frames).
///
/// At the native size this is [`to_rgb`]. When the size changes, packed RGB
/// formats are converted and then [`resize`]d; 4:2:0 formats are resized
/// *before* conversion, as GStreamer's `videoscale ! videoconvert` does but
/// with the chroma taken straight to the output size: the Y plane and the
/// chroma (U and V planes, or the interleaved pairs) are each resized to
/// `w` × `h` with the same bilinear convolution, then every output pixel is
/// converted from its own Y, U and V. Converting only the output pixels is
/// several times faster than converting the whole decoder frame first.
pub fn prepare_rgb(frame: &RawFrame, req_w: u32, req_h: u32) -> Result<RgbImage, FrameError> {
    let (w, h) = target_size(frame.width, frame.height, req_w, req_h);
    if (w, h) == (frame.width, frame.height) {
        return to_rgb(frame);
    }
    if frame.format.is_yuv420() {
        return yuv420_resized_rgb(frame, w, h);
    }
    resize(&to_rgb(frame)?, w, h)
}

/// Plane `i` of a validated frame as a tight `width` × `height` image of
/// `bpp`-byte pixels, resized to `w` × `h` (vertical pass first, as
/// fast_image_resize does for 8-bit pixels). Same size: a tight copy.
fn resize_plane(
    frame: &RawFrame,
    i: usize,
    (width, height): (u32, u32),
    pt: PixelType,
    (w, h): (u32, u32),
) -> Result<Vec<u8>, FrameError> {
    let bpp = match pt {
        PixelType::U8x2 => 2,
        _ => 1,
    };
    let row = width as usize * bpp;
    let stride = frame.strides[i];
    let plane = &frame.planes[i];
    let tight: std::borrow::Cow<[u8]> = if stride == row {
        std::borrow::Cow::Borrowed(&plane[..row * height as usize])
    } else {
        std::borrow::Cow::Owned(
            (0..height as usize)
                .flat_map(|r| &plane[r * stride..r * stride + row])
                .copied()
                .collect(),
        )
    };
    if (w, h) == (width, height) {
        return Ok(tight.into_owned());
    }
    let err = |e: String| FrameError::Resize(format!("{width}x{height} plane -> {w}x{h}: {e}"));
    let src = ImageRef::new(width, height, &tight, pt).map_err(|e| err(e.to_string()))?;
    let mut dst = Image::new(w, h, pt);
    // U8x2 is luma + alpha to fast_image_resize: no alpha handling here.
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .use_alpha(false);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| err(e.to_string()))?;
    Ok(dst.into_vec())
}

/// 4:2:0 → resized packed RGB, see [`prepare_rgb`].
fn yuv420_resized_rgb(frame: &RawFrame, w: u32, h: u32) -> Result<RgbImage, FrameError> {
    frame.validate()?;
    if w == 0 || h == 0 {
        return Err(FrameError::Resize(format!(
            "cannot resize {}x{} to empty size {w}x{h}",
            frame.width, frame.height
        )));
    }
    let luma = (frame.width, frame.height);
    let chroma = (frame.width.div_ceil(2), frame.height.div_ceil(2));
    let y = resize_plane(frame, 0, luma, PixelType::U8, (w, h))?;
    let n = w as usize * h as usize;
    // (U, V) sample of output pixel i: u[i * su + ou], v[i * sv + ov].
    let (u, v, su, ou, ov);
    let uv;
    match frame.format {
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            uv = resize_plane(frame, 1, chroma, PixelType::U8x2, (w, h))?;
            (u, v, su) = (&uv[..], &uv[..], 2);
            (ou, ov) = if frame.format == PixelFormat::Nv12 {
                (0, 1)
            } else {
                (1, 0)
            };
        }
        _ => {
            let (pu, pv) = if frame.format == PixelFormat::I420 {
                (1, 2)
            } else {
                (2, 1)
            };
            let a = resize_plane(frame, pu, chroma, PixelType::U8, (w, h))?;
            let b = resize_plane(frame, pv, chroma, PixelType::U8, (w, h))?;
            uv = [a, b].concat();
            (u, v, su) = (&uv[..n], &uv[n..], 1);
            (ou, ov) = (0, 0);
        }
    }
    let c = YuvCoeffs::new(frame.colorimetry);
    let mut data = vec![0u8; n * 3];
    for (i, (out, &yy)) in data.chunks_exact_mut(3).zip(&y).enumerate() {
        c.put(yy, c.chroma(u[i * su + ou], v[i * su + ov]), out);
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CM: [Colorimetry; 6] = [
        Colorimetry {
            matrix: Matrix::Bt601,
            full_range: false,
        },
        Colorimetry {
            matrix: Matrix::Bt601,
            full_range: true,
        },
        Colorimetry {
            matrix: Matrix::Bt709,
            full_range: false,
        },
        Colorimetry {
            matrix: Matrix::Bt709,
            full_range: true,
        },
        Colorimetry {
            matrix: Matrix::Bt2020,
            full_range: false,
        },
        Colorimetry {
            matrix: Matrix::Bt2020,
            full_range: true,
        },
    ];

    /// Tiny deterministic PRNG (xorshift32) so tests need no extra crates.
    struct Rng(u32);
    impl Rng {
        fn next(&mut self) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 24) as u8
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.byte()).collect()
        }
    }

    /// Floating-point reference of the standard equations.
    fn ref_rgb(y: u8, u: u8, v: u8, c: Colorimetry) -> [f64; 3] {
        let (kr, kb) = c.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let (yf, pb, pr) = if c.full_range {
            (
                y as f64 / 255.0,
                (u as f64 - 128.0) / 255.0,
                (v as f64 - 128.0) / 255.0,
            )
        } else {
            (
                (y as f64 - 16.0) / 219.0,
                (u as f64 - 128.0) / 224.0,
                (v as f64 - 128.0) / 224.0,
            )
        };
        let r = yf + 2.0 * (1.0 - kr) * pr;
        let b = yf + 2.0 * (1.0 - kb) * pb;
        let g = (yf - kr * r - kb * b) / kg;
        [r, g, b].map(|x| (x * 255.0).clamp(0.0, 255.0))
    }

    /// A 1-plane-per-component I420 frame with tight strides.
    fn i420(w: u32, h: u32, y: Vec<u8>, u: Vec<u8>, v: Vec<u8>, cm: Colorimetry) -> RawFrame {
        let cw = (w as usize).div_ceil(2);
        RawFrame {
            format: PixelFormat::I420,
            width: w,
            height: h,
            planes: vec![y, u, v],
            strides: vec![w as usize, cw, cw],
            colorimetry: cm,
        }
    }

    /// A w×h I420 frame filled with one YUV triple.
    fn solid_i420(w: u32, h: u32, yuv: (u8, u8, u8), cm: Colorimetry) -> RawFrame {
        let (cw, ch) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
        i420(
            w,
            h,
            vec![yuv.0; w as usize * h as usize],
            vec![yuv.1; cw * ch],
            vec![yuv.2; cw * ch],
            cm,
        )
    }

    fn px(img: &RgbImage, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * img.width as usize + x as usize) * 3;
        [img.data[i], img.data[i + 1], img.data[i + 2]]
    }

    fn assert_close(got: [u8; 3], want: [f64; 3], tol: f64, what: &str) {
        for k in 0..3 {
            assert!(
                (got[k] as f64 - want[k]).abs() <= tol,
                "{what}: got {got:?}, want {want:?} (±{tol})"
            );
        }
    }

    fn convert_one(yuv: (u8, u8, u8), cm: Colorimetry) -> [u8; 3] {
        let img = to_rgb(&solid_i420(2, 2, yuv, cm)).unwrap();
        let p = px(&img, 0, 0);
        for (x, y) in [(1, 0), (0, 1), (1, 1)] {
            assert_eq!(px(&img, x, y), p);
        }
        p
    }

    /// Random I420 content plus the same content as every other YUV layout.
    fn random_yuv(w: u32, h: u32, seed: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (cw, ch) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
        let mut rng = Rng(seed);
        (
            rng.bytes(w as usize * h as usize),
            rng.bytes(cw * ch),
            rng.bytes(cw * ch),
        )
    }

    fn interleave(a: &[u8], b: &[u8]) -> Vec<u8> {
        a.iter().zip(b).flat_map(|(&a, &b)| [a, b]).collect()
    }

    /// Copies `rows` rows of `row_bytes` from a tight buffer into one with
    /// `stride`, filling padding with a marker value.
    fn pad(tight: &[u8], row_bytes: usize, stride: usize, fill: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for row in tight.chunks(row_bytes) {
            out.extend_from_slice(row);
            out.resize(out.len() + stride - row_bytes, fill);
        }
        out
    }

    #[test]
    fn limited_bt601_black_white_grey() {
        let cm = Colorimetry::default();
        assert_eq!(cm.matrix, Matrix::Bt601);
        assert!(!cm.full_range);
        assert_eq!(convert_one((16, 128, 128), cm), [0, 0, 0]);
        assert_eq!(convert_one((235, 128, 128), cm), [255, 255, 255]);
        // Mid grey: (126 - 16) * 255 / 219 = 128.08
        assert_eq!(convert_one((126, 128, 128), cm), [128, 128, 128]);
        // Out-of-range footroom/headroom clamps.
        assert_eq!(convert_one((0, 128, 128), cm), [0, 0, 0]);
        assert_eq!(convert_one((255, 128, 128), cm), [255, 255, 255]);
    }

    #[test]
    fn limited_primaries() {
        let bt709 = Colorimetry {
            matrix: Matrix::Bt709,
            full_range: false,
        };
        assert_close(
            convert_one((63, 102, 240), bt709),
            [255.0, 0.0, 0.0],
            2.0,
            "709 red",
        );
        // BT.709 green (173, 42, 26) and blue (32, 240, 118).
        assert_close(
            convert_one((173, 42, 26), bt709),
            [0.0, 255.0, 0.0],
            2.0,
            "709 green",
        );
        assert_close(
            convert_one((32, 240, 118), bt709),
            [0.0, 0.0, 255.0],
            2.0,
            "709 blue",
        );
        // BT.601 red (81, 90, 240).
        assert_close(
            convert_one((81, 90, 240), Colorimetry::default()),
            [255.0, 0.0, 0.0],
            2.0,
            "601 red",
        );
    }

    #[test]
    fn full_range_cases() {
        for m in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
            let cm = Colorimetry {
                matrix: m,
                full_range: true,
            };
            assert_eq!(convert_one((0, 128, 128), cm), [0, 0, 0], "{m:?}");
            assert_eq!(convert_one((255, 128, 128), cm), [255, 255, 255], "{m:?}");
            assert_eq!(convert_one((100, 128, 128), cm), [100, 100, 100], "{m:?}");
        }
        // Full-range BT.601 (JPEG/JFIF) red: Y=76, Cb=85, Cr=255.
        let jfif = Colorimetry {
            matrix: Matrix::Bt601,
            full_range: true,
        };
        assert_close(
            convert_one((76, 85, 255), jfif),
            [255.0, 0.0, 0.0],
            2.0,
            "full 601 red",
        );
        // Full-range BT.709 blue: Y = 0.0722*255 = 18.4, Cb = 255, Cr = 116.
        assert_close(
            convert_one(
                (18, 255, 116),
                Colorimetry {
                    matrix: Matrix::Bt709,
                    full_range: true,
                },
            ),
            [0.0, 0.0, 255.0],
            2.0,
            "full 709 blue",
        );
    }

    #[test]
    fn matches_float_reference_within_one() {
        let mut rng = Rng(0x1234_5678);
        for cm in ALL_CM {
            for _ in 0..3000 {
                let yuv = (rng.byte(), rng.byte(), rng.byte());
                let got = convert_one(yuv, cm);
                assert_close(got, ref_rgb(yuv.0, yuv.1, yuv.2, cm), 1.0, "reference");
            }
        }
    }

    #[test]
    fn matrices_differ() {
        let yuv = (120, 90, 200);
        let a = convert_one(yuv, ALL_CM[0]);
        let b = convert_one(yuv, ALL_CM[2]);
        let c = convert_one(yuv, ALL_CM[4]);
        assert_ne!(a, b);
        assert_ne!(b, c);
    }

    #[test]
    fn chroma_is_nearest_sample() {
        // 4x2 frame, two chroma samples: left half red-ish, right half blue-ish.
        let cm = ALL_CM[2];
        let f = i420(4, 2, vec![128; 8], vec![90, 240], vec![240, 110], cm);
        let img = to_rgb(&f).unwrap();
        let left = convert_one((128, 90, 240), cm);
        let right = convert_one((128, 240, 110), cm);
        for y in 0..2 {
            assert_eq!(px(&img, 0, y), left);
            assert_eq!(px(&img, 1, y), left);
            assert_eq!(px(&img, 2, y), right);
            assert_eq!(px(&img, 3, y), right);
        }
    }

    /// The same (Y, U, V) content as I420, YV12, NV12 and NV21 frames.
    fn yuv_layouts(w: u32, h: u32, y: &[u8], u: &[u8], v: &[u8], cm: Colorimetry) -> [RawFrame; 4] {
        let cw = (w as usize).div_ceil(2);
        let mk = |format, planes: Vec<Vec<u8>>, strides| RawFrame {
            format,
            width: w,
            height: h,
            planes,
            strides,
            colorimetry: cm,
        };
        let (y, u, v) = (y.to_vec(), u.to_vec(), v.to_vec());
        [
            mk(
                PixelFormat::I420,
                vec![y.clone(), u.clone(), v.clone()],
                vec![w as usize, cw, cw],
            ),
            mk(
                PixelFormat::Yv12,
                vec![y.clone(), v.clone(), u.clone()],
                vec![w as usize, cw, cw],
            ),
            mk(
                PixelFormat::Nv12,
                vec![y.clone(), interleave(&u, &v)],
                vec![w as usize, 2 * cw],
            ),
            mk(
                PixelFormat::Nv21,
                vec![y, interleave(&v, &u)],
                vec![w as usize, 2 * cw],
            ),
        ]
    }

    #[test]
    fn all_yuv_layouts_agree() {
        for (w, h) in [(16, 8), (5, 3), (1, 1), (7, 2), (2, 7)] {
            let (cw, _) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
            let (y, u, v) = random_yuv(w, h, 42 + w * 100 + h);
            for cm in ALL_CM {
                let base = to_rgb(&i420(w, h, y.clone(), u.clone(), v.clone(), cm)).unwrap();
                assert_eq!(base.data.len(), (w * h * 3) as usize);

                // Per-pixel check against the reference with nearest chroma.
                for py in 0..h {
                    for pxx in 0..w {
                        let ci = (py / 2) as usize * cw + (pxx / 2) as usize;
                        let want = ref_rgb(y[(py * w + pxx) as usize], u[ci], v[ci], cm);
                        assert_close(px(&base, pxx, py), want, 1.0, "pixel");
                    }
                }

                let [_, yv12, nv12, nv21] = yuv_layouts(w, h, &y, &u, &v, cm);
                for f in [yv12, nv12, nv21] {
                    assert_eq!(to_rgb(&f).unwrap(), base, "{:?} {w}x{h}", f.format);
                }
            }
        }
    }

    #[test]
    fn stride_padding_is_ignored() {
        for (w, h) in [(6, 4), (5, 3)] {
            let cw = (w as usize).div_ceil(2);
            let (y, u, v) = random_yuv(w, h, 7);
            let cm = ALL_CM[3];
            let tight = to_rgb(&i420(w, h, y.clone(), u.clone(), v.clone(), cm)).unwrap();

            let (ys, cs) = (w as usize + 13, cw + 9);
            let mut padded = i420(
                w,
                h,
                pad(&y, w as usize, ys, 0xEE),
                pad(&u, cw, cs, 0x00),
                pad(&v, cw, cs, 0xFF),
                cm,
            );
            padded.strides = vec![ys, cs, cs];
            assert_eq!(to_rgb(&padded).unwrap(), tight);

            // The last row may lack its padding.
            for p in padded.planes.iter_mut() {
                p.truncate(p.len() - 5);
            }
            assert_eq!(to_rgb(&padded).unwrap(), tight);

            // NV12 with padding too.
            let uv = interleave(&u, &v);
            let nv12 = RawFrame {
                format: PixelFormat::Nv12,
                width: w,
                height: h,
                planes: vec![pad(&y, w as usize, ys, 1), pad(&uv, 2 * cw, 2 * cw + 3, 2)],
                strides: vec![ys, 2 * cw + 3],
                colorimetry: cm,
            };
            assert_eq!(to_rgb(&nv12).unwrap(), tight);
        }
    }

    #[test]
    fn packed_formats_reorder_and_drop_alpha() {
        let (w, h) = (5u32, 3u32);
        let mut rng = Rng(99);
        let rgb = rng.bytes((w * h * 3) as usize);
        let expected = RgbImage {
            width: w,
            height: h,
            data: rgb.clone(),
        };
        for format in PixelFormat::ALL {
            let Some(bpp) = format.packed_bytes_per_pixel() else {
                continue;
            };
            // Byte offsets of R, G, B (and the filler) for each format.
            let (ri, gi, bi) = match format {
                PixelFormat::Rgb | PixelFormat::Rgba | PixelFormat::Rgbx => (0, 1, 2),
                PixelFormat::Bgr | PixelFormat::Bgra | PixelFormat::Bgrx => (2, 1, 0),
                PixelFormat::Argb | PixelFormat::Xrgb => (1, 2, 3),
                PixelFormat::Abgr | PixelFormat::Xbgr => (3, 2, 1),
                _ => unreachable!(),
            };
            let stride = w as usize * bpp + 7;
            let mut plane = vec![0xA5u8; stride * h as usize];
            for (i, p) in rgb.chunks_exact(3).enumerate() {
                let (x, y) = (i % w as usize, i / w as usize);
                let o = y * stride + x * bpp;
                plane[o + ri] = p[0];
                plane[o + gi] = p[1];
                plane[o + bi] = p[2];
            }
            let frame = RawFrame {
                format,
                width: w,
                height: h,
                planes: vec![plane],
                strides: vec![stride],
                colorimetry: Colorimetry::default(),
            };
            assert_eq!(to_rgb(&frame).unwrap(), expected, "{format}");
        }
    }

    #[test]
    fn format_helpers() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_name(f.name()), Some(f));
            assert_eq!(f.plane_row_bytes(f.n_planes(), 10), 0);
            assert_eq!(f.plane_rows(f.n_planes(), 10), 0);
        }
        assert_eq!(PixelFormat::from_name("i420"), None);
        assert_eq!(PixelFormat::I420.plane_row_bytes(1, 5), 3);
        assert_eq!(PixelFormat::I420.plane_rows(2, 3), 2);
        assert_eq!(PixelFormat::Nv21.plane_row_bytes(1, 5), 6);
        assert_eq!(PixelFormat::Xbgr.plane_row_bytes(0, 5), 20);
        assert_eq!(PixelFormat::Bgr.plane_row_bytes(0, 5), 15);
    }

    #[test]
    fn bad_layouts_are_rejected() {
        let good = solid_i420(5, 3, (100, 128, 128), ALL_CM[0]);
        assert_eq!(good.validate(), Ok(()));

        let expect_bad = |f: &RawFrame, needle: &str| {
            for r in [f.validate(), to_rgb(f).map(|_| ())] {
                match r {
                    Err(FrameError::BadLayout(m)) => {
                        assert!(m.contains(needle), "message {m:?} lacks {needle:?}")
                    }
                    other => panic!("expected BadLayout({needle}), got {other:?}"),
                }
            }
        };

        let mut f = good.clone();
        f.planes.pop();
        expect_bad(&f, "3 plane(s)");

        let mut f = good.clone();
        f.strides.push(3);
        expect_bad(&f, "3 stride(s)");

        let mut f = good.clone();
        f.strides[0] = 4;
        expect_bad(&f, "stride 4 is smaller");

        let mut f = good.clone();
        f.planes[2].pop(); // chroma is 3x2 = 6 bytes
        expect_bad(&f, "plane 2 has 5 bytes, needs at least 6");

        let mut f = good.clone();
        f.planes[0].truncate(14);
        expect_bad(&f, "plane 0 has 14 bytes");

        let mut f = good.clone();
        f.width = 0;
        expect_bad(&f, "empty dimension");

        let mut f = good.clone();
        f.format = PixelFormat::Nv12;
        expect_bad(&f, "2 plane(s)");

        // Wrong format for the data: RGBx claims 4 bytes per pixel.
        let f = RawFrame {
            format: PixelFormat::Rgbx,
            width: 4,
            height: 2,
            planes: vec![vec![0; 24]],
            strides: vec![12],
            colorimetry: Colorimetry::default(),
        };
        expect_bad(&f, "stride 12 is smaller than its row size 16");

        let f = RawFrame {
            format: PixelFormat::Rgb,
            width: 4,
            height: 2,
            planes: vec![vec![0; 23]],
            strides: vec![12],
            colorimetry: Colorimetry::default(),
        };
        expect_bad(&f, "needs at least 24");

        // Overflowing stride arithmetic is an error, not a panic.
        let f = RawFrame {
            format: PixelFormat::Rgb,
            width: 4,
            height: 3,
            planes: vec![vec![0; 36]],
            strides: vec![usize::MAX],
            colorimetry: Colorimetry::default(),
        };
        expect_bad(&f, "overflows");

        let e = FrameError::BadLayout("x".into());
        assert_eq!(e.to_string(), "bad frame layout: x");
    }

    #[test]
    fn target_size_cases() {
        assert_eq!(target_size(1920, 1080, 0, 0), (1920, 1080));
        assert_eq!(target_size(1920, 1080, 640, 0), (640, 360));
        assert_eq!(target_size(1920, 1080, 0, 480), (853, 480)); // 853.33
        assert_eq!(target_size(1920, 1080, 448, 448), (448, 448));
        assert_eq!(target_size(1920, 1080, 0, 481), (855, 481)); // 855.11
        assert_eq!(target_size(1280, 720, 0, 361), (642, 361)); // 641.78 rounds up
        assert_eq!(target_size(1920, 1080, 1, 0), (1, 1)); // 0.56 → 1
        assert_eq!(target_size(10000, 10, 100, 0), (100, 1)); // 0.1 → min 1
        assert_eq!(target_size(640, 480, 1280, 0), (1280, 960)); // upscaling allowed
        assert_eq!(target_size(0, 0, 100, 0), (100, 1));
    }

    #[test]
    fn resize_solid_stays_solid() {
        let img = RgbImage {
            width: 64,
            height: 48,
            data: [10u8, 200, 77].repeat(64 * 48),
        };
        for (w, h) in [(16, 12), (100, 30), (1, 1), (64, 47)] {
            let out = resize(&img, w, h).unwrap();
            assert_eq!((out.width, out.height), (w, h));
            assert_eq!(out.data.len(), (w * h * 3) as usize);
            for p in out.data.chunks_exact(3) {
                assert_close([p[0], p[1], p[2]], [10.0, 200.0, 77.0], 1.0, "solid");
            }
        }
        assert_eq!(resize(&img, 64, 48).unwrap(), img);
        assert!(matches!(resize(&img, 0, 10), Err(FrameError::Resize(_))));
        let broken = RgbImage {
            width: 4,
            height: 4,
            data: vec![0; 47],
        };
        assert!(matches!(resize(&broken, 2, 2), Err(FrameError::Resize(_))));
    }

    #[test]
    fn resize_downscale_averages() {
        // Vertical stripes 0/255 one pixel wide average to mid grey at 1/4.
        let (w, h) = (64u32, 8u32);
        let data: Vec<u8> = (0..w * h)
            .flat_map(|i| [if i % 2 == 0 { 0 } else { 255 }; 3])
            .collect();
        let out = resize(
            &RgbImage {
                width: w,
                height: h,
                data,
            },
            16,
            2,
        )
        .unwrap();
        for &b in &out.data {
            assert!((b as i32 - 128).abs() <= 20, "not antialiased: {b}");
        }
    }

    /// A smooth I420 frame (gradients) and the same content in the other
    /// 4:2:0 layouts.
    fn smooth_yuv_layouts(w: u32, h: u32) -> Vec<RawFrame> {
        let (cw, ch) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
        let y: Vec<u8> = (0..w as usize * h as usize)
            .map(|i| (16 + (i % w as usize) * 200 / w as usize + i / w as usize % 20) as u8)
            .collect();
        let u: Vec<u8> = (0..cw * ch)
            .map(|i| (60 + (i / cw) * 120 / ch) as u8)
            .collect();
        let v: Vec<u8> = (0..cw * ch)
            .map(|i| (200 - (i % cw) * 120 / cw) as u8)
            .collect();
        let cm = Colorimetry {
            matrix: Matrix::Bt709,
            full_range: false,
        };
        yuv_layouts(w, h, &y, &u, &v, cm).to_vec()
    }

    /// 4:2:0 frames are resized before conversion: every layout gives the
    /// same pixels, and they stay close to converting first and resizing
    /// the RGB (the order GStreamer's videoconvert ! videoscale uses).
    #[test]
    fn yuv_resized_before_conversion() {
        for (w, h, ow, oh) in [
            (640u32, 360u32, 224u32, 126u32),
            (101, 57, 300, 170),
            (64, 48, 64, 20),
        ] {
            let layouts = smooth_yuv_layouts(w, h);
            let first = prepare_rgb(&layouts[0], ow, oh).unwrap();
            assert_eq!((first.width, first.height), (ow, oh));
            for f in &layouts[1..] {
                assert_eq!(prepare_rgb(f, ow, oh).unwrap(), first, "{}", f.format);
            }
            let converted_first = resize(&to_rgb(&layouts[0]).unwrap(), ow, oh).unwrap();
            let diffs: Vec<i32> = first
                .data
                .iter()
                .zip(&converted_first.data)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            assert!(mean < 1.5, "{w}x{h} -> {ow}x{oh}: mean difference {mean}");
        }
    }

    fn decode(jpeg: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut d = zune_jpeg::JpegDecoder::new(jpeg);
        let pixels = d.decode().expect("decodes");
        let info = d.info().unwrap();
        (info.width as u32, info.height as u32, pixels)
    }

    fn mean(rgb: &[u8]) -> [f64; 3] {
        let n = (rgb.len() / 3) as f64;
        let mut s = [0f64; 3];
        for p in rgb.chunks_exact(3) {
            for k in 0..3 {
                s[k] += p[k] as f64;
            }
        }
        s.map(|v| v / n)
    }

    #[test]
    fn encode_jpeg_roundtrips_solid_colour() {
        for (w, h, q) in [(64u32, 48u32, 85u8), (33, 17, 95), (8, 8, 1), (1, 1, 100)] {
            let img = RgbImage {
                width: w,
                height: h,
                data: [200u8, 60, 30].repeat((w * h) as usize),
            };
            let jpeg = encode_jpeg(&img, q).unwrap();
            assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
            let (dw, dh, px) = decode(&jpeg);
            assert_eq!((dw, dh), (w, h));
            assert_eq!(px.len(), (w * h * 3) as usize);
            // Quality 1 quantizes the DC coefficients very coarsely.
            let tol = if q < 10 { 30.0 } else { 3.0 };
            for (m, want) in mean(&px).into_iter().zip([200.0, 60.0, 30.0]) {
                assert!((m - want).abs() <= tol, "q{q}: mean {m} vs {want}");
            }
        }
        // Quality 0 is clamped rather than rejected.
        let img = RgbImage {
            width: 8,
            height: 8,
            data: vec![128; 192],
        };
        assert!(encode_jpeg(&img, 0).is_ok());
    }

    #[test]
    fn encode_jpeg_rejects_bad_images() {
        let wide = RgbImage {
            width: 70000,
            height: 1,
            data: vec![0; 70000 * 3],
        };
        match encode_jpeg(&wide, 80) {
            Err(FrameError::Encode(m)) => assert!(m.contains("65535"), "{m}"),
            other => panic!("{other:?}"),
        }
        let short = RgbImage {
            width: 2,
            height: 2,
            data: vec![0; 11],
        };
        assert!(matches!(
            encode_jpeg(&short, 80),
            Err(FrameError::Encode(_))
        ));
        let empty = RgbImage {
            width: 0,
            height: 2,
            data: vec![],
        };
        assert!(matches!(
            encode_jpeg(&empty, 80),
            Err(FrameError::Encode(_))
        ));
    }

    #[test]
    fn prepare_end_to_end() {
        // 320x180 BT.709 limited NV12 frame of pure red (63, 102, 240).
        let (w, h) = (320u32, 180u32);
        let (cw, ch) = (160usize, 90usize);
        let frame = RawFrame {
            format: PixelFormat::Nv12,
            width: w,
            height: h,
            planes: vec![vec![63; (w * h) as usize], [102u8, 240].repeat(cw * ch)],
            strides: vec![w as usize, 2 * cw],
            colorimetry: Colorimetry {
                matrix: Matrix::Bt709,
                full_range: false,
            },
        };

        let rgb = prepare_rgb(&frame, 0, 0).unwrap();
        assert_eq!((rgb.width, rgb.height), (w, h));
        assert_eq!(rgb, to_rgb(&frame).unwrap());

        let small = prepare_rgb(&frame, 160, 0).unwrap();
        assert_eq!((small.width, small.height), (160, 90));
        assert_close(px(&small, 80, 45), [255.0, 0.0, 0.0], 2.0, "resized");

        for (rw, rh, ew, eh) in [
            (0, 0, 320, 180),
            (160, 0, 160, 90),
            (0, 90, 160, 90),
            (64, 64, 64, 64),
        ] {
            let jpeg = prepare_jpeg(&frame, rw, rh, 85).unwrap();
            let (dw, dh, px) = decode(&jpeg);
            assert_eq!((dw, dh), (ew, eh));
            let m = mean(&px);
            assert!(m[0] > 245.0 && m[1] < 10.0 && m[2] < 10.0, "{m:?}");
        }

        let mut broken = frame.clone();
        broken.planes.truncate(1);
        assert!(matches!(
            prepare_jpeg(&broken, 0, 0, 80),
            Err(FrameError::BadLayout(_))
        ));
    }
}
