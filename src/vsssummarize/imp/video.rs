// SPDX-License-Identifier: MPL-2.0
//! GStreamer video → [`RawFrame`]: the formats the sink pad takes, their
//! colorimetry, and the copy of one sampled frame.

use super::*;

pub(super) const FORMATS: &[gst_video::VideoFormat] = &[
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Yv12,
    gst_video::VideoFormat::Nv12,
    gst_video::VideoFormat::Nv21,
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
];

pub(super) fn pixel_format(f: gst_video::VideoFormat) -> Option<PixelFormat> {
    use gst_video::VideoFormat as V;
    Some(match f {
        V::I420 => PixelFormat::I420,
        V::Yv12 => PixelFormat::Yv12,
        V::Nv12 => PixelFormat::Nv12,
        V::Nv21 => PixelFormat::Nv21,
        V::Rgb => PixelFormat::Rgb,
        V::Bgr => PixelFormat::Bgr,
        V::Rgba => PixelFormat::Rgba,
        V::Bgra => PixelFormat::Bgra,
        V::Rgbx => PixelFormat::Rgbx,
        V::Bgrx => PixelFormat::Bgrx,
        V::Xrgb => PixelFormat::Xrgb,
        V::Xbgr => PixelFormat::Xbgr,
        V::Argb => PixelFormat::Argb,
        V::Abgr => PixelFormat::Abgr,
        _ => return None,
    })
}

pub(super) fn colorimetry(info: &gst_video::VideoInfo) -> Colorimetry {
    let c = info.colorimetry();
    let matrix = match c.matrix() {
        gst_video::VideoColorMatrix::Bt709 => Matrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => Matrix::Bt2020,
        gst_video::VideoColorMatrix::Bt601 => Matrix::Bt601,
        // Unknown: GStreamer's own default (BT.709 for HD, BT.601 for SD).
        _ if info.height() >= 720 => Matrix::Bt709,
        _ => Matrix::Bt601,
    };
    Colorimetry {
        matrix,
        full_range: c.range() == gst_video::VideoColorRange::Range0_255,
    }
}

/// Copies one mapped video frame (all planes, with their strides).
pub(super) fn copy_frame(
    buffer: &gst::Buffer,
    info: &gst_video::VideoInfo,
    format: PixelFormat,
    colorimetry: Colorimetry,
) -> Option<RawFrame> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).ok()?;
    let mut planes = Vec::with_capacity(frame.n_planes() as usize);
    let mut strides = Vec::with_capacity(frame.n_planes() as usize);
    for p in 0..frame.n_planes() {
        let stride = frame.plane_stride()[p as usize] as usize;
        let data = frame.plane_data(p).ok()?;
        let h = info.height() as usize;
        let rows = match format {
            // 4:2:0 chroma planes are half height.
            PixelFormat::I420 | PixelFormat::Yv12 | PixelFormat::Nv12 | PixelFormat::Nv21
                if p > 0 =>
            {
                h.div_ceil(2)
            }
            _ => h,
        };
        let len = (stride * rows).min(data.len());
        planes.push(data[..len].to_vec());
        strides.push(stride);
    }
    Some(RawFrame {
        format,
        width: info.width(),
        height: info.height(),
        planes,
        strides,
        colorimetry,
    })
}

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: f64 = 2_208_988_800.0;

/// The buffer's NTP reference timestamp (`timestamp/x-ntp`, as rtspsrc
/// attaches with `add-reference-timestamp-meta=true`) as Unix seconds; a
/// value before 1970 or after 2200 is ignored.
pub(super) fn ntp_unix_seconds(buffer: &gst::BufferRef) -> Option<f64> {
    buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| {
            m.reference()
                .structure(0)
                .is_some_and(|s| s.name() == "timestamp/x-ntp")
        })
        .map(|m| m.timestamp().nseconds() as f64 / 1e9 - NTP_UNIX_OFFSET_S)
        .filter(|u| (0.0..7_258_118_400.0).contains(u))
}
