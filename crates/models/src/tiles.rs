//! A feature map held as tiles: the tiled VAE decode keeps each level's activations as separate
//! tensors, one per tile, so no buffer and no binding grows with the image, and takes each tile
//! with the border its 3x3 convolutions read from the tiles around it.

use darkroom_gpu::ops::{copy_region, Padding, Region};
use darkroom_gpu::{DType, Gpu, GpuError, Tensor};

/// Rows `y0..y1`, columns `x0..x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub y0: usize,
    pub x0: usize,
    pub y1: usize,
    pub x1: usize,
}

impl Rect {
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }

    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    pub fn scaled(&self, s: usize) -> Rect {
        Rect { y0: self.y0 * s, x0: self.x0 * s, y1: self.y1 * s, x1: self.x1 * s }
    }

    fn intersect(&self, o: &Rect) -> Option<Rect> {
        let r = Rect {
            y0: self.y0.max(o.y0),
            x0: self.x0.max(o.x0),
            y1: self.y1.min(o.y1),
            x1: self.x1.min(o.x1),
        };
        (r.y0 < r.y1 && r.x0 < r.x1).then_some(r)
    }
}

/// Tiles of at most `tile` x `tile` covering `height` x `width`, row by row; the last row and
/// column take what is left.
pub fn grid(height: usize, width: usize, tile: usize) -> Vec<Rect> {
    let tile = tile.max(1);
    let mut rects = Vec::new();
    for y0 in (0..height).step_by(tile) {
        for x0 in (0..width).step_by(tile) {
            rects.push(Rect { y0, x0, y1: (y0 + tile).min(height), x1: (x0 + tile).min(width) });
        }
    }
    rects
}

/// A [1, C, H, W] map as tensors [1, C, h, w] over rectangles that cover it once.
pub struct Tiles {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub dtype: DType,
    pub parts: Vec<(Rect, Tensor)>,
}

fn shape_error(detail: String) -> GpuError {
    GpuError::Shape { op: "tiles", detail }
}

impl Tiles {
    /// A whole map as one tile.
    pub fn whole(x: &Tensor) -> Result<Tiles, GpuError> {
        let [1, c, h, w] = *x.shape() else {
            return Err(shape_error(format!("tiles hold one [1, C, H, W] map, got {:?}", x.shape())));
        };
        Ok(Tiles {
            channels: c,
            height: h,
            width: w,
            dtype: x.dtype(),
            parts: vec![(Rect { y0: 0, x0: 0, y1: h, x1: w }, x.clone())],
        })
    }

    /// Tiles computed one rectangle at a time (each tensor [1, C, rect's size]).
    pub fn from_parts(height: usize, width: usize, parts: Vec<(Rect, Tensor)>) -> Result<Tiles, GpuError> {
        let Some((_, first)) = parts.first() else {
            return Err(shape_error("no tiles".into()));
        };
        let (channels, dtype) = (first.shape()[1], first.dtype());
        let mut area = 0;
        for (r, t) in &parts {
            if t.shape() != [1, channels, r.height(), r.width()]
                || t.dtype() != dtype
                || r.y1 > height
                || r.x1 > width
            {
                return Err(shape_error(format!("{t:?} does not fill {r:?} of a {height}x{width} map")));
            }
            area += r.height() * r.width();
        }
        if area != height * width {
            return Err(shape_error(format!("the tiles cover {area} of {height}x{width} pixels")));
        }
        Ok(Tiles { channels, height, width, dtype, parts })
    }

    pub fn tensors(&self) -> Vec<&Tensor> {
        self.parts.iter().map(|(_, t)| t).collect()
    }

    /// The map's rectangle `rect`, seen through a nearest `scale`x upsampling (`rect` in the
    /// upsampled coordinates), with `halo` more pixels on each side that lies inside the map.
    /// Also returns the padding a convolution needs to give exactly `rect` back: zeros where
    /// the rectangle meets the map's edge, none where the border came from a neighbour.
    pub fn gather(
        &self,
        gpu: &Gpu,
        rect: Rect,
        halo: usize,
        scale: usize,
    ) -> Result<(Tensor, Padding), GpuError> {
        let (h, w) = (self.height * scale, self.width * scale);
        if rect.y1 > h || rect.x1 > w || rect.height() == 0 || rect.width() == 0 {
            return Err(shape_error(format!("{rect:?} is not inside a {h}x{w} map")));
        }
        let outer = Rect {
            y0: rect.y0.saturating_sub(halo),
            x0: rect.x0.saturating_sub(halo),
            y1: (rect.y1 + halo).min(h),
            x1: (rect.x1 + halo).min(w),
        };
        let padding = Padding {
            top: halo - (rect.y0 - outer.y0),
            left: halo - (rect.x0 - outer.x0),
            bottom: halo - (outer.y1 - rect.y1),
            right: halo - (outer.x1 - rect.x1),
        };
        // A tile that is exactly one stored part needs no copy.
        if scale == 1 {
            if let Some((_, t)) = self.parts.iter().find(|(r, _)| *r == outer) {
                return Ok((t.clone(), padding));
            }
        }
        let out = darkroom_gpu::ops::region::blank(
            gpu,
            &[1, self.channels, outer.height(), outer.width()],
            self.dtype,
        );
        for (r, t) in &self.parts {
            let Some(common) = outer.intersect(&r.scaled(scale)) else { continue };
            copy_region(
                gpu,
                t,
                &out,
                Region {
                    src_y: common.y0 - r.y0 * scale,
                    src_x: common.x0 - r.x0 * scale,
                    dst_y: common.y0 - outer.y0,
                    dst_x: common.x0 - outer.x0,
                    h: common.height(),
                    w: common.width(),
                    scale,
                },
            )?;
        }
        Ok((out, padding))
    }

    /// The stored tensor of exactly `rect` taken out (no copy), or a copy of that rectangle.
    pub fn take(&mut self, gpu: &Gpu, rect: Rect) -> Result<Tensor, GpuError> {
        if let Some(i) = self.parts.iter().position(|(r, _)| *r == rect) {
            return Ok(self.parts.swap_remove(i).1);
        }
        Ok(self.gather(gpu, rect, 0, 1)?.0)
    }

    /// The whole map as one tensor.
    pub fn assemble(&self, gpu: &Gpu) -> Result<Tensor, GpuError> {
        Ok(self.gather(gpu, Rect { y0: 0, x0: 0, y1: self.height, x1: self.width }, 0, 1)?.0)
    }
}
