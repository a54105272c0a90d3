use leptos::prelude::*;

use darkroom_gpu::selftest::MatmulReport;

/// Where the GPU self-test stands.
#[derive(Debug, Clone)]
pub enum SelftestState {
    /// Waiting for the adapter probe.
    Waiting,
    /// There is no usable adapter, so nothing can run.
    Skipped,
    Running,
    Done(MatmulReport),
    Failed(String),
}

/// Shows the result of running a real WGSL kernel (a tiled matmul) on this GPU and checking it
/// against the same product computed on the CPU.
#[component]
pub fn SelftestPanel(
    /// The self-test's progress and outcome.
    state: Signal<SelftestState>,
) -> impl IntoView {
    move || {
        let (status, body) = match state.get() {
            SelftestState::Waiting => ("waiting", "Waiting for a WebGPU adapter.".to_string()),
            SelftestState::Skipped => ("skipped", "Not run: this browser gives no WebGPU adapter.".to_string()),
            SelftestState::Running => ("running", "Running a matmul kernel on the GPU…".to_string()),
            SelftestState::Done(r) if r.passed => (
                "pass",
                format!(
                    "Pass: a {}×{} by {}×{} matmul on the GPU matches the CPU ({}).",
                    r.m,
                    r.k,
                    r.k,
                    r.n,
                    if r.max_abs_err == 0.0 {
                        "bit for bit".to_string()
                    } else {
                        format!("largest difference {:.1e}", r.max_abs_err)
                    }
                ),
            ),
            SelftestState::Done(r) => (
                "fail",
                format!(
                    "Fail: the GPU's {}×{} by {}×{} matmul differs from the CPU by up to {:.3e}. This GPU or driver computes wrong results; please report it with the adapter details above.",
                    r.m, r.k, r.k, r.n, r.max_abs_err
                ),
            ),
            SelftestState::Failed(e) => ("error", format!("The GPU self-test could not run: {e}")),
        };
        view! {
            <section class="panel" id="selftest" data-status=status>
                <h2>"Kernel self-test"</h2>
                <p class=format!("status status-{status}")>{body}</p>
            </section>
        }
    }
}
