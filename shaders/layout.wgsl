// Index remaps, one output element per invocation (2-D dispatch as in elementwise.wgsl).
//
// UPSAMPLE: nearest upsampling to any size, x [planes, H, W] → y [planes, OH, OW]; `a_len` = H,
//         `b_len` = W, `out_h`/`out_w` = OH/OW. The source row is floor(oy · H/OH) with the ratio
//         rounded to f32 on the host, as PyTorch's `interpolate(size=…, mode="nearest")` computes
//         it, so a 2x upsample and the UNet's upsample to an odd skip size both index as torch does.
// TRANSPOSE: x [batch, R, C] → y [batch, C, R] (`a_len` = R, `b_len` = C): feature maps
//         [B, C, H·W] to token rows [B, H·W, C] for attention, and back.
// PIXEL_SHUFFLE: x [planes·r², H, W] → y [planes, OH = H·r, OW = W·r] (`scale_h` = r): output
//         (p, oy, ox) reads input plane p·r² + (oy % r)·r + ox % r at (oy / r, ox / r).
// PIXEL_UNSHUFFLE: x [planes, H, W] → y [planes·r², OH = H / r, OW = W / r] (`a_len`/`b_len` = H/W):
//         output plane q reads input plane q / r² at (oy·r + k / r, ox·r + k % r), k = q % r².
// BILINEAR: bilinear resize to any size, x [planes, H, W] → y [planes, OH, OW] (`a_len`/`b_len` =
//         H/W), as PyTorch's `interpolate(size=…, mode="bilinear")`: the source coordinate is
//         (o + 0.5) · scale - 0.5 floored at 0 (scale = H/OH), or with ALIGNED
//         (`align_corners=True`) o · scale (scale = (H - 1)/(OH - 1)); the scales are f32 bits.
// CONCAT: y = concatenation of x and b along one dimension. With everything before that
//         dimension flattened into `outer` rows, each row of y is a row of x (a_len values)
//         followed by a row of b (b_len values): the skip connections' channel concat.

struct Params {
    n: u32,
    a_len: u32,
    b_len: u32,
    row_stride: u32,
    out_h: u32,
    out_w: u32,
    // f32 bit patterns of H/OH and W/OW.
    scale_h: u32,
    scale_w: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
#if CONCAT
@group(0) @binding(3) var<storage, read> b: array<act>;
#endif

// Output element i of a [planes, out_h, out_w] map as (plane, row, column).
fn out_position(i: u32) -> vec3<u32> {
    let area = params.out_h * params.out_w;
    let rest = i % area;
    return vec3<u32>(i / area, rest / params.out_w, rest % params.out_w);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * params.row_stride + gid.x;
    if (i >= params.n) {
        return;
    }
#if UPSAMPLE
    let h = params.a_len;
    let w = params.b_len;
    let at = out_position(i);
    let plane = at.x;
    let oy = at.y;
    let ox = at.z;
    let sy = min(u32(floor(f32(oy) * bitcast<f32>(params.scale_h))), h - 1u);
    let sx = min(u32(floor(f32(ox) * bitcast<f32>(params.scale_w))), w - 1u);
    y[i] = x[(plane * h + sy) * w + sx];
#endif
#if TRANSPOSE
    let plane = params.a_len * params.b_len;
    let b = i / plane;
    let r2 = i % plane;
    let c = r2 / params.a_len;
    let r = r2 % params.a_len;
    y[i] = x[b * plane + r * params.b_len + c];
#endif
#if PIXEL_SHUFFLE
    let r = params.scale_h;
    let at = out_position(i);
    let oy = at.y;
    let ox = at.z;
    let source = at.x * r * r + (oy % r) * r + ox % r;
    y[i] = x[(source * params.a_len + oy / r) * params.b_len + ox / r];
#endif
#if PIXEL_UNSHUFFLE
    let r = params.scale_h;
    let at = out_position(i);
    let k = at.x % (r * r);
    y[i] = x[((at.x / (r * r)) * params.a_len + at.y * r + k / r) * params.b_len + at.z * r + k % r];
#endif
#if BILINEAR
    let h = params.a_len;
    let w = params.b_len;
    let at = out_position(i);
#if ALIGNED
    let fy = f32(at.y) * bitcast<f32>(params.scale_h);
    let fx = f32(at.z) * bitcast<f32>(params.scale_w);
#else
    let fy = max((f32(at.y) + 0.5) * bitcast<f32>(params.scale_h) - 0.5, 0.0);
    let fx = max((f32(at.z) + 0.5) * bitcast<f32>(params.scale_w) - 0.5, 0.0);
#endif
    let y0 = min(u32(fy), h - 1u);
    let x0 = min(u32(fx), w - 1u);
    let y1 = min(y0 + 1u, h - 1u);
    let x1 = min(x0 + 1u, w - 1u);
    let ly = fy - f32(y0);
    let lx = fx - f32(x0);
    let base = at.x * h * w;
    let top = (1.0 - lx) * f32(x[base + y0 * w + x0]) + lx * f32(x[base + y0 * w + x1]);
    let bottom = (1.0 - lx) * f32(x[base + y1 * w + x0]) + lx * f32(x[base + y1 * w + x1]);
    y[i] = act((1.0 - ly) * top + ly * bottom);
#endif
#if CONCAT
    let row_len = params.a_len + params.b_len;
    let row = i / row_len;
    let col = i % row_len;
    if (col < params.a_len) {
        y[i] = x[row * params.a_len + col];
    } else {
        y[i] = b[row * params.b_len + col - params.a_len];
    }
#endif
}
