//! Opening a GPU device, natively (wgpu on Vulkan/Metal/DX12) and in the browser (WebGPU),
//! from the same code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::GpuError;

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
            return Err(GpuError::FeatureMissing {
                feature: "shader-f16",
                needed_for: self.needed_for,
            });
        }
        let checks: [(&'static str, u64, u64); 4] = [
            (
                "maxStorageBufferBindingSize",
                limits.max_storage_buffer_binding_size,
                self.min_storage_buffer_binding_size,
            ),
            (
                "maxBufferSize",
                limits.max_buffer_size,
                self.min_buffer_size,
            ),
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
                return Err(GpuError::LimitTooSmall {
                    limit,
                    have,
                    need,
                    needed_for: self.needed_for,
                });
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

/// An open device: the handle every op takes (`&Gpu`), never a global.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    capabilities: Capabilities,
    limits: wgpu::Limits,
    pipelines: Mutex<HashMap<&'static str, wgpu::ComputePipeline>>,
    /// Errors the device reported outside any error scope; surfaced by the next readback.
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Opens the best adapter (high-performance preference) with its real limits and the optional
    /// features our kernels can use (`shader-f16`, subgroups natively).
    pub async fn open(req: &Requirements) -> Result<Gpu, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter {
                reason: e.to_string(),
            })?;

        let features = adapter.features();
        let limits = adapter.limits();
        req.check(features, &limits)?;

        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
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
            uncaptured,
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The compute pipeline for `key`, created once from `source` (entry point `main`) and cached.
    pub fn pipeline(&self, key: &'static str, source: &str) -> wgpu::ComputePipeline {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(key),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    });
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(key),
                        layout: None,
                        module: &module,
                        entry_point: Some("main"),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            })
            .clone()
    }

    /// The first error the device reported outside an error scope since the last call, if any.
    pub fn take_error(&self) -> Result<(), GpuError> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => Err(GpuError::Validation(message)),
            None => Ok(()),
        }
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
        assert_eq!(
            Requirements::default().check(wgpu::Features::empty(), &webgpu_minimum()),
            Ok(())
        );
    }

    #[test]
    fn missing_f16_is_a_typed_error() {
        let req = Requirements {
            shader_f16: true,
            ..Default::default()
        };
        let err = req
            .check(wgpu::Features::empty(), &webgpu_minimum())
            .unwrap_err();
        assert!(
            matches!(
                err,
                GpuError::FeatureMissing {
                    feature: "shader-f16",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(req
            .check(wgpu::Features::SHADER_F16, &webgpu_minimum())
            .is_ok());
    }

    #[test]
    fn small_binding_limit_names_the_limit_and_both_values() {
        let req = Requirements {
            min_storage_buffer_binding_size: 1 << 30,
            needed_for: "SD 1.5 without split bindings",
            ..Default::default()
        };
        let err = req
            .check(wgpu::Features::empty(), &webgpu_minimum())
            .unwrap_err();
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
        assert!(
            text.contains("134217728") && text.contains("SD 1.5"),
            "{text}"
        );
    }
}
