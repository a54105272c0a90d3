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
//
// Group norm over an image held as tiles (the tiled VAE decode): `part_stats` writes each
// chunk's (count, mean, sum of squared deviations) of one tile [1, C, h, w] into `parts` at
// `part_offset` of every group's `parts` entries; once every tile has written its entries,
// `part_apply` merges a group's entries (the same pairwise formula) and normalises a tile — one
// with a border from its neighbours as well — with the whole image's statistics.

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
    // Tiled path only: where this tile's entries start, and entries per group in all.
    part_offset: u32,
    parts: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
// Chunked path: (mean, sum of squared deviations) per chunk, segment-major.
@group(0) @binding(5) var<storage, read_write> stats: array<vec2<f32>>;
// Tiled path: (count, mean, sum of squared deviations, 0) per chunk of each tile, group-major.
@group(0) @binding(6) var<storage, read_write> parts: array<vec4<f32>>;

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

// The mean and the sum of squared deviations of elements r.x..r.y (r.z of them).
fn moments(r: vec3<u32>, local: u32) -> vec2<f32> {
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
    return vec2<f32>(mean, reduce_sum(local, squares));
}

// Grid (chunks, segments).
@compute @workgroup_size(256, 1, 1)
fn chunk_stats(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let m = moments(chunk_range(group.y, group.x), local);
    if (local == 0u) {
        stats[group.y * params.chunks + group.x] = m;
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

// Grid (chunks, groups) over one tile [1, C, h, w]: seg_len = C/G·h·w.
@compute @workgroup_size(256, 1, 1)
fn part_stats(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let r = chunk_range(group.y, group.x);
    let m = moments(r, local);
    if (local == 0u) {
        parts[group.y * params.parts + params.part_offset + group.x] = vec4<f32>(f32(r.z), m.x, m.y, 0.0);
    }
}

// Grid (chunks, groups) over one tile (with or without a border), normalised with the merged
// statistics of every entry of its group.
@compute @workgroup_size(256, 1, 1)
fn part_apply(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let g = group.y;
    let base = g * params.parts;
    var count = 0.0;
    var weighted = 0.0;
    for (var e = local; e < params.parts; e += THREADS) {
        let p = parts[base + e];
        count += p.x;
        weighted += p.x * p.y;
    }
    let n = reduce_sum(local, count);
    let mean = reduce_sum(local, weighted) / n;
    var m2 = 0.0;
    for (var e = local; e < params.parts; e += THREADS) {
        let p = parts[base + e];
        let d = p.y - mean;
        m2 += p.z + p.x * d * d;
    }
    let rstd = inverseSqrt(reduce_sum(local, m2) / n + params.eps);
    let r = chunk_range(g, group.x);
    normalize(g, r.x, r.y, mean, rstd, local);
}
