// SPDX-License-Identifier: MPL-2.0
// vsssummarize GPU frame preparation kernels.
//
// Compiled by NVRTC at run time (src/prep/cuda/exec.rs) for the GPU found, and by
// the host C++ compiler in the tests (tests/gpu_emulated.rs, with the launch
// emulation shim in tests/gpu/emu.cpp), which checks these exact sources
// against the CPU path without a GPU. Keep them plain: no shared memory, no
// __syncthreads, no warp intrinsics, one output element per thread, integer
// arithmetic wherever the CPU path is integer.
//
// Every kernel takes one struct by value; the structs mirror the #[repr(C)]
// ones in src/prep/cuda/plan.rs field by field.

typedef unsigned char vss_u8;
typedef unsigned long long vss_ptr;

// A frame (or an intermediate packed RGB image) in device memory.
// kind 0: planar 4:2:0, p1 = U plane, p2 = V plane.
// kind 1: semi-planar 4:2:0, p1 = interleaved chroma pairs, U at byte
//         c0 and V at byte c1 of each pair.
// kind 2: packed, bpp bytes per pixel, R/G/B at bytes c0/c1/c2.
// kind 3: planar 4:4:4 (chroma already at the luma size), p1 = U, p2 = V.
// kind 4: semi-planar 4:4:4, p1 = pairs, U at byte c0 and V at byte c1.
struct VssSrc {
    vss_ptr p0, p1, p2;
    int s0, s1, s2;
    int kind, bpp, c0, c1, c2;
    // YUV -> RGB in fixed point 2^13 (src/frames.rs YuvCoeffs).
    int y_off, y_mul, rv, gu, gv, bu;
    int width, height;
};

struct VssConvert {
    VssSrc src;
    vss_ptr dst;  // packed RGB, width*3 bytes per row
};

// Integer filter taps of one separable pass:
// out = clamp((sum w*in + round) >> precision).
struct VssTaps {
    vss_ptr starts;   // int32 [n]: first source index of each output index
    vss_ptr counts;   // int32 [n]: number of taps
    vss_ptr weights;  // int32 [n * window]
    int window, precision;
};

// One pass over a frame or packed RGB image (conversion inside).
struct VssResize {
    VssSrc src;
    vss_ptr dst;  // packed RGB out_w x out_h
    VssTaps taps;
    int out_w, out_h, vertical, pad_;
};

// One separable pass over a raw 8-bit plane of `channels` interleaved
// samples per pixel (Y, U, V, or NV12's UV pairs), same arithmetic as
// VssResize; the output is tight (out_w * channels bytes per row).
struct VssPlaneResize {
    vss_ptr src;
    vss_ptr dst;
    VssTaps taps;
    int src_stride, channels, out_w, out_h, vertical, pad_;
};

// Normalise + patchify (Qwen2.5-VL pixel_values) from n_frames packed RGB
// frames stored back to back (w*h*3 bytes each).
struct VssPatchify {
    vss_ptr frames;
    vss_ptr out;  // float32 [rows * cols]
    int n_frames, w, h, ps, tps, ms, rows, cols;
    float div[3];    // 255 * std: torch divides (tvF.normalize)
    float shift[3];  // 255 * mean
};

