use leptos::prelude::*;

use darkroom_gpu::selftest::{KernelCheck, MatmulReport};
use darkroom_gpu::DType;

/// Where the GPU self-test stands.
#[derive(Debug, Clone)]
pub enum SelftestState {
    /// Waiting for the adapter probe.
    Waiting,
    /// There is no usable adapter, so nothing can run.
    Skipped,
    Running,
    /// The matmul check, then every kernel family per activation type the device supports.
    Done {
        matmul: MatmulReport,
        kernels: Vec<(DType, Vec<KernelCheck>)>,
    },
    Failed(String),
}

impl SelftestState {
    fn all_passed(matmul: &MatmulReport, kernels: &[(DType, Vec<KernelCheck>)]) -> bool {
        matmul.passed && kernels.iter().all(|(_, checks)| checks.iter().all(|c| c.passed))
    }
}

fn difference(err: f32) -> String {
    if err == 0.0 {
        "exact".to_string()
    } else {
        format!("{err:.1e}")
    }
}

/// Shows the result of running Darkroom's WGSL kernels on this GPU, each checked against the
/// same computation on the CPU.
#[component]
pub fn SelftestPanel(
    /// The self-test's progress and outcome.
    state: Signal<SelftestState>,
) -> impl IntoView {
    move || {
        let (status, summary, rows) = match state.get() {
            SelftestState::Waiting => ("waiting", "Waiting for a WebGPU adapter.".to_string(), vec![]),
            SelftestState::Skipped => {
                ("skipped", "Not run: this browser gives no WebGPU adapter.".to_string(), vec![])
            }
            SelftestState::Running => ("running", "Running the kernels on the GPU…".to_string(), vec![]),
            SelftestState::Failed(e) => ("error", format!("The GPU self-test could not run: {e}"), vec![]),
            SelftestState::Done { matmul, kernels } => {
                let total = 1 + kernels.iter().map(|(_, c)| c.len()).sum::<usize>();
                let failed = usize::from(!matmul.passed)
                    + kernels.iter().map(|(_, c)| c.iter().filter(|k| !k.passed).count()).sum::<usize>();
                let mut rows = vec![(
                    format!("matmul {}×{}·{}×{} (f32)", matmul.m, matmul.k, matmul.k, matmul.n),
                    matmul.passed,
                    difference(matmul.max_abs_err),
                )];
                for (dtype, checks) in &kernels {
                    let label = if *dtype == DType::F16 { "f16" } else { "f32" };
                    rows.extend(
                        checks
                            .iter()
                            .map(|c| (format!("{} ({label})", c.name), c.passed, difference(c.max_abs_err))),
                    );
                }
                if SelftestState::all_passed(&matmul, &kernels) {
                    ("pass", format!("All {total} kernel checks match the CPU."), rows)
                } else {
                    (
                        "fail",
                        format!("{failed} of {total} kernel checks differ from the CPU: this GPU or driver computes wrong results. Please report it with the adapter details above."),
                        rows,
                    )
                }
            }
        };
        let no_rows = rows.is_empty();
        view! {
            <section class="panel" id="selftest" data-status=status>
                <h2>"Kernel self-test"</h2>
                <p class=format!("status status-{status}")>{summary}</p>
                <table class="checks" hidden=no_rows>
                    <thead><tr><th>"kernel"</th><th>"result"</th><th>"largest difference"</th></tr></thead>
                    <tbody>
                        {rows
                            .into_iter()
                            .map(|(name, passed, err)| view! {
                                <tr class=if passed { "check pass" } else { "check fail" }>
                                    <td>{name}</td>
                                    <td>{if passed { "pass" } else { "FAIL" }}</td>
                                    <td>{err}</td>
                                </tr>
                            })
                            .collect_view()}
                    </tbody>
                </table>
            </section>
        }
    }
}
