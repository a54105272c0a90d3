// Images for display and input, one pixel per invocation (2-D dispatch).
//
// TO_RGBA8: x [C ≤ 4, H, W] → packed RGBA8 pixels (alpha 255): rgb = clamp(M · x + bias, 0, 1)
//           rounded to bytes. M = ½·I, bias = ½ turns a decoded image in [-1, 1] into pixels;
//           a latent-to-RGB matrix makes a cheap preview of latents.
// FROM_RGBA8: packed RGBA8 pixels → y [3, H, W] = byte / 255 · scale + shift (scale 2, shift −1
//           gives the VAE encoder's [-1, 1]).

struct Params {
    pixels: u32,
    channels: u32,
    row_stride: u32,
    _pad: u32,
    // Rows r, g, b of M (one column per input channel) and the bias in .w of row 3.
    m: array<vec4<f32>, 4>,
}

@group(0) @binding(0) var<uniform> params: Params;
#if TO_RGBA8
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read_write> pixels: array<u32>;
#endif
#if FROM_RGBA8
@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
#endif

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let p = gid.y * params.row_stride + gid.x;
    if (p >= params.pixels) {
        return;
    }
#if TO_RGBA8
    var v = vec4<f32>(0.0);
    for (var c = 0u; c < params.channels; c++) {
        v[c] = f32(x[c * params.pixels + p]);
    }
    let bias = params.m[3].xyz;
    let rgb = clamp(vec3<f32>(dot(params.m[0], v), dot(params.m[1], v), dot(params.m[2], v)) + bias, vec3<f32>(0.0), vec3<f32>(1.0));
    let bytes = vec3<u32>(round(rgb * 255.0));
    pixels[p] = bytes.x | (bytes.y << 8u) | (bytes.z << 16u) | (255u << 24u);
#endif
#if FROM_RGBA8
    let word = pixels[p];
    let scale = params.m[0].x;
    let shift = params.m[0].y;
    for (var c = 0u; c < 3u; c++) {
        let byte = f32(extractBits(word, c * 8u, 8u));
        y[c * params.pixels + p] = act(byte / 255.0 * scale + shift);
    }
#endif
}
