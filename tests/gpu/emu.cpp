// SPDX-License-Identifier: MPL-2.0
// Runs src/prep/cuda/kernels.cu on the host CPU: the CUDA built-ins become
// thread-locals and each launch loops over the grid and block, one "thread"
// at a time. The kernels use no shared memory, synchronisation or warp
// intrinsics, so this executes exactly the arithmetic a GPU would (apart
// from floating-point contraction, which NVRTC is told not to do either).
// Built and loaded by tests/gpu_emulated.rs.

struct vss_dim3 {
    unsigned x, y, z;
};
static thread_local vss_dim3 blockIdx, blockDim, threadIdx, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline

#include "../../src/prep/cuda/kernels.cu"

#define VSS_EMU(name, T)                                                        \
    extern "C" void emu_##name(const T *a, unsigned gx, unsigned gy,            \
                               unsigned bx, unsigned by) {                      \
        gridDim = {gx, gy, 1};                                                  \
        blockDim = {bx, by, 1};                                                 \
        for (unsigned j = 0; j < gy; j++)                                       \
            for (unsigned i = 0; i < gx; i++)                                   \
                for (unsigned ty = 0; ty < by; ty++)                            \
                    for (unsigned tx = 0; tx < bx; tx++) {                      \
                        blockIdx = {i, j, 0};                                   \
                        threadIdx = {tx, ty, 0};                                \
                        name(*a);                                               \
                    }                                                           \
    }

VSS_EMU(vss_convert, VssConvert)
VSS_EMU(vss_resize, VssResize)
VSS_EMU(vss_resize_plane, VssPlaneResize)
VSS_EMU(vss_patchify, VssPatchify)

extern "C" unsigned emu_sizeof(int which) {
    switch (which) {
    case 0: return sizeof(VssSrc);
    case 1: return sizeof(VssConvert);
    case 2: return sizeof(VssResize);
    case 3: return sizeof(VssPatchify);
    default: return sizeof(VssPlaneResize);
    }
}
