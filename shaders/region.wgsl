// Copies a rectangle of feature maps into another, in place: for every plane p,
//   dst[p, dst_y + y, dst_x + x] = src[p, (src_y + y) / scale, (src_x + x) / scale]
// for y < h, x < w. src_y and src_x are in the source's coordinates multiplied by `scale`, so
// scale 2 copies from a nearest 2x upsampling of the source without making it: a tiled VAE
// decode gathers a tile and its border from the stored tiles around it with this, and pastes
// each finished tile into the whole image. One output element per invocation (2-D dispatch as
// in elementwise.wgsl).

struct Params {
    n: u32,
    row_stride: u32,
    h: u32,
    w: u32,
    src_h: u32,
    src_w: u32,
    dst_h: u32,
    dst_w: u32,
    src_y: u32,
    src_x: u32,
    dst_y: u32,
    dst_x: u32,
    scale: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * params.row_stride + gid.x;
    if (i >= params.n) {
        return;
    }
    let area = params.h * params.w;
    let plane = i / area;
    let r = i % area;
    let ry = r / params.w;
    let rx = r % params.w;
    let sy = (params.src_y + ry) / params.scale;
    let sx = (params.src_x + rx) / params.scale;
    let dy = params.dst_y + ry;
    let dx = params.dst_x + rx;
    y[(plane * params.dst_h + dy) * params.dst_w + dx] = x[(plane * params.src_h + sy) * params.src_w + sx];
}
