//! PNG decoding for every image Darkroom reads (inputs, masks, control images, brief files):
//! the declared size is checked before anything is allocated, so a hundred-byte file that
//! claims 30000x30000 pixels is an error, not a 3.6 GB allocation. Text chunks are left to the
//! `png` crate, which bounds their decompression (2 MiB).

use crate::grid::Rgba;

/// The longest side read: 4x an upscaled 4096 output.
pub const MAX_SIDE: usize = 16384;
/// The most pixels read (256 MB as RGBA8).
pub const MAX_PIXELS: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PngError {
    #[error("not a readable PNG: {0}")]
    Unreadable(String),
    #[error("the PNG declares {width}x{height} pixels; at most {MAX_SIDE} a side and {MAX_PIXELS} in all are read")]
    TooLarge { width: usize, height: usize },
    #[error("the PNG declares an empty image ({width}x{height})")]
    Empty { width: usize, height: usize },
}

/// The size a PNG declares, from its header alone.
pub fn png_size(bytes: &[u8]) -> Result<(usize, usize), PngError> {
    let reader = png::Decoder::new(bytes).read_info().map_err(|e| PngError::Unreadable(e.to_string()))?;
    Ok((reader.info().width as usize, reader.info().height as usize))
}

/// A PNG (any colour type and bit depth; palettes expanded, 16-bit reduced) as 8-bit RGBA.
pub fn decode_png(bytes: &[u8]) -> Result<Rgba, PngError> {
    let unreadable = |e: &dyn std::fmt::Display| PngError::Unreadable(e.to_string());
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| unreadable(&e))?;
    let (width, height) = (reader.info().width as usize, reader.info().height as usize);
    if width == 0 || height == 0 {
        return Err(PngError::Empty { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE || width * height > MAX_PIXELS {
        return Err(PngError::TooLarge { width, height });
    }
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(|e| unreadable(&e))?;
    let data = &buf[..frame.buffer_size()];
    let pixels: Vec<u8> = match frame.color_type {
        png::ColorType::Rgba => data.to_vec(),
        png::ColorType::Rgb => data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::GrayscaleAlpha => {
            data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect()
        }
        png::ColorType::Grayscale => data.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => return Err(unreadable(&"a palette left unexpanded")),
    };
    if pixels.len() != width * height * 4 {
        return Err(unreadable(&format!("{} bytes of pixels for {width}x{height}", pixels.len())));
    }
    Ok(Rgba { width, height, pixels })
}

#[doc(hidden)]
/// For tests of hostile input: a PNG's signature and IHDR chunk (with its CRC) declaring `w`x`h` RGBA8, then an empty
/// IDAT and IEND: about 60 bytes.
pub fn header_only_png(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_file_claiming_a_huge_image_is_refused_before_allocating() {
        let png = header_only_png(30000, 30000);
        assert!(png.len() < 100, "{}", png.len());
        assert_eq!(png_size(&png), Ok((30000, 30000)));
        assert_eq!(decode_png(&png), Err(PngError::TooLarge { width: 30000, height: 30000 }));
        // One long side is enough to refuse.
        assert!(matches!(
            decode_png(&header_only_png(MAX_SIDE as u32 + 1, 1)),
            Err(PngError::TooLarge { .. })
        ));
        // A small image with no pixel data is an ordinary error.
        assert!(matches!(decode_png(&header_only_png(4, 4)), Err(PngError::Unreadable(_))));
    }

    #[test]
    fn garbage_is_unreadable() {
        assert!(matches!(decode_png(b"not a png"), Err(PngError::Unreadable(_))));
        assert!(matches!(decode_png(&[]), Err(PngError::Unreadable(_))));
    }
}
