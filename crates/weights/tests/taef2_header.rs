//! The header reader on real trained weights (TAEF2, converted from PyTorch by the safetensors
//! library), reading only the header's bytes as a stream would.

use std::io::Read;

use darkroom_weights::safetensors::{header_span, Dtype, Header};

#[test]
fn reads_the_taef2_decoder_header_from_its_first_bytes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/taef2/taef2_decoder.safetensors");
    let file_len = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::File::open(path).unwrap();
    let mut first8 = [0u8; 8];
    file.read_exact(&mut first8).unwrap();
    let span = header_span(first8, file_len).unwrap();
    assert!(span < 64 << 10, "header of {span} bytes");
    let mut prefix = first8.to_vec();
    prefix.resize(span as usize, 0);
    file.read_exact(&mut prefix[8..]).unwrap();

    let header = Header::parse(&prefix, file_len).unwrap();
    assert_eq!(header.tensors.len(), 79);
    assert!(header.tensors.iter().all(|t| t.dtype == Dtype::F16));
    let params: u64 = header.tensors.iter().map(|t| t.elements()).sum();
    assert!((1_300_000..1_400_000).contains(&params), "{params} parameters");
    // The decoder starts with Conv2d(32 latent channels → 64) at position 1 of the nn.Sequential
    // (position 0 is the tanh clamp, which has no weights).
    let first_conv = header.get("1.weight").expect("1.weight");
    assert_eq!(first_conv.shape, [64, 32, 3, 3]);
    // The tensors tile the data section exactly: the last one ends at the end of the file.
    assert_eq!(header.tensors.last().unwrap().end, file_len);
}

#[test]
fn decodes_f16_tensors_to_f32() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/taef2/taef2_decoder.safetensors");
    let file = darkroom_weights::SafetensorsFile::from_bytes(std::fs::read(path).unwrap()).unwrap();
    let info = file.header.get("1.bias").unwrap().clone();
    let values = file.to_f32(&info).unwrap();
    assert_eq!(values.len(), 64);
    // Trained biases: finite, not all zero, modest in size.
    assert!(values.iter().all(|v| v.is_finite() && v.abs() < 100.0));
    assert!(values.iter().any(|&v| v != 0.0));
    // The bytes decode as IEEE half precision: check one by hand.
    let raw = file.tensor_bytes(&info);
    let bits = u16::from_le_bytes([raw[0], raw[1]]);
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let mant = (bits & 0x3ff) as f32;
    let manual = if exp == 0 {
        sign * mant * 2f32.powi(-24)
    } else {
        sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15)
    };
    assert_eq!(values[0], manual);
}
