// Fused multi-head attention with online softmax: the Nq×Nk score matrix never exists in
// memory. Q, K, V and O use the layout linear projections produce, heads side by side:
//   Q, O [B, Nq, H·D]    K, V [B, Nk, H·D]    (row strides q_stride and kv_stride)
// so no permute is needed before or after. CAUSAL masks key j > query i (CLIP's text encoder).
//
// Each workgroup takes 64 queries of one (batch, head) with 256 invocations: four per query,
// each taking every fourth key with its own running max m, normaliser l and output o, merged at
// the end. (One invocation per query left a large GPU mostly idle: a 4096-token, 8-head layer
// is only 32 K queries, each a long chain of dependent multiply-adds.) Keys and values stream
// through workgroup memory in tiles of `block_keys` = min(64, 2048 / D) keys (16 KiB for K and V
// together, the WebGPU minimum): 51 keys at D = 40, 32 at D = 64, 12 at D = 160 (SD 1.5's
// deepest blocks). Scores of a tile are computed first, so the running max is rescaled once per
// tile.

struct Params {
    nq: u32,
    nk: u32,
    heads: u32,
    head_dim: u32,
    q_stride: u32,
    kv_stride: u32,
    scale: f32,
    block_keys: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<act>;
@group(0) @binding(2) var<storage, read> k: array<act>;
@group(0) @binding(3) var<storage, read> v: array<act>;
@group(0) @binding(4) var<storage, read_write> o: array<act>;

const BQ: u32 = 64u;
const SPLITS: u32 = 4u;
const THREADS: u32 = 256u; // BQ * SPLITS
const BK_MAX: u32 = 64u;
const D_MAX: u32 = 160u;
const TILE_FLOATS: u32 = 2048u;
// A finite "minus infinity": differences of two of them stay finite.
const NEG: f32 = -1e30;
// Output dimensions merged per round at the end (THREADS * MERGE_DIMS = TILE_FLOATS).
const MERGE_DIMS: u32 = 8u;

var<workgroup> k_tile: array<f32, 2048>; // [block_keys][D]; at the end, each invocation's m and l
var<workgroup> v_tile: array<f32, 2048>; // [block_keys][D]; at the end, partial outputs

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let d_len = params.head_dim;
    let b = group.y / params.heads;
    let h = group.y % params.heads;
    // Consecutive invocations take consecutive queries; `split` picks the keys.
    let slot = local % BQ;
    let split = local / BQ;
    let i = group.x * BQ + slot;
    let row_ok = i < params.nq;
    let q_base = (b * params.nq + min(i, params.nq - 1u)) * params.q_stride + h * d_len;
    let kv_base = b * params.nk * params.kv_stride + h * d_len;

    var qv: array<f32, D_MAX>;
    var acc: array<f32, D_MAX>;
    for (var d = 0u; d < d_len; d++) {
        qv[d] = f32(q[q_base + d]) * params.scale;
        acc[d] = 0.0;
    }
    var m = NEG;
    var l = 0.0;

    var nk_end = params.nk;
#if CAUSAL
    // No query of this workgroup sees keys past its last row.
    nk_end = min(params.nk, group.x * BQ + BQ);
#endif
    let bk = params.block_keys;
    for (var j0 = 0u; j0 < nk_end; j0 += bk) {
        for (var t = local; t < bk * d_len; t += THREADS) {
            let jj = t / d_len;
            let d = t % d_len;
            let j = j0 + jj;
            var kv = 0.0;
            var vv = 0.0;
            if (j < params.nk) {
                kv = f32(k[kv_base + j * params.kv_stride + d]);
                vv = f32(v[kv_base + j * params.kv_stride + d]);
            }
            k_tile[t] = kv;
            v_tile[t] = vv;
        }
        workgroupBarrier();

        // This invocation's keys of the tile: split, split + 4, …
        var s: array<f32, 16>; // BK_MAX / SPLITS
        var keep: array<bool, 16>;
        var tile_max = NEG;
        var n = 0u;
        for (var jj = split; jj < bk; jj += SPLITS) {
            let j = j0 + jj;
            var ok = j < params.nk;
#if CAUSAL
            ok = ok && j <= i;
#endif
            var score = NEG;
            if (ok) {
                score = 0.0;
                for (var d = 0u; d < d_len; d++) {
                    score = fma(qv[d], k_tile[jj * d_len + d], score);
                }
            }
            s[n] = score;
            keep[n] = ok;
            tile_max = max(tile_max, score);
            n++;
        }

        let m_new = max(m, tile_max);
        let correction = exp(m - m_new);
        l = l * correction;
        for (var d = 0u; d < d_len; d++) {
            acc[d] = acc[d] * correction;
        }
        n = 0u;
        for (var jj = split; jj < bk; jj += SPLITS) {
            let p = select(0.0, exp(s[n] - m_new), keep[n]);
            l += p;
            for (var d = 0u; d < d_len; d++) {
                acc[d] = fma(p, v_tile[jj * d_len + d], acc[d]);
            }
            n++;
        }
        m = m_new;
        workgroupBarrier();
    }

    // Merge the four partial softmaxes of each query: rescale each to the largest max, sum.
    k_tile[local] = m;
    k_tile[THREADS + local] = l;
    workgroupBarrier();
    var m_all = NEG;
    for (var p = 0u; p < SPLITS; p++) {
        m_all = max(m_all, k_tile[p * BQ + slot]);
    }
    var l_all = 0.0;
    for (var p = 0u; p < SPLITS; p++) {
        l_all += k_tile[THREADS + p * BQ + slot] * exp(k_tile[p * BQ + slot] - m_all);
    }
    let mine = exp(m - m_all);
    let inv = 1.0 / max(l_all, 1e-30);
    for (var d0 = 0u; d0 < d_len; d0 += MERGE_DIMS) {
        for (var e = 0u; e < MERGE_DIMS; e++) {
            var part = 0.0;
            if (d0 + e < d_len) {
                part = acc[d0 + e] * mine;
            }
            v_tile[local * MERGE_DIMS + e] = part;
        }
        workgroupBarrier();
        if (split == 0u && row_ok) {
            for (var e = 0u; e < MERGE_DIMS && d0 + e < d_len; e++) {
                var sum = 0.0;
                for (var p = 0u; p < SPLITS; p++) {
                    sum += v_tile[(p * BQ + slot) * MERGE_DIMS + e];
                }
                o[q_base + d0 + e] = act(sum * inv);
            }
        }
        workgroupBarrier();
    }
}
