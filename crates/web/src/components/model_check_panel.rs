use leptos::prelude::*;

use crate::model_check::ModelCheck;

/// Where the model check stands (only on pages opened with `?check=models`).
#[derive(Debug, Clone)]
pub enum ModelCheckState {
    Running,
    Done(Vec<ModelCheck>),
    Failed(String),
}

/// Shows each model's largest difference from the reference implementation's output.
#[component]
pub fn ModelCheckPanel(
    /// The check's progress and outcome.
    state: Signal<ModelCheckState>,
) -> impl IntoView {
    move || {
        let (status, summary, rows) = match state.get() {
            ModelCheckState::Running => ("running", "Running the models on the GPU…".to_string(), vec![]),
            ModelCheckState::Failed(e) => ("error", format!("The model check could not run: {e}"), vec![]),
            ModelCheckState::Done(checks) => {
                let failed = checks.iter().filter(|c| !c.passed()).count();
                let status = if failed == 0 { "pass" } else { "fail" };
                let summary = if failed == 0 {
                    format!("All {} models match the reference implementation.", checks.len())
                } else {
                    format!("{failed} of {} models differ from the reference implementation.", checks.len())
                };
                (status, summary, checks)
            }
        };
        view! {
            <section class="panel" id="model-check" data-status=status>
                <h2>"Model check"</h2>
                <p class=format!("status status-{status}")>{summary}</p>
                <table class="checks">
                    <tbody>
                        {rows
                            .into_iter()
                            .map(|c| {
                                let passed = c.passed();
                                view! {
                                    <tr class=if passed { "check pass" } else { "check fail" }>
                                        <td>{c.name}</td>
                                        <td>{if passed { "pass" } else { "FAIL" }}</td>
                                        <td>{format!("{:.1e} (bound {:.0e})", c.max_abs_err, c.bound)}</td>
                                    </tr>
                                }
                            })
                            .collect_view()}
                    </tbody>
                </table>
            </section>
        }
    }
}
