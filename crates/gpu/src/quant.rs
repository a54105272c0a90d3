//! Weight matrices in the layouts the kernels read: f32, f16, int8 per output channel, or 4-bit
//! in groups of 32 along the input with an f16 scale per group. Quantization happens here on the
//! CPU at load; dequantization happens inside the kernels' inner loops.
//!
//! A weight is a matrix [rows = outputs, cols = inputs] (a conv's [O, I, kh, kw] flattened to
//! [O, I·kh·kw]), stored row by row, each row padded to whole 32-bit words (and for 4-bit to
//! whole groups of 32), zeros in the padding.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    /// int8, symmetric, one f32 scale per output row.
    Q8,
    /// 4-bit, symmetric, one f16 scale per 32 inputs of a row.
    Q4,
}

pub const Q4_GROUP: usize = 32;

impl WeightFormat {
    /// The shader define that selects this format in matmul/conv kernels.
    pub fn define(self) -> &'static str {
        match self {
            WeightFormat::F32 => "W_F32",
            WeightFormat::F16 => "W_F16",
            WeightFormat::Q8 => "W_Q8",
            WeightFormat::Q4 => "W_Q4",
        }
    }

    pub const ALL: [WeightFormat; 4] =
        [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8, WeightFormat::Q4];

    /// 32-bit words per stored row of `cols` inputs.
    pub fn row_words(self, cols: usize) -> usize {
        match self {
            WeightFormat::F32 => cols,
            WeightFormat::F16 => cols.div_ceil(2),
            WeightFormat::Q8 => cols.div_ceil(4),
            WeightFormat::Q4 => cols.div_ceil(Q4_GROUP) * Q4_GROUP / 8,
        }
    }

    /// Scale groups per row (0 where the format has no scales).
    pub fn groups_per_row(self, cols: usize) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::F16 => 0,
            WeightFormat::Q8 => 1,
            WeightFormat::Q4 => cols.div_ceil(Q4_GROUP),
        }
    }
}

/// A weight matrix packed on the CPU, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u32>,
    /// Q8: f32 bits, one per row. Q4: f16 pairs, `groups_per_row` per row, flat. Empty otherwise.
    pub scales: Vec<u32>,
}

impl PackedWeight {
    /// Packs `values` (row-major [rows, cols]) into `format`.
    pub fn pack(values: &[f32], rows: usize, cols: usize, format: WeightFormat) -> PackedWeight {
        assert_eq!(values.len(), rows * cols, "pack: {rows}x{cols} needs {} values", rows * cols);
        let row_words = format.row_words(cols);
        let mut data = vec![0u32; rows * row_words];
        let mut scales = Vec::new();
        let mut f16_scales: Vec<f16> = Vec::new();
        for (r, row) in values.chunks_exact(cols.max(1)).take(rows).enumerate() {
            let out = &mut data[r * row_words..][..row_words];
            match format {
                WeightFormat::F32 => {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = v.to_bits();
                    }
                }
                WeightFormat::F16 => {
                    for (c, &v) in row.iter().enumerate() {
                        out[c / 2] |= (f16::from_f32(v).to_bits() as u32) << (16 * (c % 2));
                    }
                }
                WeightFormat::Q8 => {
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    for (c, &v) in row.iter().enumerate() {
                        let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                        out[c / 4] |= (q as u8 as u32) << (8 * (c % 4));
                    }
                    scales.push(scale.to_bits());
                }
                WeightFormat::Q4 => {
                    for (g, group) in row.chunks(Q4_GROUP).enumerate() {
                        let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                        // Quantize against the scale as the kernel will see it (rounded to f16).
                        let scale = f16::from_f32(if max > 0.0 { max / 7.0 } else { 1.0 });
                        let s = scale.to_f32();
                        for (i, &v) in group.iter().enumerate() {
                            let c = g * Q4_GROUP + i;
                            let q = (v / s).round().clamp(-8.0, 7.0) as i32 + 8;
                            out[c / 8] |= (q as u32) << (4 * (c % 8));
                        }
                        f16_scales.push(scale);
                    }
                    // Rows with a partial last group still own a whole group of scale.
                }
            }
        }
        if format == WeightFormat::Q4 {
            scales = f16_scales
                .chunks(2)
                .map(|p| p[0].to_bits() as u32 | (p.get(1).map_or(0, |s| s.to_bits()) as u32) << 16)
                .collect();
        }
        PackedWeight { format, rows, cols, data, scales }
    }

    /// The values the kernels compute with, for CPU references.
    pub fn dequantize(&self) -> Vec<f32> {
        let row_words = self.format.row_words(self.cols);
        let groups = self.format.groups_per_row(self.cols);
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let row = &self.data[r * row_words..][..row_words];
            for c in 0..self.cols {
                out.push(match self.format {
                    WeightFormat::F32 => f32::from_bits(row[c]),
                    WeightFormat::F16 => f16::from_bits((row[c / 2] >> (16 * (c % 2))) as u16).to_f32(),
                    WeightFormat::Q8 => {
                        let q = (row[c / 4] >> (8 * (c % 4))) as u8 as i8;
                        q as f32 * f32::from_bits(self.scales[r])
                    }
                    WeightFormat::Q4 => {
                        let q = ((row[c / 8] >> (4 * (c % 8))) & 0xf) as i32 - 8;
                        let s = r * groups + c / Q4_GROUP;
                        let scale = f16::from_bits((self.scales[s / 2] >> (16 * (s % 2))) as u16).to_f32();
                        q as f32 * scale
                    }
                });
            }
        }
        out
    }

    /// Bytes on the GPU (data and scales).
    pub fn bytes(&self) -> usize {
        (self.data.len() + self.scales.len()) * 4
    }

    /// The serialised form cached on the device so a second load skips quantizing: "DRQW",
    /// format version, format, rows, cols, word counts, then the words (little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.bytes());
        out.extend_from_slice(b"DRQW");
        let format = match self.format {
            WeightFormat::F32 => 0u32,
            WeightFormat::F16 => 1,
            WeightFormat::Q8 => 2,
            WeightFormat::Q4 => 3,
        };
        for v in [PACKED_FORMAT_VERSION, format, self.rows as u32, self.cols as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.data.len() as u32, self.scales.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for w in self.data.iter().chain(&self.scales) {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Reads [`PackedWeight::to_bytes`]; `None` for anything else (another version, a torn
    /// write, sizes that do not fit the format), so a bad cache entry is re-made, not used.
    pub fn from_bytes(bytes: &[u8]) -> Option<PackedWeight> {
        let word = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(4 + 4 * i..8 + 4 * i)?.try_into().ok()?))
        };
        if bytes.get(..4)? != b"DRQW" || word(0)? != PACKED_FORMAT_VERSION {
            return None;
        }
        let format = match word(1)? {
            0 => WeightFormat::F32,
            1 => WeightFormat::F16,
            2 => WeightFormat::Q8,
            3 => WeightFormat::Q4,
            _ => return None,
        };
        let (rows, cols) = (word(2)? as usize, word(3)? as usize);
        let (n_data, n_scales) = (word(4)? as usize, word(5)? as usize);
        let expected_scales = match format {
            WeightFormat::F32 | WeightFormat::F16 => 0,
            WeightFormat::Q8 => rows,
            WeightFormat::Q4 => (rows * format.groups_per_row(cols)).div_ceil(2),
        };
        if n_data != rows.checked_mul(format.row_words(cols))? || n_scales != expected_scales {
            return None;
        }
        if bytes.len() != 28 + 4 * (n_data + n_scales) {
            return None;
        }
        let words: Vec<u32> =
            bytes[28..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let (data, scales) = words.split_at(n_data);
        Some(PackedWeight { format, rows, cols, data: data.to_vec(), scales: scales.to_vec() })
    }
}

