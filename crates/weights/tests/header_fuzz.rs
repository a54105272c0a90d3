//! Property tests of the safetensors header parser and the stream reader: arbitrary bytes, and
//! real headers with random mutations (lengths, offsets, dtypes, shapes, truncation), give a
//! typed error or a header whose every tensor lies inside the file — never a panic or a huge
//! allocation.

use darkroom_weights::{Header, SafetensorsStream};
use proptest::prelude::*;

fn file(json: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

fn check(bytes: &[u8], file_len: u64) {
    if let Ok(header) = Header::parse(bytes, file_len) {
        let mut last = header.data_start;
        for t in &header.tensors {
            assert!(t.start >= last && t.end >= t.start && t.end <= file_len, "{t:?} outside the file");
            assert_eq!(t.end - t.start, t.elements() * t.dtype.size_bytes());
            last = t.end;
        }
    }
    // The stream reader takes the same bytes without panicking either.
    let mut stream = SafetensorsStream::new(file_len.max(bytes.len() as u64));
    for part in bytes.chunks(13) {
        if stream.push(part).is_err() {
            break;
        }
    }
}

const DTYPES: [&str; 6] = ["F32", "F16", "BF16", "I64", "U8", "F8_E5M2"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), extra in 0u64..1000) {
        check(&bytes, bytes.len() as u64 + extra);
    }

    /// Small length fields (0 included, which once made the stream wait forever) with any
    /// bytes after them, pushed in any slicing.
    #[test]
    fn small_length_fields_end(n in 0u64..12, rest in proptest::collection::vec(any::<u8>(), 0..40), piece in 1usize..9) {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend(rest);
        let mut stream = SafetensorsStream::new(bytes.len() as u64);
        for part in bytes.chunks(piece) {
            if stream.push(part).is_err() {
                break;
            }
        }
        check(&bytes, bytes.len() as u64);
    }

    #[test]
    fn huge_length_fields_are_refused_without_allocating(n in any::<u64>(), rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend(rest);
        check(&bytes, bytes.len() as u64);
    }

    #[test]
    fn mutated_headers_give_errors_or_consistent_tensors(
        a_end in 0u64..40, b_start in 0u64..40, b_end in 0u64..48,
        shape_a in proptest::collection::vec(0u64..5, 0..3),
        dtype in 0usize..6, data_len in 0usize..48, truncate in 0usize..20,
    ) {
        let json = format!(
            r#"{{"a":{{"dtype":"{}","shape":{:?},"data_offsets":[0,{a_end}]}},"b":{{"dtype":"U8","shape":[{}],"data_offsets":[{b_start},{b_end}]}},"__metadata__":{{"k":"v"}}}}"#,
            DTYPES[dtype], shape_a, b_end.saturating_sub(b_start)
        );
        let bytes = file(&json, data_len);
        let cut = bytes.len().saturating_sub(truncate);
        check(&bytes[..cut], cut as u64);
        check(&bytes, bytes.len() as u64);
    }
}