__device__ __forceinline__ int vss_clamp8(int v) {
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

// Output index i's first input, tap count and weights.
__device__ __forceinline__ const int *vss_taps(const VssTaps &t, int i, int *start, int *n) {
    *start = ((const int *)t.starts)[i];
    *n = ((const int *)t.counts)[i];
    return (const int *)t.weights + (long long)i * t.window;
}

__device__ __forceinline__ vss_u8 vss_round(long long acc, int precision) {
    long long v = (acc + (precision > 0 ? (1LL << (precision - 1)) : 0)) >> precision;
    return (vss_u8)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

__device__ __forceinline__ void vss_load(const VssSrc &s, int x, int y, int *rgb) {
    const vss_u8 *p0 = (const vss_u8 *)s.p0;
    if (s.kind == 2) {
        const vss_u8 *p = p0 + (long long)y * s.s0 + (long long)x * s.bpp;
        rgb[0] = p[s.c0];
        rgb[1] = p[s.c1];
        rgb[2] = p[s.c2];
        return;
    }
    int Y = p0[(long long)y * s.s0 + x];
    int cx = s.kind >= 3 ? x : x >> 1, cy = s.kind >= 3 ? y : y >> 1;
    int U, V;
    if (s.kind == 0 || s.kind == 3) {
        U = ((const vss_u8 *)s.p1)[(long long)cy * s.s1 + cx];
        V = ((const vss_u8 *)s.p2)[(long long)cy * s.s2 + cx];
    } else {
        const vss_u8 *c = (const vss_u8 *)s.p1 + (long long)cy * s.s1 + 2 * cx;
        U = c[s.c0];
        V = c[s.c1];
    }
    int yy = (Y - s.y_off) * s.y_mul + 4096;
    int u = U - 128, v = V - 128;
    rgb[0] = vss_clamp8((yy + s.rv * v) >> 13);
    rgb[1] = vss_clamp8((yy - (s.gu * u + s.gv * v)) >> 13);
    rgb[2] = vss_clamp8((yy + s.bu * u) >> 13);
}

extern "C" __global__ void vss_convert(VssConvert a) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= a.src.width || y >= a.src.height) return;
    int rgb[3];
    vss_load(a.src, x, y, rgb);
    vss_u8 *o = (vss_u8 *)a.dst + ((long long)y * a.src.width + x) * 3;
    o[0] = (vss_u8)rgb[0];
    o[1] = (vss_u8)rgb[1];
    o[2] = (vss_u8)rgb[2];
}

extern "C" __global__ void vss_resize(VssResize a) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= a.out_w || y >= a.out_h) return;
    int start, n;
    const int *w = vss_taps(a.taps, a.vertical ? y : x, &start, &n);
    long long acc[3] = {0, 0, 0};
    int rgb[3];
    for (int k = 0; k < n; k++) {
        if (a.vertical)
            vss_load(a.src, x, start + k, rgb);
        else
            vss_load(a.src, start + k, y, rgb);
        long long wk = w[k];
        acc[0] += wk * rgb[0];
        acc[1] += wk * rgb[1];
        acc[2] += wk * rgb[2];
    }
    vss_u8 *o = (vss_u8 *)a.dst + ((long long)y * a.out_w + x) * 3;
    for (int c = 0; c < 3; c++) o[c] = vss_round(acc[c], a.taps.precision);
}

extern "C" __global__ void vss_resize_plane(VssPlaneResize a) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= a.out_w || y >= a.out_h) return;
    int start, n;
    const int *w = vss_taps(a.taps, a.vertical ? y : x, &start, &n);
    const vss_u8 *src = (const vss_u8 *)a.src;
    vss_u8 *o = (vss_u8 *)a.dst + ((long long)y * a.out_w + x) * a.channels;
    for (int c = 0; c < a.channels; c++) {
        long long acc = 0;
        for (int k = 0; k < n; k++) {
            long long off = a.vertical
                ? (long long)(start + k) * a.src_stride + (long long)x * a.channels
                : (long long)y * a.src_stride + (long long)(start + k) * a.channels;
            acc += (long long)w[k] * src[off + c];
        }
        o[c] = vss_round(acc, a.taps.precision);
    }
}

extern "C" __global__ void vss_patchify(VssPatchify a) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)a.rows * a.cols) return;
    int r = (int)(idx / a.cols), col = (int)(idx % a.cols);
    int gh = a.h / a.ps, gw = a.w / a.ps;
    int per_frame = gh * gw;
    int g = r / per_frame;
    int rem = r % per_frame;
    int mm = a.ms * a.ms;
    int block_row = (gw / a.ms) * mm;
    int bh = rem / block_row;
    rem %= block_row;
    int bw = rem / mm;
    rem %= mm;
    int mh = rem / a.ms, mw = rem % a.ms;
    int pp = a.ps * a.ps;
    int c = col / (a.tps * pp);
    int tp = (col / pp) % a.tps;
    int py = (col / a.ps) % a.ps, px = col % a.ps;
    int f = g * a.tps + tp;
    if (f > a.n_frames - 1) f = a.n_frames - 1;
    int y = (bh * a.ms + mh) * a.ps + py;
    int x = (bw * a.ms + mw) * a.ps + px;
    const vss_u8 *img = (const vss_u8 *)a.frames + (long long)f * a.w * a.h * 3;
    float v = (float)img[((long long)y * a.w + x) * 3 + c];
    ((float *)a.out)[idx] = (v - a.shift[c]) / a.div[c];
}
