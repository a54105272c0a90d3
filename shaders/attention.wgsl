// Fused multi-head attention, tiled like the GEMM: the Nq×Nk score matrix never exists in
// memory. Q, K, V and O use the layout linear projections produce, heads side by side:
//   Q, O [B, Nq, H·D]    K, V [B, Nk, H·D]    (row strides q_stride and kv_stride)
// so no permute is needed before or after. CAUSAL masks key j > query i (CLIP's text encoder).
//
// A workgroup of 128 invocations takes BQ = 32 queries of one (batch, head) and walks the keys
// in blocks of BK = 64. For each block:
//   1. S = Q·Kᵀ (32x64) as a register-tiled product: each invocation holds a 4x4 block of S;
//      Q and K stream through workgroup memory in slices of 16 head dimensions, as in the GEMM.
//      S (scaled, masked) goes to workgroup memory.
//   2. Online softmax: four invocations per query row take 16 scores each, agree on the row's
//      new maximum m, turn the scores into P = exp(S − m) in place and keep their part of the
//      normaliser l; the factor exp(m_old − m_new) that rescales the row's output is published.
//   3. O += P·V as a register-tiled product: each invocation holds 4 rows x COLS columns of O
//      (columns tx, tx + 16, …); V streams through workgroup memory VK keys at a time.
// Statistics and accumulators are f32 whatever the storage type. Heads wider than COLS·16 split
// their output columns across workgroups (grid z): each recomputes S, so the VAE's 512-wide head
// needs no scores buffer. COLS and VK are constants of the variant (attention.rs picks them from
// the head size); the COLS accumulators are unrolled by the preprocessor (`#for`) into separate
// variables: an indexed private array ends up in local memory on some drivers. Workgroup memory: 15.1 KiB, under WebGPU's 16 KiB minimum.

struct Params {
    nq: u32,
    nk: u32,
    heads: u32,
    head_dim: u32,
    q_stride: u32,
    kv_stride: u32,
    scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<act>;
@group(0) @binding(2) var<storage, read> k: array<act>;
@group(0) @binding(3) var<storage, read> v: array<act>;
@group(0) @binding(4) var<storage, read_write> o: array<act>;

const BQ: u32 = 32u;
const BK: u32 = 64u;
const DS: u32 = 16u; // head dimensions per staged slice of Q and K
const THREADS: u32 = 128u;
const DC: u32 = COLS * 16u; // output columns per workgroup
// A finite "minus infinity": differences of two of them stay finite, exp() of them is 0.
const NEG: f32 = -1e30;

// Staging, shared by the phases: Q and K slices while S is computed (k-major vec4 rows padded by
// one vec4: Q at [d][9], K from Q_SLOTS at [d][17]), V rows [VK][DC] scalars while O is.
const Q_ROW: u32 = 9u;
const K_ROW: u32 = 17u;
const Q_SLOTS: u32 = 144u; // DS * Q_ROW
var<workgroup> stage: array<vec4<f32>, 416>; // Q_SLOTS + DS * K_ROW
// S, then P, key-major: 8 vec4 of 4 rows per key, the vec4 slot swizzled by the key so that
// the invocations of phase 1 store to different banks.
var<workgroup> p_tile: array<vec4<f32>, 512>; // [BK][BQ / 4]
var<workgroup> red: array<f32, 128>; // per-invocation partials: block maxima, then normalisers
var<workgroup> rescale: array<f32, 32>; // per-row exp(m_old − m_new) of the current block

fn p_index(key: u32, row_vec: u32) -> u32 {
    return key * 8u + (row_vec ^ ((key >> 2u) & 7u));
}

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let d_len = params.head_dim;
    let b = group.y / params.heads;
    let h = group.y % params.heads;
    let q0 = group.x * BQ;
    let col0 = group.z * DC;
    let q_base = b * params.nq * params.q_stride + h * d_len;
    let kv_base = b * params.nk * params.kv_stride + h * d_len;

    // Register tiles: rows 4ty..4ty+3 of the block; keys 4tx..4tx+3 (phase 1), output columns
    // col0 + tx + 16c (phase 3).
    let ty = local / 16u;
    let tx = local % 16u;
    // Phase 2: row sr, keys 16·part .. 16·part + 15.
    let sr = local / 4u;
    let part = local % 4u;

    // acc{c}: rows 4ty..4ty+3 of output column col0 + tx + 16c (separate variables, not an
    // indexed array, so they stay in registers).
#for C in COLS
    var acc{C} = vec4<f32>(0.0);
#endfor
    var m = NEG; // this row's running maximum (the four invocations of a row agree)
    var l = 0.0; // this invocation's part of the row's normaliser

