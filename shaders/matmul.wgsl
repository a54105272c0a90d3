// The tiled GEMM behind matmul, linear layers and conv2d: C[b] = A[b] · B[b] (+ bias),
// accumulated in f32.
//
// A: activations [batch, M, K] (`act`). B is one of
//   B_ACT                activations [batch or 1, K, N], or [batch or 1, N, K] with TRANSPOSE_B;
//   W_F32/W_F16/W_Q8/W_Q4 a weight [N, K] (PyTorch's Linear layout), rows packed in 32-bit words,
//                        dequantized as it is staged (see crates/gpu/src/quant.rs for the layout).
// BIAS adds an f32 bias per output column (weights only). C: [batch, M, N] (`act`).
//
// CONV: implicit-GEMM conv2d, no im2col buffer. A is the input image [batch, Cin, H, W] read
// as patches: row m = output pixel (oy, ox), column k = (cin, ky, kx), zero outside the padded
// image; B is the weight [Cout, Cin·kh·kw]; C is stored channel-major [batch, Cout, OH·OW].
// RESIDUAL adds a tensor of C's shape (a ResNet's skip) before storing; RELU then applies
// max(0, ·) (TAESD's conv → ReLU pairs and block outputs).
//
// Each 16x16 workgroup computes a 64x64 tile of C, each invocation a 4x4 block held in
// registers; K advances in slices of 16 staged through workgroup memory (8.5 KiB). BIG: a
// 128x128 tile, 8x8 per invocation, slices of 8. Sizes need not
// be multiples of the tile: loads outside the matrices read zero, stores outside are skipped.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_stride_a: u32,
    batch_stride_b: u32,
    batch_stride_c: u32,
    // Words per stored weight row, and scale groups per row (quantized weights).
    b_row_words: u32,
    groups_per_row: u32,
    // Conv geometry (CONV only).
    in_h: u32,
    in_w: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    // C's full width and where this dispatch's columns start in it: a weight split across
    // bindings runs once per part, each writing its slice of the output columns.
    out_cols: u32,
    col_offset: u32,
    // CONV: ceil(65536 / kernel_w), so tap / kernel_w = (tap · kw_magic) >> 16 for every tap.
    kw_magic: u32,
    // SPLIT_K: K is cut into `splits` ranges of `k_chunk` (a multiple of TILE_K); grid z is
    // batch · splits; each range's sum goes to its own copy of C in `partial` (`split_stride`
    // apart), and the `split_sum` entry point adds the copies and applies the epilogue.
    splits: u32,
    k_chunk: u32,
    split_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<act>;
@group(0) @binding(2) var<storage, read_write> c: array<act>;
#if B_ACT
@group(0) @binding(3) var<storage, read> b: array<act>;
#else
@group(0) @binding(3) var<storage, read> weights: array<u32>;
#endif
#if W_Q8
@group(0) @binding(4) var<storage, read> scales: array<f32>;
#endif
#if W_Q4
@group(0) @binding(4) var<storage, read> scales: array<u32>;
#endif
#if BIAS
@group(0) @binding(5) var<storage, read> bias: array<f32>;
#endif
#if RESIDUAL
@group(0) @binding(6) var<storage, read> residual: array<act>;
#endif
#if SPLIT_K
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;
#endif
#if !B_ACT
#include weight_load.wgsl
fn weight_row_words() -> u32 {
    return params.b_row_words;
}
fn weight_groups_per_row() -> u32 {
    return params.groups_per_row;
}
#endif

const THREADS: u32 = 256u;
// Both tiles are stored k-major as vec4 rows, so the inner loop reads an invocation's rows and
// columns with 16-byte loads. Rows are padded by one vec4 so the staging stores of consecutive k
// land in different banks.
#if BIG
// BIG: a 128x128 tile of C per workgroup, each invocation an 8x8 block (rows 4y..4y+3 and
// 64+4y.., columns likewise) with K slices of 8: twice the arithmetic per workgroup-memory read
// of the 64x64 tile, for products large enough to fill the GPU with such tiles (matmul.rs
// decides).
const TILE_M: u32 = 128u;
const TILE_N: u32 = 128u;
const TILE_K: u32 = 8u;
const ROW_VEC4S: u32 = 33u;
var<workgroup> tile_a: array<vec4<f32>, 264>; // [TILE_K][TILE_M / 4 + 1]
var<workgroup> tile_b: array<vec4<f32>, 264>; // [TILE_K][TILE_N / 4 + 1]
#else
const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const ROW_VEC4S: u32 = 17u;
var<workgroup> tile_a: array<vec4<f32>, 272>; // [TILE_K][TILE_M / 4 + 1]
var<workgroup> tile_b: array<vec4<f32>, 272>; // [TILE_K][TILE_N / 4 + 1]
#endif

