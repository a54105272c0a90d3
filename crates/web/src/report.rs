//! What the capability screen says about an adapter: plain data and pure functions, so the
//! wording is tested natively without a browser.

use darkroom_gpu::{GpuError, Requirements};

/// The browser's own view of its WebGPU adapter (GPUAdapter.info, .features, .limits).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdapterReport {
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
    pub is_fallback: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u64,
    pub max_compute_invocations_per_workgroup: u64,
}

/// Why WebGPU could not be used at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    /// `navigator.gpu` is missing.
    NoApi { secure_context: bool },
    /// `navigator.gpu` exists but `requestAdapter()` gave nothing (blocklisted GPU, disabled).
    NoAdapter,
    /// Something threw while probing.
    Failed(String),
}

impl Unavailable {
    pub fn headline(&self) -> &'static str {
        match self {
            Unavailable::NoApi { .. } => "This browser does not offer WebGPU",
            Unavailable::NoAdapter => "WebGPU is present but gave no GPU adapter",
            Unavailable::Failed(_) => "Probing WebGPU failed",
        }
    }

    /// What the person can do about it.
    pub fn advice(&self) -> Vec<String> {
        let browsers = "Use a browser with WebGPU: Chrome or Edge 113 or newer (Windows, macOS, ChromeOS, Android), Safari 26 or newer, or Firefox 141 or newer on Windows.".to_string();
        match self {
            Unavailable::NoApi { secure_context: false } => vec![
                "WebGPU only exists on secure pages: open Darkroom over https:// or from http://localhost / http://127.0.0.1.".into(),
                browsers,
            ],
            Unavailable::NoApi { secure_context: true } => vec![
                browsers,
                "On Linux, Chrome needs chrome://flags/#enable-unsafe-webgpu (and #enable-vulkan) turned on. In Firefox on other systems, set dom.webgpu.enabled in about:config.".into(),
            ],
            Unavailable::NoAdapter => vec![
                "The browser may have blocked this GPU or its driver. Update the graphics driver, check chrome://gpu (or about:support) for WebGPU status, and make sure hardware acceleration is on in the browser's settings.".into(),
            ],
            Unavailable::Failed(detail) => vec![format!("The browser said: {detail}"), browsers],
        }
    }
}

/// How serious a notice is, for its styling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

impl AdapterReport {
    /// A software rasteriser (SwiftShader, llvmpipe, WARP) or the browser's fallback adapter.
    pub fn is_software(&self) -> bool {
        let names = [&self.vendor, &self.architecture, &self.device, &self.description]
            .map(|s| s.to_ascii_lowercase());
        self.is_fallback
            || names.iter().any(|s| {
                ["swiftshader", "llvmpipe", "lavapipe", "warp", "microsoft basic render"]
                    .iter()
                    .any(|soft| s.contains(soft))
            })
    }

    /// A short name for the adapter: vendor and architecture, as the browser reports them.
    pub fn title(&self) -> String {
        let parts: Vec<&str> = [&self.vendor, &self.architecture, &self.device]
            .into_iter()
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            "unnamed adapter (the browser hides its details)".into()
        } else {
            parts.join(" · ")
        }
    }

    /// Everything worth telling the person about this adapter, worst first.
    pub fn notices(&self, req: &Requirements) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Err(e) = req.check(self.wgpu_features(), &self.wgpu_limits()) {
            out.push(Notice { level: Level::Error, text: limit_message(&e) });
        }
        if self.is_software() {
            out.push(Notice {
                level: Level::Warn,
                text: "This is a software adapter (the GPU work runs on the CPU): generation will be very slow. Enable hardware acceleration or use a machine with a GPU.".into(),
            });
        }
        if !self.shader_f16 {
            out.push(Notice {
                level: Level::Warn,
                text:
                    "No shader-f16: models run in f32, which is slower and needs about twice the GPU memory."
                        .into(),
            });
        }
        if out.is_empty() {
            out.push(Notice {
                level: Level::Ok,
                text: "This adapter can run Darkroom's kernels at full precision choice (f16 or f32).".into(),
            });
        }
        out
    }

    fn wgpu_features(&self) -> darkroom_gpu::wgpu::Features {
        let mut f = darkroom_gpu::wgpu::Features::empty();
        if self.shader_f16 {
            f |= darkroom_gpu::wgpu::Features::SHADER_F16;
        }
        f
    }

    fn wgpu_limits(&self) -> darkroom_gpu::wgpu::Limits {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        darkroom_gpu::wgpu::Limits {
            max_buffer_size: self.max_buffer_size,
            max_storage_buffer_binding_size: self.max_storage_buffer_binding_size,
            max_compute_workgroup_storage_size: clamp(self.max_compute_workgroup_storage_size),
            max_compute_invocations_per_workgroup: clamp(self.max_compute_invocations_per_workgroup),
            ..Default::default()
        }
    }
}

fn limit_message(e: &GpuError) -> String {
    format!("{e}. Try another browser or GPU; smaller models or sizes may still work.")
}

/// 1073741824 → "1 GiB", 134217728 → "128 MiB", 16384 → "16 KiB".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swiftshader() -> AdapterReport {
        AdapterReport {
            vendor: "google".into(),
            architecture: "swiftshader".into(),
            max_buffer_size: 1 << 30,
            max_storage_buffer_binding_size: 128 << 20,
            max_compute_workgroup_storage_size: 16 << 10,
            max_compute_invocations_per_workgroup: 256,
            subgroups: true,
            ..Default::default()
        }
    }

    #[test]
    fn swiftshader_is_software_and_f32_only() {
        let report = swiftshader();
        assert!(report.is_software());
        assert_eq!(report.title(), "google · swiftshader");
        let notices = report.notices(&Requirements::default());
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices.iter().all(|n| n.level == Level::Warn));
        assert!(notices[0].text.contains("software adapter"));
        assert!(notices[1].text.contains("No shader-f16"));
    }

    #[test]
    fn a_capable_gpu_gets_a_single_ok() {
        let report = AdapterReport {
            vendor: "nvidia".into(),
            architecture: "lovelace".into(),
            shader_f16: true,
            max_storage_buffer_binding_size: 1 << 31,
            ..swiftshader()
        };
        assert!(!report.is_software());
        let notices = report.notices(&Requirements::default());
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].level, Level::Ok);
    }

    #[test]
    fn too_small_limits_are_an_error_naming_the_limit() {
        let report = AdapterReport { max_compute_workgroup_storage_size: 8192, ..swiftshader() };
        let notices = report.notices(&Requirements::default());
        assert_eq!(notices[0].level, Level::Error);
        assert!(notices[0].text.contains("maxComputeWorkgroupStorageSize is 8192"), "{}", notices[0].text);
    }

    #[test]
    fn no_webgpu_advice_names_browsers_and_secure_context() {
        let insecure = Unavailable::NoApi { secure_context: false }.advice().join(" ");
        assert!(insecure.contains("https://") && insecure.contains("Chrome"));
        let secure = Unavailable::NoApi { secure_context: true }.advice().join(" ");
        assert!(secure.contains("enable-unsafe-webgpu") && !secure.contains("secure pages"));
    }

    #[test]
    fn bytes_are_formatted_in_binary_units() {
        assert_eq!(format_bytes(1 << 30), "1 GiB");
        assert_eq!(format_bytes(128 << 20), "128 MiB");
        assert_eq!(format_bytes(16384), "16 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(100), "100 B");
    }
}
