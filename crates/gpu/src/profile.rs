//! Per-kernel GPU time from timestamp queries: while profiling is on, every dispatch writes a
//! timestamp at the start and end of its compute pass, and [`Gpu::end_profile`] sums the
//! durations per shader variant. Only where the adapter offers `timestamp-query`.

use crate::device::Gpu;
use crate::error::GpuError;
use crate::tensor::read_buffer;

/// Dispatches per query set (two timestamps each; wgpu caps a set at 4096 queries).
const PER_SET: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

pub(crate) struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    labels: Vec<String>,
}

impl Profiler {
    pub(crate) fn new() -> Profiler {
        Profiler { sets: Vec::new(), labels: Vec::new() }
    }

    /// The query set and first index for the next dispatch, labelled `label`.
    pub(crate) fn next(&mut self, device: &wgpu::Device, label: String) -> (wgpu::QuerySet, u32) {
        let i = self.labels.len() as u32;
        if i / PER_SET >= self.sets.len() as u32 {
            self.sets.push(device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: PER_SET * 2,
            }));
        }
        self.labels.push(label);
        (self.sets[(i / PER_SET) as usize].clone(), (i % PER_SET) * 2)
    }
}

/// One shader variant's share of the profiled work.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// The variant ([`crate::shaders::Variant::key`]): file, activation type, defines, entry.
    pub kernel: String,
    pub dispatches: usize,
    pub seconds: f64,
}

impl Gpu {
    /// Starts recording per-dispatch timestamps. False (and nothing recorded) where the adapter
    /// has no timestamp queries.
    pub fn begin_profile(&self) -> bool {
        if !self.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return false;
        }
        *self.profiler.lock().unwrap_or_else(|p| p.into_inner()) = Some(Profiler::new());
        true
    }

    /// Stops recording, waits for the recorded work and returns GPU time per kernel, largest
    /// first. Empty if profiling was not on.
    pub async fn end_profile(&self) -> Result<Vec<KernelTime>, GpuError> {
        let Some(profiler) = self.profiler.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(Vec::new());
        };
        let period = self.queue.get_timestamp_period() as f64 * 1e-9;
        let mut totals: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
        for (s, set) in profiler.sets.iter().enumerate() {
            let first = s * PER_SET as usize;
            let count = (profiler.labels.len() - first).min(PER_SET as usize);
            let bytes = (count * 2 * 8) as u64;
            let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.record(|encoder| encoder.resolve_query_set(set, 0..(count * 2) as u32, &resolved, 0));
            let data = read_buffer(self, &resolved, bytes).await?;
            let stamps: Vec<u64> =
                data.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
            for (j, label) in profiler.labels[first..first + count].iter().enumerate() {
                let (start, end) = (stamps[2 * j], stamps[2 * j + 1]);
                let entry = totals.entry(label.clone()).or_default();
                entry.0 += 1;
                entry.1 += end.saturating_sub(start) as f64 * period;
            }
        }
        let mut out: Vec<KernelTime> = totals
            .into_iter()
            .map(|(kernel, (dispatches, seconds))| KernelTime { kernel, dispatches, seconds })
            .collect();
        out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Ok(out)
    }
}
