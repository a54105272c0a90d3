//! The queue: jobs in IndexedDB (crate::queue), run one after another while nothing else holds
//! the GPU; the page follows it through `QueueOp::Watch`.

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

use super::{
    forget_lost_device, make_images, manifest, now_ms, post, storage_failure, Failure, RunOptions, State,
};
use crate::gallery::Entry;
use crate::protocol::{ErrorKind, FromWorker, JobState, QueueOp, QueueView};
use crate::queue;

/// The queue runner's state (its jobs are in IndexedDB: crate::queue).
#[derive(Default)]
pub(super) struct QueueState {
    /// The request the page follows the queue with.
    pub(super) watch: Cell<Option<u32>>,
    pub(super) paused: Cell<bool>,
    pub(super) running: Cell<bool>,
    /// The running job's key, and its denoising step of how many.
    pub(super) current: Cell<Option<u32>>,
    pub(super) step: Cell<(usize, usize)>,
    pub(super) ms_per_step: Cell<f64>,
    pub(super) stored: Cell<u32>,
}

/// The id a queued job's cancellation is tracked under (requests count up from 1).
pub(super) fn job_cancel_id(key: u32) -> u32 {
    u32::MAX - key
}

/// The queue as the page shows it, sent to the watching request.
async fn post_queue(state: &State) {
    let Some(watch) = state.queue.watch.get() else { return };
    let Ok(jobs) = queue::list().await else { return };
    let running = state.queue.current.get().is_some();
    let (step, total) = if running { state.queue.step.get() } else { (0, 0) };
    let view = QueueView {
        jobs: jobs.iter().map(|s| s.job.view(s.key)).collect(),
        paused: state.queue.paused.get(),
        step,
        total,
        ms_per_step: state.queue.ms_per_step.get(),
        stored: state.queue.stored.get(),
    };
    post(watch, FromWorker::Queue(view), Vec::new());
}

/// A queue request; `Ok(true)` when it gets a final `Stored(Done)` answer (all but Watch).
pub(super) async fn queue_op(
    state: &Rc<State>,
    id: u32,
    op: QueueOp,
    bytes: Vec<Vec<u8>>,
) -> Result<bool, Failure> {
    match op {
        QueueOp::Watch => {
            state.queue.watch.set(Some(id));
            // A job that was running when the page went away starts its unfinished runs again.
            for mut stored in queue::list().await.map_err(storage_failure)? {
                if stored.job.state == JobState::Running && state.queue.current.get() != Some(stored.key) {
                    stored.job.state = JobState::Waiting;
                    queue::update(&stored).await.map_err(storage_failure)?;
                }
            }
            post_queue(state).await;
            spawn_local(run_queue(state.clone()));
            return Ok(false);
        }
        QueueOp::Add { model, recipe, preview, keep, controls, brief, upscaler } => {
            manifest(&model)?;
            let job = queue::Job {
                model,
                recipe,
                preview,
                keep,
                controls,
                brief,
                upscaler,
                state: JobState::Waiting,
                runs_done: 0,
                error: None,
                order: now_ms(),
            };
            queue::add(&job, &bytes).await.map_err(storage_failure)?;
            spawn_local(run_queue(state.clone()));
        }
        QueueOp::Pause => state.queue.paused.set(true),
        QueueOp::Resume => {
            state.queue.paused.set(false);
            spawn_local(run_queue(state.clone()));
        }
        QueueOp::Cancel { key } => {
            if state.queue.current.get() == Some(key) {
                state.cancelled.borrow_mut().insert(job_cancel_id(key));
            } else if let Some(mut stored) =
                queue::list().await.map_err(storage_failure)?.into_iter().find(|s| s.key == key)
            {
                if stored.job.state == JobState::Waiting {
                    stored.job.state = JobState::Cancelled;
                    queue::update(&stored).await.map_err(storage_failure)?;
                }
            }
        }
        QueueOp::Move { key, up } => {
            let waiting: Vec<queue::Stored> = queue::list()
                .await
                .map_err(storage_failure)?
                .into_iter()
                .filter(|s| s.job.state == JobState::Waiting)
                .collect();
            if let Some(i) = waiting.iter().position(|s| s.key == key) {
                let j = if up { i.checked_sub(1) } else { Some(i + 1).filter(|&j| j < waiting.len()) };
                if let Some(j) = j {
                    let (mut a, mut b) = (waiting[i].clone(), waiting[j].clone());
                    std::mem::swap(&mut a.job.order, &mut b.job.order);
                    queue::update(&a).await.map_err(storage_failure)?;
                    queue::update(&b).await.map_err(storage_failure)?;
                }
            }
        }
        QueueOp::ClearFinished => {
            let finished: Vec<u32> = queue::list()
                .await
                .map_err(storage_failure)?
                .into_iter()
                .filter(|s| matches!(s.job.state, JobState::Done | JobState::Failed | JobState::Cancelled))
                .map(|s| s.key)
                .collect();
            queue::remove(&finished).await.map_err(storage_failure)?;
        }
    }
    post_queue(state).await;
    Ok(true)
}