#if !CONV
// A[row][kk] of batch base `base`.
fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    return f32(a[base + row * params.k + kk]);
}
#endif

#if CONV
// A patch element: input channel `cin`, kernel tap `tap` (ky · kernel_w + kx) for the output
// pixel whose top-left input position is (iy0, ix0) (unsigned: left of / above the image wraps
// around and fails the bounds test).
fn load_patch(base: u32, iy0: u32, ix0: u32, cin: u32, tap: u32) -> f32 {
    let ky = (tap * params.kw_magic) >> 16u;
    let iy = iy0 + ky;
    let ix = ix0 + tap - ky * params.kernel_w;
    if (iy >= params.in_h || ix >= params.in_w) {
        return 0.0;
    }
    return f32(a[base + (cin * params.in_h + iy) * params.in_w + ix]);
}
#endif

// B[k][col] of batch base `base` (weights ignore the batch: one weight serves every batch).
fn load_b(base: u32, kk: u32, col: u32) -> f32 {
#if B_ACT
#if TRANSPOSE_B
    return f32(b[base + col * params.k + kk]);
#else
    return f32(b[base + kk * params.n + col]);
#endif
#else
    return load_weight(col, kk);
#endif
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let row0 = group.y * TILE_M;
    let col0 = group.x * TILE_N;
#if SPLIT_K
    let batch = group.z / params.splits;
    let split = group.z % params.splits;
    let k_begin = split * params.k_chunk;
    let k_end = min(params.k, k_begin + params.k_chunk);
#else
    let batch = group.z;
    let k_begin = 0u;
    let k_end = params.k;
#endif
    let a_base = batch * params.batch_stride_a;
    let b_base = batch * params.batch_stride_b;
    var c_base = batch * params.batch_stride_c;
#if SPLIT_K
    c_base += split * params.split_stride;
#endif

    // Row i of the invocation's 4x4 block in acc_i (BIG: row i, column half j in acc{i}_{j}): no
    // indexed arrays, so it all stays in registers.
#if BIG
    var acc0_0 = vec4<f32>(0.0);
    var acc0_1 = vec4<f32>(0.0);
    var acc1_0 = vec4<f32>(0.0);
    var acc1_1 = vec4<f32>(0.0);
    var acc2_0 = vec4<f32>(0.0);
    var acc2_1 = vec4<f32>(0.0);
    var acc3_0 = vec4<f32>(0.0);
    var acc3_1 = vec4<f32>(0.0);
    var acc4_0 = vec4<f32>(0.0);
    var acc4_1 = vec4<f32>(0.0);
    var acc5_0 = vec4<f32>(0.0);
    var acc5_1 = vec4<f32>(0.0);
    var acc6_0 = vec4<f32>(0.0);
    var acc6_1 = vec4<f32>(0.0);
    var acc7_0 = vec4<f32>(0.0);
    var acc7_1 = vec4<f32>(0.0);
#else
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
#endif

#if CONV
    // Patches: consecutive invocations take consecutive output pixels (neighbouring input
    // pixels in memory). An invocation stages the same output pixel at every K slice, and the
    // columns k = flat / TILE_M + s · THREADS / TILE_M (+ TILE_K per slice), k = cin · taps + tap:
    // the pixel's position is worked out once, and (cin, tap) of each of its four columns advance
    // by TILE_K per slice without a division.
    let conv_row = row0 + flat % TILE_M;
    let oy = conv_row / params.out_w;
    let iy0 = oy * params.stride - params.pad_top;
    let ix0 = (conv_row - oy * params.out_w) * params.stride - params.pad_left;
    let taps = params.kernel_h * params.kernel_w;
    let first = vec4<u32>(k_begin + flat / TILE_M) + vec4<u32>(0u, 1u, 2u, 3u) * (THREADS / TILE_M);
    var cin = first / vec4<u32>(taps);
    var tap = first - cin * taps;
    let step_cin = TILE_K / taps;
    let step_tap = TILE_K - step_cin * taps;
#endif
    let k_tiles = (k_end - k_begin + TILE_K - 1u) / TILE_K;
    for (var t = 0u; t < k_tiles; t++) {
        let k0 = k_begin + t * TILE_K;
        for (var s = 0u; s < 4u; s++) {
            let ia = flat + s * THREADS;
#if CONV
            let ra = ia % TILE_M;
            let ka = ia / TILE_M;
#else
            // A: 64 rows x 16 k; consecutive invocations read consecutive k of one row.
            let ra = ia / TILE_K;
            let ka = ia % TILE_K;
#endif
            var va = 0.0;
            if (row0 + ra < params.m && k0 + ka < k_end) {
#if CONV
                va = load_patch(a_base, iy0, ix0, cin[s], tap[s]);
#else
                va = load_a(a_base, row0 + ra, k0 + ka);
#endif
            }
            tile_a[ka * ROW_VEC4S + ra / 4u][ra % 4u] = va;

#if B_ACT
#if !TRANSPOSE_B
            // B as [K, N]: consecutive invocations read consecutive columns.
            let kb = ia / TILE_N;
            let cb = ia % TILE_N;
#else
            let cb = ia / TILE_K;
            let kb = ia % TILE_K;
#endif
#else
            // Weights as [N, K]: consecutive invocations read consecutive k of one row.
            let cb = ia / TILE_K;
            let kb = ia % TILE_K;
#endif
            var vb = 0.0;
            if (k0 + kb < k_end && col0 + cb < params.n) {
                vb = load_b(b_base, k0 + kb, col0 + cb);
            }
            tile_b[kb * ROW_VEC4S + cb / 4u][cb % 4u] = vb;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
#if BIG
            let a0 = tile_a[kk * ROW_VEC4S + local.y];
            let a1 = tile_a[kk * ROW_VEC4S + 16u + local.y];
            let b0 = tile_b[kk * ROW_VEC4S + local.x];
            let b1 = tile_b[kk * ROW_VEC4S + 16u + local.x];
            acc0_0 = fma(vec4<f32>(a0.x), b0, acc0_0);
            acc0_1 = fma(vec4<f32>(a0.x), b1, acc0_1);
            acc1_0 = fma(vec4<f32>(a0.y), b0, acc1_0);
            acc1_1 = fma(vec4<f32>(a0.y), b1, acc1_1);
            acc2_0 = fma(vec4<f32>(a0.z), b0, acc2_0);
            acc2_1 = fma(vec4<f32>(a0.z), b1, acc2_1);
            acc3_0 = fma(vec4<f32>(a0.w), b0, acc3_0);
            acc3_1 = fma(vec4<f32>(a0.w), b1, acc3_1);
            acc4_0 = fma(vec4<f32>(a1.x), b0, acc4_0);
            acc4_1 = fma(vec4<f32>(a1.x), b1, acc4_1);
            acc5_0 = fma(vec4<f32>(a1.y), b0, acc5_0);
            acc5_1 = fma(vec4<f32>(a1.y), b1, acc5_1);
            acc6_0 = fma(vec4<f32>(a1.z), b0, acc6_0);
            acc6_1 = fma(vec4<f32>(a1.z), b1, acc6_1);
            acc7_0 = fma(vec4<f32>(a1.w), b0, acc7_0);
            acc7_1 = fma(vec4<f32>(a1.w), b1, acc7_1);
#else
            let av = tile_a[kk * ROW_VEC4S + local.y];
            let bv = tile_b[kk * ROW_VEC4S + local.x];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
#endif
        }
        workgroupBarrier();
#if CONV
        tap += vec4<u32>(step_tap);
        cin += vec4<u32>(step_cin);
        let wrapped = tap >= vec4<u32>(taps);
        tap = select(tap, tap - vec4<u32>(taps), wrapped);
        cin = select(cin, cin + vec4<u32>(1u), wrapped);
#endif
    }

#if BIG
    store_row(row0 + local.y * 4u, col0 + local.x * 4u, c_base, acc0_0);
    store_row(row0 + local.y * 4u, col0 + 64u + local.x * 4u, c_base, acc0_1);
    store_row(row0 + local.y * 4u + 1u, col0 + local.x * 4u, c_base, acc1_0);
    store_row(row0 + local.y * 4u + 1u, col0 + 64u + local.x * 4u, c_base, acc1_1);
    store_row(row0 + local.y * 4u + 2u, col0 + local.x * 4u, c_base, acc2_0);
    store_row(row0 + local.y * 4u + 2u, col0 + 64u + local.x * 4u, c_base, acc2_1);
    store_row(row0 + local.y * 4u + 3u, col0 + local.x * 4u, c_base, acc3_0);
    store_row(row0 + local.y * 4u + 3u, col0 + 64u + local.x * 4u, c_base, acc3_1);
    store_row(row0 + 64u + local.y * 4u, col0 + local.x * 4u, c_base, acc4_0);
    store_row(row0 + 64u + local.y * 4u, col0 + 64u + local.x * 4u, c_base, acc4_1);
    store_row(row0 + 64u + local.y * 4u + 1u, col0 + local.x * 4u, c_base, acc5_0);
    store_row(row0 + 64u + local.y * 4u + 1u, col0 + 64u + local.x * 4u, c_base, acc5_1);
    store_row(row0 + 64u + local.y * 4u + 2u, col0 + local.x * 4u, c_base, acc6_0);
    store_row(row0 + 64u + local.y * 4u + 2u, col0 + 64u + local.x * 4u, c_base, acc6_1);
    store_row(row0 + 64u + local.y * 4u + 3u, col0 + local.x * 4u, c_base, acc7_0);
    store_row(row0 + 64u + local.y * 4u + 3u, col0 + 64u + local.x * 4u, c_base, acc7_1);
#else
    store_row(row0 + local.y * 4u, col0 + local.x * 4u, c_base, acc0);
    store_row(row0 + local.y * 4u + 1u, col0 + local.x * 4u, c_base, acc1);
    store_row(row0 + local.y * 4u + 2u, col0 + local.x * 4u, c_base, acc2);
    store_row(row0 + local.y * 4u + 3u, col0 + local.x * 4u, c_base, acc3);
#endif
}

