//! The app's upscale action: a downloaded ESRGAN-family upscaler (kept loaded between requests)
//! over any image, in tiles, the result carrying its source's parameters with the upscale added
//! (as A1111's Extras writes it) and kept in the gallery.

use std::rc::Rc;

use darkroom_gpu::DType;
use darkroom_pipeline::metadata::{read_parameters, GenerationParams};
use darkroom_pipeline::upscale::{load_upscaler, upscale as run_upscale, upscaled_png};
use darkroom_pipeline::Image;
use darkroom_weights::browser::IdbStore;
use darkroom_weights::ModelKind;

use super::{
    fetch_failure, gpu, keep_images, manifest, now_ms, pipeline_failure, post, read_stored, Failure, State,
};
use crate::protocol::{BriefTag, ErrorKind, FromWorker, ImageInfo, ModelRef, Stage};

pub(super) async fn upscale(
    state: &State,
    id: u32,
    model: &ModelRef,
    (keep, brief): (Option<String>, Option<BriefTag>),
    bytes: Vec<Vec<u8>>,
) -> Result<(), Failure> {
    let started = now_ms();
    let source_png =
        bytes.first().ok_or((ErrorKind::Input, "no image to upscale came with the request".into()))?;
    let source = Image::from_png(source_png).map_err(pipeline_failure)?;
    let gpu = gpu(state).await?;
    let (upscaler, m) = loaded(state, id, model).await?;
    let mut progress = |done: usize, total: usize| {
        let body = FromWorker::Progress {
            stage: Stage::Upscaling,
            step: done,
            total,
            bytes: 0,
            bytes_total: 0,
            rate: 0.0,
        };
        post(id, body, Vec::new());
        !state.is_cancelled(id)
    };
    let big = run_upscale(&gpu, &upscaler, upscaler.dtype, &source, None, &mut progress)
        .await
        .map_err(pipeline_failure)?;
    let png = upscaled_png(&big, Some(source_png), upscaler.info.scale, &m.id).map_err(pipeline_failure)?;
    let infotext = read_parameters(&png).unwrap_or_default();
    let seed = GenerationParams::parse_infotext(&infotext).map(|p| p.seed).unwrap_or(0);
    let info = ImageInfo { width: big.width, height: big.height, seed, infotext };
    let gallery_error = match keep {
        Some(name) => {
            keep_images(&name, brief.as_ref(), std::slice::from_ref(&info), std::slice::from_ref(&png))
                .await
                .err()
        }
        None => None,
    };
    post(id, FromWorker::Result { images: vec![info], ms: now_ms() - started, gallery_error }, vec![png]);
    Ok(())
}

/// Upscaler `model` (a downloaded upscaler's manifest), loaded — or kept from the last request
/// that used it (one stays loaded) — with its manifest. Loading is reported to request `id`.
pub(super) async fn loaded(
    state: &State,
    id: u32,
    model: &ModelRef,
) -> Result<(Rc<darkroom_models::upscale::Upscaler>, darkroom_weights::Manifest), Failure> {
    let m = manifest(model)?;
    if m.family != ModelKind::Upscaler {
        return Err((ErrorKind::Input, format!("{} is not an upscaler", m.name)));
    }
    let gpu = gpu(state).await?;
    let dtype = if gpu.capabilities().shader_f16 { DType::F16 } else { DType::F32 };
    let key = format!("{}|{}|{dtype:?}", m.id, model.base.as_deref().unwrap_or(""));
    let kept = state.upscaler.borrow().as_ref().filter(|(k, _)| *k == key).map(|(_, u)| u.clone());
    let upscaler = match kept {
        Some(u) => u,
        None => {
            let file = m.files.first().ok_or((ErrorKind::Model, format!("{} lists no file", m.name)))?;
            let store = IdbStore::open().await.map_err(fetch_failure)?;
            let path = format!("{}/{}", m.id, file.path);
            post(
                id,
                FromWorker::Progress {
                    stage: Stage::Loading,
                    step: 0,
                    total: 0,
                    bytes: 0,
                    bytes_total: 0,
                    rate: 0.0,
                },
                Vec::new(),
            );
            let Some(weights) = read_stored(&store, &path).await? else {
                return Err((
                    ErrorKind::Model,
                    format!("{} is not downloaded: download it under Models first", m.name),
                ));
            };
            // Only one upscaler stays loaded.
            *state.upscaler.borrow_mut() = None;
            let u = Rc::new(
                load_upscaler(&gpu, weights, dtype)
                    .map_err(|e| (ErrorKind::Model, format!("{}: {e}", m.name)))?,
            );
            *state.upscaler.borrow_mut() = Some((key, u.clone()));
            u
        }
    };
    Ok((upscaler, m))
}
