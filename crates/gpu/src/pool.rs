//! Reuses storage buffers by size class, so a forward pass that allocates the same shapes step
//! after step stops allocating after the first step, and tracks the bytes held on the GPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Classes grow by quarter octaves (1, 1.25, 1.5, 1.75 × 2^k), so at most 25% is wasted.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let octave = 63 - bytes.leading_zeros() as u64; // floor(log2)
    let base = 1u64 << octave;
    if octave < 2 {
        return base;
    }
    let quarter = base / 4;
    bytes.div_ceil(quarter) * quarter
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in buffers the pool created and still holds (in use or free for reuse).
    pub allocated_bytes: u64,
    /// The most `allocated_bytes` ever reached.
    pub peak_allocated_bytes: u64,
    /// Bytes in buffers currently owned by live tensors.
    pub in_use_bytes: u64,
    /// Buffers created since the pool started (a count that stops growing in a steady loop).
    pub buffers_created: u64,
}

#[derive(Default)]
struct State {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

#[derive(Clone, Default)]
pub struct BufferPool {
    state: Arc<Mutex<State>>,
}

/// A buffer on loan from the pool; goes back on drop.
pub struct PooledBuffer {
    pub(crate) buffer: wgpu::Buffer,
    class: u64,
    pool: BufferPool,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.stats.in_use_bytes -= self.class;
        state.free.entry(self.class).or_default().push(self.buffer.clone());
    }
}

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

impl BufferPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer of at least `bytes`. With `init`, a new buffer is created mapped and filled
    /// (never a reused one: a queued write could land before earlier recorded work reads it).
    pub fn take(&self, device: &wgpu::Device, bytes: u64, init: Option<&[u8]>) -> PooledBuffer {
        let class = size_class(bytes);
        let mut state = self.lock();
        let reused = if init.is_none() { state.free.get_mut(&class).and_then(Vec::pop) } else { None };
        let buffer = match reused {
            Some(buffer) => buffer,
            None => {
                state.stats.allocated_bytes += class;
                state.stats.buffers_created += 1;
                state.stats.peak_allocated_bytes =
                    state.stats.peak_allocated_bytes.max(state.stats.allocated_bytes);
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("pooled"),
                    size: class,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: init.is_some(),
                });
                if let Some(data) = init {
                    if let Ok(mut view) = buffer.slice(..).get_mapped_range_mut() {
                        view.slice(..data.len()).copy_from_slice(data);
                    }
                    buffer.unmap();
                }
                buffer
            }
        };
        state.stats.in_use_bytes += class;
        PooledBuffer { buffer, class, pool: self.clone() }
    }

    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Restarts the peak from the bytes held now (to measure one stage's peak).
    pub fn reset_peak(&self) {
        let mut state = self.lock();
        state.stats.peak_allocated_bytes = state.stats.allocated_bytes;
    }

    /// Releases the free buffers (between models, or when the app is told memory is short).
    pub fn trim(&self) {
        let mut state = self.lock();
        let freed: u64 = state.free.iter().map(|(class, list)| class * list.len() as u64).sum();
        state.free.clear();
        state.stats.allocated_bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_waste_at_most_a_quarter() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for bytes in [300u64, 5_000, 77 * 768 * 4, 4096 * 320 * 4, 123_456_789] {
            let class = size_class(bytes);
            assert!(class >= bytes && (class as f64) <= bytes as f64 * 1.25 + 256.0, "{bytes} -> {class}");
            assert_eq!(class % 4, 0);
        }
    }
}
