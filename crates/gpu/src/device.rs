//! Opening a GPU device, natively (wgpu on Vulkan/Metal/DX12) and in the browser (WebGPU),
//! from the same code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::GpuError;
use crate::pool::{BufferPool, PoolStats};
use crate::profile::Profiler;
use crate::shaders::Variant;

/// What a caller needs from the adapter. A missing feature or a too-small limit becomes a typed
/// [`GpuError`] before any work is submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    /// Require `shader-f16` (f16 activations). Without it the f32 kernels run.
    pub shader_f16: bool,
    pub min_storage_buffer_binding_size: u64,
    pub min_buffer_size: u64,
    pub min_workgroup_storage_size: u32,
    pub min_invocations_per_workgroup: u32,
    /// What these requirements serve, quoted in error messages ("SD-Turbo at 512x512").
    pub needed_for: &'static str,
}

impl Default for Requirements {
    /// What every Darkroom kernel needs: WebGPU's guaranteed minimums, where our tiled kernels
    /// use 256 invocations and up to 16 KiB of workgroup memory.
    fn default() -> Self {
        Requirements {
            shader_f16: false,
            min_storage_buffer_binding_size: 128 << 20,
            min_buffer_size: 256 << 20,
            min_workgroup_storage_size: 16 << 10,
            min_invocations_per_workgroup: 256,
            needed_for: "Darkroom's kernels",
        }
    }
}

impl Requirements {
    /// Checks an adapter's features and limits against these requirements.
    pub fn check(&self, features: wgpu::Features, limits: &wgpu::Limits) -> Result<(), GpuError> {
        if self.shader_f16 && !features.contains(wgpu::Features::SHADER_F16) {
            return Err(GpuError::FeatureMissing { feature: "shader-f16", needed_for: self.needed_for });
        }
        let checks: [(&'static str, u64, u64); 4] = [
            (
                "maxStorageBufferBindingSize",
                limits.max_storage_buffer_binding_size,
                self.min_storage_buffer_binding_size,
            ),
            ("maxBufferSize", limits.max_buffer_size, self.min_buffer_size),
            (
                "maxComputeWorkgroupStorageSize",
                limits.max_compute_workgroup_storage_size.into(),
                self.min_workgroup_storage_size.into(),
            ),
            (
                "maxComputeInvocationsPerWorkgroup",
                limits.max_compute_invocations_per_workgroup.into(),
                self.min_invocations_per_workgroup.into(),
            ),
        ];
        for (limit, have, need) in checks {
            if have < need {
                return Err(GpuError::LimitTooSmall { limit, have, need, needed_for: self.needed_for });
            }
        }
        Ok(())
    }
}

/// What the opened device can do, in the terms the UI and the CLI show.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub adapter_name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

impl Capabilities {
    /// A discrete or integrated GPU as the platform reports it (not a CPU rasteriser such as
    /// lavapipe or SwiftShader, and not a browser, which does not say).
    pub fn is_gpu(&self) -> bool {
        matches!(self.device_type.as_str(), "DiscreteGpu" | "IntegratedGpu")
    }
}

/// The GEMM's tile per workgroup (matmul.wgsl): 64x64, or 128x128 (`BIG`), which does twice
/// the arithmetic per workgroup-memory read but needs a large product to fill a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GemmTiles {
    /// 128x128 where the product has at least 256 such tiles, 64x64 otherwise.
    Auto = 0,
    Small = 1,
    Big = 2,
    /// 64x64 with K cut into three ranges summed by a second pass (tests; Auto splits K on
    /// GPUs when a product has fewer than 512 workgroups).
    SplitK = 3,
}

/// Recorded, unsubmitted work: the encoder, the compute pass consecutive dispatches share (one
/// pass, not one per dispatch; ended before any copy), and the uniform block their parameters
/// are packed into.
struct Pending {
    // Fields drop in order: the pass ends before its encoder goes.
    pass: Option<wgpu::ComputePass<'static>>,
    uniforms: Option<UniformBlock>,
    encoder: wgpu::CommandEncoder,
}

/// Kernel parameters, each in its own aligned slot of one buffer (a buffer per dispatch cost
/// more than the dispatch on a fast GPU). Written to the GPU when full or at the submit.
struct UniformBlock {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
}

