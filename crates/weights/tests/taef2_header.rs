//! The header reader on real trained weights (TAEF2, converted from PyTorch by the safetensors
//! library), reading only the header's bytes as a stream would.

use std::io::Read;

use darkroom_weights::safetensors::{header_span, Dtype, Header};

#[test]
fn reads_the_taef2_decoder_header_from_its_first_bytes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/taef2/taef2_decoder.safetensors"
    );
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
    assert!(
        (1_300_000..1_400_000).contains(&params),
        "{params} parameters"
    );
    // The decoder starts with Conv2d(32 latent channels → 64) at position 1 of the nn.Sequential
    // (position 0 is the tanh clamp, which has no weights).
    let first_conv = header.get("1.weight").expect("1.weight");
    assert_eq!(first_conv.shape, [64, 32, 3, 3]);
    // The tensors tile the data section exactly: the last one ends at the end of the file.
    assert_eq!(header.tensors.last().unwrap().end, file_len);
}
