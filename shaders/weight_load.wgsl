// Shared by kernels that read packed weights (included with `#include weight_load.wgsl`).
// A weight is a matrix [rows, cols] stored row by row in 32-bit words, as crates/gpu/src/quant.rs
// packs it. The including shader declares `weights: array<u32>`, for W_Q8 `scales: array<f32>`,
// for W_Q4 `scales: array<u32>` (f16 pairs), and provides `weight_row_words()` and
// `weight_groups_per_row()`.

fn load_weight(row: u32, col: u32) -> f32 {
#if W_F32
    return bitcast<f32>(weights[row * weight_row_words() + col]);
#endif
#if W_F16
    return unpack2x16float(weights[row * weight_row_words() + (col >> 1u)])[col & 1u];
#endif
#if W_Q8
    let word = bitcast<i32>(weights[row * weight_row_words() + (col >> 2u)]);
    return f32(extractBits(word, (col & 3u) * 8u, 8u)) * scales[row];
#endif
#if W_Q4
    let word = weights[row * weight_row_words() + (col >> 3u)];
    let q = i32(extractBits(word, (col & 7u) * 4u, 4u)) - 8;
    let g = row * weight_groups_per_row() + (col >> 5u);
    return f32(q) * unpack2x16float(scales[g >> 1u])[g & 1u];
#endif
}
