// Token + position embedding lookup: y[b, t, :] = tokens[ids[b, t], :] + positions[t, :].
// The token table is a packed weight [vocab, D] in any weight format (W_* define); SD 2's
// 49408x1024 table is 202 MB in f32, over WebGPU's 128 MiB binding default, and 101 MB in f16.

struct Params {
    n: u32,
    width: u32,
    seq_len: u32,
    row_stride: u32,
    row_words: u32,
    groups_per_row: u32,
    // The rows of the table this dispatch holds (a table split across bindings runs once per
    // part; each part writes the tokens whose ids it holds).
    first_id: u32,
    part_rows: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
@group(0) @binding(3) var<storage, read> weights: array<u32>;
@group(0) @binding(4) var<storage, read> positions: array<act>;
#if W_Q8
@group(0) @binding(5) var<storage, read> scales: array<f32>;
#endif
#if W_Q4
@group(0) @binding(5) var<storage, read> scales: array<u32>;
#endif

#include weight_load.wgsl
fn weight_row_words() -> u32 {
    return params.row_words;
}
fn weight_groups_per_row() -> u32 {
    return params.groups_per_row;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * params.row_stride + gid.x;
    if (i >= params.n) {
        return;
    }
    let row = i / params.width;
    let col = i % params.width;
    let t = row % params.seq_len;
    let id = ids[row];
    if (id < params.first_id || id >= params.first_id + params.part_rows) {
        return;
    }
    y[i] = act(load_weight(id - params.first_id, col) + f32(positions[t * params.width + col]));
}
