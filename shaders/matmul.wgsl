// Batched f32 matmul: C[b] = A[b] · B[b], all row-major. A is [batch, M, K], B is [batch, K, N]
// (batch stride 0 when one B serves every batch, as a weight does), C is [batch, M, N].
//
// Each 16x16 workgroup computes a 64x64 tile of C, each invocation a 4x4 block held in
// registers; K advances in slices of 16 staged through workgroup memory (8 KiB). Sizes need not
// be multiples of the tile: loads outside the matrices read zero, stores outside are skipped.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_stride_a: u32,
    batch_stride_b: u32,
    batch_stride_c: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const THREADS: u32 = 256u;

// Both tiles are stored k-major so the inner loop reads consecutive rows/columns.
var<workgroup> tile_a: array<f32, 1024>; // [TILE_K][TILE_M]
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE_N]

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
    @builtin(local_invocation_index) flat: u32,
) {
    let row0 = group.y * TILE_M;
    let col0 = group.x * TILE_N;
    let a_base = group.z * params.batch_stride_a;
    let b_base = group.z * params.batch_stride_b;
    let c_base = group.z * params.batch_stride_c;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    let k_tiles = (params.k + TILE_K - 1u) / TILE_K;
    for (var t = 0u; t < k_tiles; t++) {
        let k0 = t * TILE_K;
        for (var s = 0u; s < 4u; s++) {
            // A: 64 rows x 16 k; consecutive invocations read consecutive k of one row.
            let ia = flat + s * THREADS;
            let ra = ia / TILE_K;
            let ka = ia % TILE_K;
            var va = 0.0;
            if (row0 + ra < params.m && k0 + ka < params.k) {
                va = a[a_base + (row0 + ra) * params.k + k0 + ka];
            }
            tile_a[ka * TILE_M + ra] = va;

            // B: 16 k x 64 columns; consecutive invocations read consecutive columns.
            let kb = ia / TILE_N;
            let cb = ia % TILE_N;
            var vb = 0.0;
            if (k0 + kb < params.k && col0 + cb < params.n) {
                vb = b[b_base + (k0 + kb) * params.n + col0 + cb];
            }
            tile_b[kb * TILE_N + cb] = vb;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk * TILE_M + local.y * 4u + i];
                bv[i] = tile_b[kk * TILE_N + local.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = row0 + local.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + local.x * 4u + j;
            if (row < params.m && col < params.n) {
                c[c_base + row * params.n + col] = acc[i][j];
            }
        }
    }
}
