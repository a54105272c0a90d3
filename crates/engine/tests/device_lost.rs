//! A GPU lost in the middle of work (a driver reset; here the device destroyed) ends the job
//! with `EngineError::DeviceLost` — not a panic, not a hang, not a plain GPU error — so a front
//! end knows to open a new device and load its model again.

use std::path::PathBuf;

use darkroom_engine::{job, EngineError};
use darkroom_gpu::{Gpu, Requirements};
use darkroom_models::NoCache;
use darkroom_pipeline::{Folder, Precision, Recipe, Request, StableDiffusion};

#[test]
fn a_job_on_a_lost_device_ends_with_device_lost_and_a_new_device_works() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sd");
    let load = |gpu: &Gpu| {
        let mut progress = |_: &str, _: u64, _: u64| {};
        let files = Folder(folder.clone());
        pollster::block_on(StableDiffusion::load(
            gpu,
            &files,
            &NoCache,
            "tiny-sd",
            Precision::F32,
            &mut progress,
        ))
        .unwrap()
    };
    let recipe = Recipe {
        prompt: "a lighthouse".into(),
        seed: Some(1),
        steps: 2,
        width: 32,
        height: 32,
        ..Recipe::default()
    };
    let request = Request::new(recipe, None, None).unwrap();
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu);
    // The device goes away between steps, as a reset would.
    let mut steps = 0;
    let mut on_event = |e: &job::Event| {
        if e.progress.stage == darkroom_pipeline::Stage::Denoising {
            steps += 1;
            if steps == 1 {
                gpu.destroy();
            }
        }
        true
    };
    match pollster::block_on(job::generate(&gpu, &model, job::Helpers::default(), &request, &mut on_event)) {
        Err(EngineError::DeviceLost(_)) => {}
        Err(other) => panic!("expected DeviceLost, got {other:?}"),
        Ok(_) => panic!("a job on a destroyed device cannot succeed"),
    }
    // What a front end does next: a new device, the model loaded again.
    let gpu = pollster::block_on(Gpu::open(&Requirements::default())).unwrap();
    let model = load(&gpu);
    let images =
        pollster::block_on(job::generate(&gpu, &model, job::Helpers::default(), &request, &mut |_| true))
            .unwrap();
    assert_eq!(images.len(), 1);
}
