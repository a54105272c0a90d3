//! The queue under the Generate form: every job with its state and progress, the overall count
//! and time left, pause/resume, clear finished, and per job move up/down and cancel. The worker
//! runs the jobs and keeps them in IndexedDB, so the list survives a reload and carries on.

use leptos::prelude::*;

use crate::protocol::{FromWorker, JobState, JobView, QueueOp, ToWorker};
use crate::state::{human_duration, AppState};

/// Follows the worker's queue (and starts it, which resumes a queue left by an earlier visit).
pub fn watch(state: AppState) {
    let Some(worker) = state.worker.get_value() else { return };
    worker.request(ToWorker::Queue(QueueOp::Watch), Vec::new(), move |message| match message.body {
        FromWorker::Queue(view) => {
            if view.stored != state.queue.get_untracked().stored {
                state.gallery_version.update(|v| *v += 1);
            }
            state.queue.set(view);
        }
        FromWorker::Progress { step, total, .. } if total > 0 => {
            state.queue.update(|q| {
                q.step = step;
                q.total = total;
            });
        }
        _ => {}
    });
}

fn send(state: AppState, op: QueueOp) {
    if let Some(worker) = state.worker.get_value() {
        worker.request(ToWorker::Queue(op), Vec::new(), move |message| {
            if let FromWorker::Error { message, .. } = message.body {
                state.error.set(Some(format!("The queue: {message}")));
            }
        });
    }
}

fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Waiting => "waiting",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

#[component]
fn QueueRow(job: JobView) -> impl IntoView {
    let state = expect_context::<AppState>();
    let key = job.key;
    let prompt: String = if job.prompt.chars().count() > 80 {
        job.prompt.chars().take(79).chain(std::iter::once('…')).collect()
    } else {
        job.prompt.clone()
    };
    let details = format!(
        "{}×{} · {} steps · {}/{} images",
        job.width, job.height, job.steps, job.images_done, job.images
    );
    let waiting = job.state == JobState::Waiting;
    let active = matches!(job.state, JobState::Waiting | JobState::Running);
    let running = job.state == JobState::Running;
    let fraction = move || {
        let q = state.queue.get();
        let per_image = if q.total > 0 { q.step as f64 / q.total as f64 } else { 0.0 };
        (job.images_done as f64 + per_image) / job.images.max(1) as f64
    };
    view! {
        <li class="queue-job" data-key=key data-state=state_label(job.state)>
            <div class="queue-text">
                <span class="prompt" title=job.prompt.clone()>{prompt}</span>
                <span class="muted small">{details}" · "<strong class="job-state">{state_label(job.state)}</strong></span>
                {job.error.clone().map(|e| view! { <span class="error small">{e}</span> })}
                <Show when=move || running>
                    <progress max="1" value=fraction></progress>
                </Show>
            </div>
            <span class="actions">
                <Show when=move || waiting>
                    <button class="icon queue-up" title="Run earlier" on:click=move |_| send(state, QueueOp::Move { key, up: true })>"↑"</button>
                    <button class="icon queue-down" title="Run later" on:click=move |_| send(state, QueueOp::Move { key, up: false })>"↓"</button>
                </Show>
                <Show when=move || active>
                    <button class="queue-cancel" on:click=move |_| send(state, QueueOp::Cancel { key })>"Cancel"</button>
                </Show>
            </span>
        </li>
    }
}

#[component]
pub fn QueuePanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let q = state.queue;
    let summary = move || {
        let view = q.get();
        let (done, all) = view.counts();
        let mut text = format!("{done} of {all} done");
        if view.paused {
            text.push_str(" · paused");
        } else if let Some(ms) = view.ms_left().filter(|&ms| ms > 0.0) {
            text.push_str(&format!(" · about {} left", human_duration(ms / 1000.0)));
        }
        text
    };
    let finished =
        move || q.get().jobs.iter().any(|j| !matches!(j.state, JobState::Waiting | JobState::Running));
    view! {
        <Show when=move || !q.get().jobs.is_empty()>
            <div class="queue" id="queue">
                <div class="queue-head">
                    <h3>"Queue"</h3>
                    <span class="muted small" id="queue-summary">{summary}</span>
                    <span class="actions">
                        <button id="queue-pause" on:click=move |_| {
                            send(state, if q.get_untracked().paused { QueueOp::Resume } else { QueueOp::Pause })
                        }>{move || if q.get().paused { "Resume" } else { "Pause" }}</button>
                        <button id="queue-clear" disabled=move || !finished()
                            on:click=move |_| send(state, QueueOp::ClearFinished)>"Clear finished"</button>
                    </span>
                </div>
                <ol class="queue-list">
                    <For each=move || q.get().jobs key=|j| (j.key, state_label(j.state), j.images_done, j.error.clone())
                        children=move |job| view! { <QueueRow job=job /> } />
                </ol>
            </div>
        </Show>
    }
}
