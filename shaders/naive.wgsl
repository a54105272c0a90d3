// Plain kernels, one invocation per output and no workgroup memory: the peers the benchmark
// measures our tiled kernels against (`darkroom bench kernels`). f32 only.
//
// MATMUL:    y [M, N] = x [M, K] · wᵀ, w [N, K]
// CONV:      y [Cout, OH, OW] = conv(x [Cin, H, W], w [Cout, Cin·kh·kw]), zero padding
// ATTENTION: one invocation per (query, head) over keys twice (max, then weighted sum);
//            q, o [Nq, H·D], k, v [Nk, H·D]

struct Params {
    m: u32,
    n: u32,
    k: u32,
    row_stride: u32,
    // CONV: in_h, in_w, out_w, kernel; ATTENTION: nk, heads, head_dim, (scale bits)
    p0: u32,
    p1: u32,
    p2: u32,
    p3: u32,
    stride: u32,
    pad: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
#if ATTENTION
@group(0) @binding(4) var<storage, read> vv: array<f32>;
#endif

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * params.row_stride + gid.x;
#if MATMUL
    if (i >= params.m * params.n) {
        return;
    }
    let row = i / params.n;
    let col = i % params.n;
    var sum = 0.0;
    for (var p = 0u; p < params.k; p++) {
        sum = fma(x[row * params.k + p], w[col * params.k + p], sum);
    }
    y[i] = sum;
#endif
#if CONV
    // m = OH·OW, n = Cout, k = Cin·kh·kw; p0 = H, p1 = W, p2 = OW, p3 = kernel size.
    if (i >= params.m * params.n) {
        return;
    }
    let o = i / params.m;
    let pixel = i % params.m;
    let oy = pixel / params.p2;
    let ox = pixel % params.p2;
    let taps = params.p3 * params.p3;
    var sum = 0.0;
    for (var kk = 0u; kk < params.k; kk++) {
        let c = kk / taps;
        let tap = kk % taps;
        let iy = oy * params.stride + tap / params.p3 - params.pad;
        let ix = ox * params.stride + tap % params.p3 - params.pad;
        if (iy < params.p0 && ix < params.p1) {
            sum = fma(x[(c * params.p0 + iy) * params.p1 + ix], w[o * params.k + kk], sum);
        }
    }
    y[i] = sum;
#endif
#if ATTENTION
    // m = Nq, n = heads, k = head_dim, p0 = Nk, p1 = scale bits. x = q, w = k, vv = v, y = o.
    if (i >= params.m * params.n) {
        return;
    }
    let query = i / params.n;
    let head = i % params.n;
    let width = params.n * params.k;
    let scale = bitcast<f32>(params.p1);
    let qb = query * width + head * params.k;
    var best = -1e30;
    for (var j = 0u; j < params.p0; j++) {
        var s = 0.0;
        for (var d = 0u; d < params.k; d++) {
            s = fma(x[qb + d], w[j * width + head * params.k + d], s);
        }
        best = max(best, s * scale);
    }
    for (var d = 0u; d < params.k; d++) {
        y[qb + d] = 0.0;
    }
    var total = 0.0;
    for (var j = 0u; j < params.p0; j++) {
        var s = 0.0;
        for (var d = 0u; d < params.k; d++) {
            s = fma(x[qb + d], w[j * width + head * params.k + d], s);
        }
        let p = exp(s * scale - best);
        total += p;
        for (var d = 0u; d < params.k; d++) {
            y[qb + d] += p * vv[j * width + head * params.k + d];
        }
    }
    for (var d = 0u; d < params.k; d++) {
        y[qb + d] = y[qb + d] / total;
    }
#endif
}
