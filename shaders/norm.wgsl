// Group norm and layer norm (with optional fused SiLU or ReLU), one workgroup per normalised segment.
//
// Segment s covers x[s * seg_len .. (s + 1) * seg_len]. Element e of segment s belongs to
// channel (s % groups) * ch_per_group + e / spatial, which picks its gamma and beta (f32).
//   group norm  x [B, C, H·W]: seg_len = C/G·H·W, groups = G, ch_per_group = C/G, spatial = H·W
//   layer norm  x [rows, D]:   seg_len = D,       groups = 1, ch_per_group = D,   spatial = 1
// Mean first, then the variance from the deviations (two passes: stable for large segments).

struct Params {
    seg_len: u32,
    groups: u32,
    ch_per_group: u32,
    spatial: u32,
    eps: f32,
    segments_per_row: u32,
    segments: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;

const THREADS: u32 = 256u;

#include workgroup_reduce.wgsl

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = group.y * params.segments_per_row + group.x;
    // Uniform per workgroup (it depends only on the workgroup id), so barriers stay legal.
    if (s >= params.segments) {
        return;
    }
    let start = s * params.seg_len;
    let n = params.seg_len;

    var sum = 0.0;
    for (var e = local; e < n; e += THREADS) {
        sum += f32(x[start + e]);
    }
    let mean = reduce_sum(local, sum) / f32(n);

    var squares = 0.0;
    for (var e = local; e < n; e += THREADS) {
        let d = f32(x[start + e]) - mean;
        squares += d * d;
    }
    let rstd = inverseSqrt(reduce_sum(local, squares) / f32(n) + params.eps);

    let channel_base = (s % params.groups) * params.ch_per_group;
    for (var e = local; e < n; e += THREADS) {
        let c = channel_base + e / params.spatial;
        var v = (f32(x[start + e]) - mean) * rstd * gamma[c] + beta[c];
#if FUSE_SILU
        v = v / (1.0 + exp(-v));
#endif
#if FUSE_RELU
        v = max(v, 0.0);
#endif
        y[start + e] = act(v);
    }
}