/// Waits `ms` milliseconds (the worker's setTimeout).
pub(super) async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) = js_sys::Reflect::get(&global, &"setTimeout".into()) {
            let set_timeout: js_sys::Function = set_timeout.unchecked_into();
            let _ = set_timeout.call2(&global, &resolve, &ms.into());
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Runs waiting jobs until none is left or the queue is paused (one runner at a time).
async fn run_queue(state: Rc<State>) {
    if state.queue.running.replace(true) {
        return;
    }
    while !state.queue.paused.get() {
        let Ok(jobs) = queue::list().await else { break };
        let Some(mut stored) = jobs.into_iter().find(|s| s.job.state == JobState::Waiting) else { break };
        // A generation or a load the page asked for holds the GPU: wait for it.
        if state.busy.replace(true) {
            sleep(300).await;
            continue;
        }
        let key = stored.key;
        state.queue.current.set(Some(key));
        state.queue.step.set((0, stored.job.recipe.steps));
        stored.job.state = JobState::Running;
        let mut outcome = queue::update(&stored).await.map_err(storage_failure);
        post_queue(&state).await;
        let report = state.queue.watch.get().unwrap_or(0);
        let runs = stored.job.recipe.batch_count.max(1);
        while outcome.is_ok() && stored.job.runs_done < runs {
            let recipe = stored.job.recipe.run(stored.job.runs_done);
            let (model, preview) = (stored.job.model.clone(), stored.job.preview.clone());
            let made = make_images(
                &state,
                report,
                job_cancel_id(key),
                (&model, &stored.job.controls, stored.job.upscaler.as_ref()),
                &recipe,
                RunOptions { preview: preview.as_ref(), embeddings: true },
                &stored.bytes,
            )
            .await;
            outcome = match made {
                Ok((infos, pngs)) => {
                    let entries: Vec<Entry> = infos
                        .iter()
                        .zip(&pngs)
                        .map(|(info, png)| {
                            Entry::made(&stored.job.keep, info, png, stored.job.brief.as_ref(), now_ms())
                        })
                        .collect();
                    stored.job.runs_done += 1;
                    if stored.job.runs_done == runs {
                        stored.job.state = JobState::Done;
                    }
                    let written = queue::finish_run(&stored, &entries).await.map_err(storage_failure);
                    if written.is_ok() {
                        state.queue.stored.set(state.queue.stored.get() + entries.len() as u32);
                    }
                    post_queue(&state).await;
                    written
                }
                Err(e) => Err(e),
            };
        }
        if let Err((kind, message)) = outcome {
            stored.job.state =
                if kind == ErrorKind::Cancelled { JobState::Cancelled } else { JobState::Failed };
            stored.job.error = (kind != ErrorKind::Cancelled).then_some(message);
            let _ = queue::update(&stored).await;
        }
        state.cancelled.borrow_mut().remove(&job_cancel_id(key));
        state.queue.current.set(None);
        forget_lost_device(&state);
        state.busy.set(false);
        post_queue(&state).await;
    }
    state.queue.running.set(false);
}
