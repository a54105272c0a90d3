// Group norm and layer norm (with optional fused SiLU or ReLU), one workgroup per normalised segment.
//
// Segment s covers x[s * seg_len .. (s + 1) * seg_len]. Element e of segment s belongs to
// channel (s % groups) * ch_per_group + e / spatial, which picks its gamma and beta (f32).
//   group norm  x [B, C, H·W]: seg_len = C/G·H·W, groups = G, ch_per_group = C/G, spatial = H·W
//   layer norm  x [rows, D]:   seg_len = D,       groups = 1, ch_per_group = D,   spatial = 1
// Mean first, then the variance from the deviations (two passes: stable for large segments).
//
// Long segments few in number (the VAE decoder's group norms at 512x512: 32 segments of a
// million values) would leave most of a GPU idle with one workgroup each; they go through
// `chunk_stats` (one workgroup per chunk of `chunk_len` values: its mean and sum of squared
// deviations) and `chunk_apply` (each chunk's workgroup merges its segment's chunk statistics,
// Chan et al.'s pairwise formula, then normalises its chunk).

struct Params {
    seg_len: u32,
    groups: u32,
    ch_per_group: u32,
    spatial: u32,
    eps: f32,
    segments_per_row: u32,
    segments: u32,
    // Chunked path only.
    chunk_len: u32,
    chunks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
// Chunked path: (mean, sum of squared deviations) per chunk, segment-major.
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;

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

    normalize(s, start, start + n, mean, rstd, local);
}

// y = affine((x − mean) · rstd) (+ SiLU / ReLU) over elements [first, end) of segment s.
fn normalize(s: u32, first: u32, end: u32, mean: f32, rstd: f32, local: u32) {
    let start = s * params.seg_len;
    let channel_base = (s % params.groups) * params.ch_per_group;
    for (var i = first + local; i < end; i += THREADS) {
        let c = channel_base + (i - start) / params.spatial;
        var v = (f32(x[i]) - mean) * rstd * gamma[c] + beta[c];
#if FUSE_SILU
        v = v / (1.0 + exp(-v));
#endif
#if FUSE_RELU
        v = max(v, 0.0);
#endif
        y[i] = act(v);
    }
}

// Elements [first, end) of chunk `chunk` of segment `s`, and how many there are.
fn chunk_range(s: u32, chunk: u32) -> vec3<u32> {
    let start = s * params.seg_len;
    let first = start + chunk * params.chunk_len;
    let end = min(first + params.chunk_len, start + params.seg_len);
    return vec3<u32>(first, end, end - first);
}

// Grid (chunks, segments).
@compute @workgroup_size(256, 1, 1)
fn chunk_stats(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let r = chunk_range(group.y, group.x);
    var sum = 0.0;
    for (var i = r.x + local; i < r.y; i += THREADS) {
        sum += f32(x[i]);
    }
    let mean = reduce_sum(local, sum) / f32(r.z);
    var squares = 0.0;
    for (var i = r.x + local; i < r.y; i += THREADS) {
        let d = f32(x[i]) - mean;
        squares += d * d;
    }
    let m2 = reduce_sum(local, squares);
    if (local == 0u) {
        stats[group.y * params.chunks + group.x] = vec2<f32>(mean, m2);
    }
}

// Grid (chunks, segments).
@compute @workgroup_size(256, 1, 1)
fn chunk_apply(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = group.y;
    let n = f32(params.seg_len);
    var weighted = 0.0;
    for (var c = local; c < params.chunks; c += THREADS) {
        weighted += f32(chunk_range(s, c).z) * stats[s * params.chunks + c].x;
    }
    let mean = reduce_sum(local, weighted) / n;
    var m2 = 0.0;
    for (var c = local; c < params.chunks; c += THREADS) {
        let st = stats[s * params.chunks + c];
        let d = st.x - mean;
        m2 += st.y + f32(chunk_range(s, c).z) * d * d;
    }
    let rstd = inverseSqrt(reduce_sum(local, m2) / n + params.eps);
    let r = chunk_range(s, group.x);
    normalize(s, r.x, r.y, mean, rstd, local);
}
