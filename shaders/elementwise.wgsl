// Elementwise ops, one per define. Element i of the output is computed by one invocation; the
// dispatch is 2-D so tensors past 65535 workgroups of 256 fit (index = y * row_stride + x).
//
// Unary (x → y, same shape):   SILU, GELU (exact erf), QUICK_GELU, RELU, TANH_CLAMP
//                               (tanh(x / alpha) * alpha), SCALE_SHIFT (x * alpha + beta),
//                               LEAKY_RELU (slope alpha)
// Binary (a, b → y, a's shape): ADD, MUL, PRELU (b the slopes); b broadcasts as
//                               b[(i / inner) % b_len]
// GEGLU: x [.., 2D] → x[.., :D] * gelu(x[.., D:]), `inner` = D
// CFG: x [2, S] (unconditional first) → u + alpha * (c - u), `inner` = S
// LINCOMB: x, b, c → alpha * x + beta * b + gamma * c (a sampler's update), all one shape

struct Params {
    n: u32,
    inner: u32,
    b_len: u32,
    row_stride: u32,
    alpha: f32,
    beta: f32,
    gamma: f32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
#if ADD
@group(0) @binding(3) var<storage, read> b: array<act>;
#endif
#if MUL
@group(0) @binding(3) var<storage, read> b: array<act>;
#endif
#if PRELU
@group(0) @binding(3) var<storage, read> b: array<act>;
#endif
#if LINCOMB
@group(0) @binding(3) var<storage, read> b: array<act>;
@group(0) @binding(4) var<storage, read> c: array<act>;
#endif

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), odd-extended.
fn erf(v: f32) -> f32 {
    let s = sign(v);
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
}

fn silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * params.row_stride + gid.x;
    if (i >= params.n) {
        return;
    }
#if SILU
    y[i] = act(silu(f32(x[i])));
#endif
#if GELU
    y[i] = act(gelu(f32(x[i])));
#endif
#if QUICK_GELU
    let v = f32(x[i]);
    y[i] = act(v / (1.0 + exp(-1.702 * v)));
#endif
#if RELU
    y[i] = act(max(f32(x[i]), 0.0));
#endif
#if TANH_CLAMP
    // Clamped: some tanh implementations overflow to NaN for large arguments.
    y[i] = act(tanh(clamp(f32(x[i]) / params.alpha, -15.0, 15.0)) * params.alpha);
#endif
#if SCALE_SHIFT
    y[i] = act(f32(x[i]) * params.alpha + params.beta);
#endif
#if LEAKY_RELU
    let v = f32(x[i]);
    y[i] = act(select(v * params.alpha, v, v >= 0.0));
#endif
#if PRELU
    let v = f32(x[i]);
    y[i] = act(select(v * f32(b[(i / params.inner) % params.b_len]), v, v >= 0.0));
#endif
#if ADD
    y[i] = act(f32(x[i]) + f32(b[(i / params.inner) % params.b_len]));
#endif
#if MUL
    y[i] = act(f32(x[i]) * f32(b[(i / params.inner) % params.b_len]));
#endif
#if GEGLU
    let row = i / params.inner;
    let col = i % params.inner;
    let h = f32(x[row * 2u * params.inner + col]);
    let g = f32(x[row * 2u * params.inner + params.inner + col]);
    y[i] = act(h * gelu(g));
#endif
#if CFG
    let u = f32(x[i]);
    let c = f32(x[params.inner + i]);
    y[i] = act(u + params.alpha * (c - u));
#endif
#if LINCOMB
    y[i] = act(params.alpha * f32(x[i]) + params.beta * f32(b[i]) + params.gamma * f32(c[i]));
#endif
}
