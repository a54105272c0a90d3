// Row softmax of `scale · x`, one workgroup per row: max, then the sum of exponentials, then the
// normalised values. Used where attention materialises its scores (head sizes beyond the fused
// kernel's 160, such as the VAE's single 512-wide head).

struct Params {
    row_len: u32,
    rows: u32,
    rows_per_grid_row: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;

const THREADS: u32 = 256u;

#include workgroup_reduce.wgsl

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let row = group.y * params.rows_per_grid_row + group.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (row >= params.rows) {
        return;
    }
    let start = row * params.row_len;
    var m = -3.0e38;
    for (var e = local; e < params.row_len; e += THREADS) {
        m = max(m, f32(x[start + e]) * params.scale);
    }
    m = reduce_max(local, m);
    var sum = 0.0;
    for (var e = local; e < params.row_len; e += THREADS) {
        sum += exp(f32(x[start + e]) * params.scale - m);
    }
    let inv = 1.0 / reduce_sum(local, sum);
    for (var e = local; e < params.row_len; e += THREADS) {
        y[start + e] = act(exp(f32(x[start + e]) * params.scale - m) * inv);
    }
}