/// Bumped whenever packing changes, so cached quantized weights from an older build are re-made.
pub const PACKED_FORMAT_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::TestRng;

    #[test]
    fn packed_weights_round_trip_through_bytes_and_refuse_damage() {
        let values = TestRng::new(3).vec(7 * 45);
        for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8, WeightFormat::Q4] {
            let packed = PackedWeight::pack(&values, 7, 45, format);
            let bytes = packed.to_bytes();
            assert_eq!(PackedWeight::from_bytes(&bytes), Some(packed.clone()), "{format:?}");
            assert_eq!(PackedWeight::from_bytes(&bytes[..bytes.len() - 1]), None, "truncated");
            let mut other_version = bytes.clone();
            other_version[4] ^= 1;
            assert_eq!(PackedWeight::from_bytes(&other_version), None, "another version");
            let mut bad_rows = bytes.clone();
            bad_rows[12] ^= 2;
            assert_eq!(PackedWeight::from_bytes(&bad_rows), None, "rows that do not fit");
        }
        assert_eq!(PackedWeight::from_bytes(b"not a weight"), None);
    }

    #[test]
    fn float_formats_round_trip() {
        let values = TestRng::new(3).vec(7 * 13);
        let f32w = PackedWeight::pack(&values, 7, 13, WeightFormat::F32);
        assert_eq!(f32w.dequantize(), values);
        let f16w = PackedWeight::pack(&values, 7, 13, WeightFormat::F16);
        for (a, b) in f16w.dequantize().iter().zip(&values) {
            assert!((a - b).abs() <= b.abs() * 1e-3 + 1e-7);
        }
        assert_eq!(f16w.data.len(), 7 * 7);
    }

    #[test]
    fn int8_error_is_within_half_a_step_of_each_rows_scale() {
        let (rows, cols) = (9, 37);
        let values = TestRng::new(4).vec(rows * cols);
        let q = PackedWeight::pack(&values, rows, cols, WeightFormat::Q8);
        let back = q.dequantize();
        for r in 0..rows {
            let row = &values[r * cols..][..cols];
            let step = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for c in 0..cols {
                assert!((back[r * cols + c] - row[c]).abs() <= step * 0.5 + 1e-7, "row {r} col {c}");
            }
        }
    }

    #[test]
    fn int4_error_is_within_half_a_step_of_each_groups_scale() {
        let (rows, cols) = (5, 70); // 70 = two full groups and a partial one
        let values = TestRng::new(5).vec(rows * cols);
        let q = PackedWeight::pack(&values, rows, cols, WeightFormat::Q4);
        assert_eq!(q.format.groups_per_row(cols), 3);
        assert_eq!(q.scales.len(), (rows * 3).div_ceil(2));
        let back = q.dequantize();
        for r in 0..rows {
            for g in 0..3 {
                let range = g * 32..((g + 1) * 32).min(cols);
                let max = values[r * cols..][range.clone()].iter().fold(0f32, |m, v| m.max(v.abs()));
                let step = max / 7.0 * 1.001; // f16 rounding of the scale
                for c in range {
                    let i = r * cols + c;
                    assert!((back[i] - values[i]).abs() <= step * 0.5 + 1e-6, "row {r} col {c}");
                }
            }
        }
    }

    #[test]
    fn all_zero_rows_stay_zero() {
        for format in WeightFormat::ALL {
            let q = PackedWeight::pack(&[0.0; 40], 2, 20, format);
            assert!(q.dequantize().iter().all(|&v| v == 0.0), "{format:?}");
        }
    }
}