    var nk_end = params.nk;
#if CAUSAL
    // No query of this workgroup sees keys past its last row.
    nk_end = min(params.nk, q0 + BQ);
#endif
    for (var j0 = 0u; j0 < nk_end; j0 += BK) {
        // ---- 1. S = Q·Kᵀ for keys j0 .. j0 + 63.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var d0 = 0u; d0 < d_len; d0 += DS) {
            // Consecutive invocations read consecutive dimensions of one row.
            for (var t = local; t < BQ * DS; t += THREADS) {
                let row = t / DS;
                let d = t % DS;
                var value = 0.0;
                if (q0 + row < params.nq && d0 + d < d_len) {
                    value = f32(q[q_base + (q0 + row) * params.q_stride + d0 + d]) * params.scale;
                }
                stage[d * Q_ROW + row / 4u][row % 4u] = value;
            }
            for (var t = local; t < BK * DS; t += THREADS) {
                let key = t / DS;
                let d = t % DS;
                var value = 0.0;
                if (j0 + key < params.nk && d0 + d < d_len) {
                    value = f32(k[kv_base + (j0 + key) * params.kv_stride + d0 + d]);
                }
                stage[Q_SLOTS + d * K_ROW + key / 4u][key % 4u] = value;
            }
            workgroupBarrier();
            // Invocations whose four keys are all past the end (the last block of CLIP's 77) or,
            // CAUSAL, after every query of theirs skip the products; so do the dimensions past
            // the head size in the last slice (a 40-wide head: 16 + 16 + 8).
            var live = j0 + 4u * tx < params.nk;
#if CAUSAL
            live = live && j0 + 4u * tx <= q0 + 4u * ty + 3u;
#endif
            if (live) {
                let slice = min(DS, d_len - d0);
                for (var d = 0u; d < slice; d++) {
                    let qv = stage[d * Q_ROW + ty];
                    let kv = stage[Q_SLOTS + d * K_ROW + tx];
                    s0 = fma(vec4<f32>(qv.x), kv, s0);
                    s1 = fma(vec4<f32>(qv.y), kv, s1);
                    s2 = fma(vec4<f32>(qv.z), kv, s2);
                    s3 = fma(vec4<f32>(qv.w), kv, s3);
                }
            }
            workgroupBarrier();
        }
        // Masked scores (keys past the end; CAUSAL: keys after the query) become NEG.
        for (var j = 0u; j < 4u; j++) {
            let key = j0 + 4u * tx + j;
            var column = vec4<f32>(s0[j], s1[j], s2[j], s3[j]);
            var keep = vec4<bool>(key < params.nk);
#if CAUSAL
            let row = q0 + 4u * ty;
            keep = keep & (vec4<u32>(key) <= vec4<u32>(row, row + 1u, row + 2u, row + 3u));
#endif
            p_tile[p_index(4u * tx + j, ty)] = select(vec4<f32>(NEG), column, keep);
        }
        workgroupBarrier();

        // ---- 2. Online softmax of row sr over this block.
        var block_max = NEG;
        for (var j = 0u; j < 16u; j++) {
            block_max = max(block_max, p_tile[p_index(16u * part + j, sr / 4u)][sr % 4u]);
        }
        red[local] = block_max;
        workgroupBarrier();
        let row_max = max(max(red[4u * sr], red[4u * sr + 1u]), max(red[4u * sr + 2u], red[4u * sr + 3u]));
        let m_new = max(m, row_max);
        let correction = exp(m - m_new);
        var sum = 0.0;
        for (var j = 0u; j < 16u; j++) {
            let index = p_index(16u * part + j, sr / 4u);
            let p = exp(p_tile[index][sr % 4u] - m_new);
            p_tile[index][sr % 4u] = p;
            sum += p;
        }
        l = l * correction + sum;
        m = m_new;
        if (part == 0u) {
            rescale[sr] = correction;
        }
        workgroupBarrier();

        // ---- 3. O = O · rescale + P·V.
        let row_scale = vec4<f32>(rescale[4u * ty], rescale[4u * ty + 1u], rescale[4u * ty + 2u], rescale[4u * ty + 3u]);
#for C in COLS
        acc{C} *= row_scale;
#endfor
        let block_keys = min(BK, nk_end - j0);
        for (var kc = 0u; kc < block_keys; kc += VK) {
            for (var t = local; t < VK * DC; t += THREADS) {
                let key = t / DC;
                let col = col0 + t % DC;
                var value = 0.0;
                if (j0 + kc + key < params.nk && col < d_len) {
                    value = f32(v[kv_base + (j0 + kc + key) * params.kv_stride + col]);
                }
                stage[t / 4u][t % 4u] = value;
            }
            workgroupBarrier();
            // Keys past the block's end have P = 0: not multiplied.
            let chunk_keys = min(VK, block_keys - kc);
            for (var kk = 0u; kk < chunk_keys; kk++) {
                let p = p_tile[p_index(kc + kk, ty)];
                let row = kk * DC + tx;
#for C in COLS
                acc{C} = fma(p, vec4<f32>(stage[(row + 16u * {C}u) / 4u][(row + 16u * {C}u) % 4u]), acc{C});
#endfor
            }
            workgroupBarrier();
        }
    }

    // Each row's normaliser is the sum of its four invocations' parts.
    red[local] = l;
    workgroupBarrier();
    let inv = 1.0 / max(vec4<f32>(row_total(4u * ty), row_total(4u * ty + 1u), row_total(4u * ty + 2u), row_total(4u * ty + 3u)), vec4<f32>(1e-30));
#for C in COLS
    store_column(q_base, q0 + 4u * ty, col0 + tx + 16u * {C}u, acc{C} * inv);
#endfor
}

fn row_total(row: u32) -> f32 {
    return red[4u * row] + red[4u * row + 1u] + red[4u * row + 2u] + red[4u * row + 3u];
}

// Rows first_row … first_row + 3 of output column `col`, those inside the output.
fn store_column(q_base: u32, first_row: u32, col: u32, value: vec4<f32>) {
    if (col >= params.head_dim) {
        return;
    }
    let base = q_base + first_row * params.q_stride + col;
    if (first_row < params.nq) {
        o[base] = act(value.x);
    }
    if (first_row + 1u < params.nq) {
        o[base + params.q_stride] = act(value.y);
    }
    if (first_row + 2u < params.nq) {
        o[base + 2u * params.q_stride] = act(value.z);
    }
    if (first_row + 3u < params.nq) {
        o[base + 3u * params.q_stride] = act(value.w);
    }
}