// Where C[row][col] of this dispatch's columns lies, from batch base `c_base`.
fn c_index(c_base: u32, row: u32, col: u32) -> u32 {
#if CONV
    return c_base + (params.col_offset + col) * params.m + row;
#else
    return c_base + row * params.out_cols + params.col_offset + col;
#endif
}

// Four outputs of one row of C from column `col_first`, with the epilogue (bias, residual, ReLU);
// SPLIT_K: the raw sums, into this range's copy of C.
fn store_row(row: u32, col_first: u32, c_base: u32, values: vec4<f32>) {
    if (row >= params.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let col = col_first + j;
        if (col >= params.n) {
            return;
        }
#if SPLIT_K
        partial[c_index(c_base, row, col)] = values[j];
#else
        store(c_index(c_base, row, col), col, values[j]);
#endif
    }
}

// C[index] (column `col` of this dispatch) = epilogue(v).
fn store(index: u32, col: u32, value: f32) {
    var v = value;
#if BIAS
    v += bias[col];
#endif
#if RESIDUAL
    v += f32(residual[index]);
#endif
#if RELU
    v = max(v, 0.0);
#endif
    c[index] = act(v);
}

#if SPLIT_K
// One output per invocation: the sum of the K ranges' copies, then the epilogue. Grid: x · y
// groups of 256 invocations over the m · n outputs of one batch (row-major in x, y), z = batch.
@compute @workgroup_size(256, 1, 1)
fn split_sum(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (group.y * groups.x + group.x) * 256u + local;
    if (i >= params.m * params.n) {
        return;
    }
#if CONV
    let col = i / params.m;
    let row = i % params.m;
#else
    let row = i / params.n;
    let col = i % params.n;
#endif
    let index = c_index(group.z * params.batch_stride_c, row, col);
    var sum = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        sum += partial[s * params.split_stride + index];
    }
    store(index, col, sum);
}
#endif