/// Slots per uniform block.
const UNIFORM_SLOTS: u64 = 256;

/// A kernel's parameters: a slot of a uniform block.
pub(crate) struct Uniform {
    buffer: wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl Uniform {
    pub(crate) fn as_entire_binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }
}

/// An open device: the handle every op takes (`&Gpu`), never a global.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    capabilities: Capabilities,
    limits: wgpu::Limits,
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
    /// Each compiled pipeline's variant key, for the profiler's labels.
    pipeline_keys: Mutex<HashMap<wgpu::ComputePipeline, String>>,
    /// Per-dispatch timestamps while a profile is being taken.
    pub(crate) profiler: Mutex<Option<Profiler>>,
    /// Bytes in live weight buffers (matrices, scales, biases): each buffer subtracts its own
    /// when it is dropped.
    pub(crate) weight_bytes: Arc<AtomicU64>,
    /// Which GEMM tile the matmul/linear/conv ops use ([`GemmTiles`] as a u8).
    gemm_tiles: std::sync::atomic::AtomicU8,
    /// Work is recorded and then dropped, never submitted ([`Gpu::set_record_only`]).
    record_only: std::sync::atomic::AtomicBool,
    pub(crate) pool: BufferPool,
    /// Work recorded but not yet submitted: ops append here; a readback or `flush` submits.
    pending: Mutex<Option<Pending>>,
    /// Errors the device reported outside any error scope; surfaced by the next readback.
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it is.
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Opens the best adapter (high-performance preference) with its real limits and the optional
    /// features our kernels can use (`shader-f16`, subgroups natively).
    pub async fn open(req: &Requirements) -> Result<Gpu, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter { reason: e.to_string() })?;

        let features = adapter.features();
        let limits = adapter.limits();
        req.check(features, &limits)?;

        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("darkroom"),
                required_features: features & wanted,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::DeviceRequest(e.to_string()))?;

        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));

        let lost = Arc::new(Mutex::new(None));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            let why = match reason {
                wgpu::DeviceLostReason::Destroyed => "destroyed".to_string(),
                wgpu::DeviceLostReason::Unknown if message.is_empty() => "no reason given".to_string(),
                wgpu::DeviceLostReason::Unknown => message,
            };
            slot.get_or_insert(why);
        });

        let info = adapter.get_info();
        let granted = device.features();
        let capabilities = Capabilities {
            adapter_name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: [info.driver, info.driver_info].join(" ").trim().to_string(),
            shader_f16: granted.contains(wgpu::Features::SHADER_F16),
            subgroups: granted.contains(wgpu::Features::SUBGROUP),
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        };
        Ok(Gpu {
            device,
            queue,
            capabilities,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            pipeline_keys: Mutex::new(HashMap::new()),
            profiler: Mutex::new(None),
            weight_bytes: Arc::new(AtomicU64::new(0)),
            gemm_tiles: std::sync::atomic::AtomicU8::new(GemmTiles::Auto as u8),
            record_only: std::sync::atomic::AtomicBool::new(false),
            pool: BufferPool::default(),
            pending: Mutex::new(None),
            uncaptured,
            lost,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The compute pipeline for a shader variant, created once and cached. A variant that does
    /// not preprocess is a bug in its wrapper, reported as a validation error.
    pub fn pipeline(&self, variant: &Variant) -> Result<wgpu::ComputePipeline, GpuError> {
        if let Some(why) = self.lost() {
            return Err(GpuError::DeviceLost(why));
        }
        let key = variant.key();
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        if variant.act == crate::DType::F16 && !self.capabilities.shader_f16 {
            return Err(GpuError::FeatureMissing { feature: "shader-f16", needed_for: "f16 activations" });
        }
        let source = variant.source().map_err(|e| GpuError::Validation(format!("{key}: {e}")))?;
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(variant.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.pipeline_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(pipeline.clone(), key.clone());
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Cache keys ([`Variant::key`]) of every pipeline this device has compiled.
    pub fn compiled_variant_keys(&self) -> Vec<String> {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Records a dispatch of `pipeline` with `(binding, resource)` pairs of group 0 into the
    /// pending command encoder.
    pub(crate) fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if let Some(&too_many) = groups.iter().find(|&&g| g > max) {
            return Err(GpuError::LimitTooSmall {
                limit: "maxComputeWorkgroupsPerDimension",
                have: max.into(),
                need: too_many.into(),
                needed_for: "a dispatch this large",
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding: *binding, resource: resource.clone() })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let timestamps = self.profiler.lock().unwrap_or_else(|p| p.into_inner()).as_mut().map(|profiler| {
            let key = self.pipeline_keys.lock().unwrap_or_else(|p| p.into_inner()).get(pipeline).cloned();
            profiler.next(&self.device, key.unwrap_or_else(|| "unnamed".into()))
        });
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let pending = guard.get_or_insert_with(|| self.new_pending());
        if let Some((set, index)) = &timestamps {
            // Profiling: a pass per dispatch, timed at its ends.
            pending.pass = None;
            let mut pass = pending.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: set,
                    beginning_of_pass_write_index: Some(*index),
                    end_of_pass_write_index: Some(*index + 1),
                }),
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            return Ok(());
        }
        let Pending { encoder, pass, .. } = pending;
        let pass = pass.get_or_insert_with(|| {
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default()).forget_lifetime()
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        Ok(())
    }

    fn new_pending(&self) -> Pending {
        Pending {
            encoder: self.device.create_command_encoder(&Default::default()),
            pass: None,
            uniforms: None,
        }
    }

    /// `params` in a slot of the pending uniform block.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, params: &T) -> Uniform {
        let data = bytemuck::bytes_of(params);
        let align = u64::from(self.limits.min_uniform_buffer_offset_alignment).max(16);
        let size = (data.len() as u64).max(16);
        let slot = size.div_ceil(align) * align;
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let pending = guard.get_or_insert_with(|| self.new_pending());
        let full = pending.uniforms.as_ref().is_some_and(|u| u.bytes.len() as u64 + slot > u.buffer.size());
        if full {
            let block = pending.uniforms.take().expect("checked");
            self.queue.write_buffer(&block.buffer, 0, &block.bytes);
        }
        let block = pending.uniforms.get_or_insert_with(|| UniformBlock {
            buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: (slot * UNIFORM_SLOTS).max(slot),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            bytes: Vec::new(),
        });
        let offset = block.bytes.len() as u64;
        block.bytes.extend_from_slice(data);
        block.bytes.resize((offset + slot) as usize, 0);
        Uniform { buffer: block.buffer.clone(), offset, size }
    }

    /// A buffer holding `contents` (at least 4 bytes, zero-padded to a multiple of 4). Written
    /// through the queue rather than mapped at creation, so a lost device yields an unusable
    /// buffer and a `DeviceLost` at the next readback instead of a panic in wgpu.
    pub(crate) fn buffer_with(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let size = (contents.len().max(4) as u64).next_multiple_of(4);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if self.lost().is_none() {
            let whole = contents.len() / 4 * 4;
            if whole > 0 {
                self.queue.write_buffer(&buffer, 0, &contents[..whole]);
            }
            if whole < contents.len() {
                let mut tail = [0u8; 4];
                tail[..contents.len() - whole].copy_from_slice(&contents[whole..]);
                self.queue.write_buffer(&buffer, whole as u64, &tail);
            }
        }
        buffer
    }

    pub(crate) fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let pending = guard.get_or_insert_with(|| self.new_pending());
        // The shared compute pass ends before any other command.
        pending.pass = None;
        f(&mut pending.encoder);
    }

    /// Records work without running it: every op allocates its buffers and records its
    /// dispatches as usual, but the recorded work is dropped instead of submitted and readbacks
    /// return zeros. For measuring the buffer pool's allocations — which depend on shapes and
    /// the order of ops, never on values — of large models on adapters too slow to run them
    /// (`darkroom bench models --memory`). Uploads still happen.
    pub fn set_record_only(&self, on: bool) {
        self.flush();
        self.record_only.store(on, Ordering::Relaxed);
    }

    pub fn is_record_only(&self) -> bool {
        self.record_only.load(Ordering::Relaxed)
    }

    /// Submits everything recorded so far (drops it when recording only).
    pub fn flush(&self) {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(Pending { encoder, pass, uniforms }) = pending {
            drop(pass);
            if self.is_record_only() {
                return;
            }
            if let Some(block) = uniforms {
                self.queue.write_buffer(&block.buffer, 0, &block.bytes);
            }
            self.queue.submit([encoder.finish()]);
        }
    }

    /// Submits recorded work and blocks until the device has finished it (native only: a
    /// browser cannot block; await a readback there). For timing.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish(&self) -> Result<(), GpuError> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Validation(e.to_string()))?;
        self.take_error()
    }

    /// Bytes held by the tensor buffer pool, and their peak.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Bytes of weights (matrices with their scales and biases) on the GPU now: uploads add
    /// theirs, dropped weights take theirs back.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes.load(Ordering::Relaxed)
    }

    /// Which GEMM tile the matmul, linear and conv ops use; [`GemmTiles::Auto`] unless set.
    pub fn gemm_tiles(&self) -> GemmTiles {
        match self.gemm_tiles.load(Ordering::Relaxed) {
            1 => GemmTiles::Small,
            2 => GemmTiles::Big,
            3 => GemmTiles::SplitK,
            _ => GemmTiles::Auto,
        }
    }

    /// Forces one GEMM tile for every product (tests cover each; benchmarks compare them).
    pub fn set_gemm_tiles(&self, tiles: GemmTiles) {
        self.gemm_tiles.store(tiles as u8, Ordering::Relaxed);
    }

    /// Frees the pool's idle buffers.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }

    /// Restarts the pool's peak from what it holds now.
    pub fn reset_pool_peak(&self) {
        self.pool.reset_peak();
    }

    /// The first error the device reported outside an error scope since the last call, if any;
    /// a lost device is reported as such before anything else.
    pub fn take_error(&self) -> Result<(), GpuError> {
        if let Some(why) = self.lost() {
            return Err(GpuError::DeviceLost(why));
        }
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(GpuError::Validation(message)),
            None => Ok(()),
        }
    }

    /// Why the device was lost, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `e`, or `DeviceLost` when the device is gone (whatever failed then failed because of it).
    pub fn explain(&self, e: GpuError) -> GpuError {
        match self.lost() {
            Some(why) => GpuError::DeviceLost(why),
            None => e,
        }
    }

    /// Destroys the device, as a driver reset would: every later use fails with `DeviceLost`.
    /// For tests of the recovery paths, and for giving the GPU back at once.
    pub fn destroy(&self) {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.device.destroy();
        // wgpu reports a destroyed device's loss from its next poll.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| "destroyed".into());
    }

    /// Waits for submitted work natively; in the browser the event loop drives completion, so
    /// this returns at once and callers await the mapping callback instead.
    pub(crate) fn poll_wait(&self) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webgpu_minimum() -> wgpu::Limits {
        wgpu::Limits::default()
    }

    #[test]
    fn webgpu_default_limits_meet_the_default_requirements() {
        assert_eq!(Requirements::default().check(wgpu::Features::empty(), &webgpu_minimum()), Ok(()));
    }

    #[test]
    fn missing_f16_is_a_typed_error() {
        let req = Requirements { shader_f16: true, ..Default::default() };
        let err = req.check(wgpu::Features::empty(), &webgpu_minimum()).unwrap_err();
        assert!(matches!(err, GpuError::FeatureMissing { feature: "shader-f16", .. }), "{err:?}");
        assert!(req.check(wgpu::Features::SHADER_F16, &webgpu_minimum()).is_ok());
    }

    #[test]
    fn small_binding_limit_names_the_limit_and_both_values() {
        let req = Requirements {
            min_storage_buffer_binding_size: 1 << 30,
            needed_for: "SD 1.5 without split bindings",
            ..Default::default()
        };
        let err = req.check(wgpu::Features::empty(), &webgpu_minimum()).unwrap_err();
        assert_eq!(
            err,
            GpuError::LimitTooSmall {
                limit: "maxStorageBufferBindingSize",
                have: 128 << 20,
                need: 1 << 30,
                needed_for: "SD 1.5 without split bindings",
            }
        );
        let text = err.to_string();
        assert!(text.contains("134217728") && text.contains("SD 1.5"), "{text}");
    }
}
