//! The depth preprocessor in the worker: a Depth Anything model (read from the browser's store
//! and kept loaded) makes the depth map of a control unit's image, for the control panel's
//! preview and for a generation's depth units.

use std::rc::Rc;

use darkroom_pipeline::depth::{DepthModel, DEFAULT_MODEL};
use darkroom_pipeline::metadata::encode_png_plain;
use darkroom_pipeline::{Image, Precision};
use darkroom_weights::browser::IdbStore;
use darkroom_weights::ModelKind;

use super::{fetch_failure, gpu, now_ms, pipeline_failure, post, Failure, State};
use crate::idb_model::IdbModelFiles;
use crate::protocol::{ErrorKind, FromWorker, ImageInfo, ModelRef};

/// The depth model: `model` (a downloaded depth manifest, as the control panel's preview
/// names it) or, for a generation, the one the last preview loaded, else the built-in Depth
/// Anything V2 Small. One stays loaded (f32: the map is min-max scaled; f32 runs everywhere).
async fn model(state: &State, id: u32, model: Option<&ModelRef>) -> Result<Rc<DepthModel>, Failure> {
    let manifest = match model {
        Some(m) => super::manifest(m)?,
        None => match state.depth.borrow().as_ref() {
            Some(held) => return Ok(held.clone()),
            None => darkroom_weights::manifest::find(DEFAULT_MODEL)
                .map_err(|e| (ErrorKind::Model, e.to_string()))?,
        },
    };
    if manifest.family != ModelKind::Depth {
        return Err((ErrorKind::Input, format!("{} is not a depth model", manifest.name)));
    }
    if let Some(held) = state.depth.borrow().as_ref().filter(|m| m.name == manifest.id) {
        return Ok(held.clone());
    }
    let gpu = gpu(state).await?;
    let store = IdbStore::open().await.map_err(fetch_failure)?;
    let cancelled = || state.is_cancelled(id);
    let files = IdbModelFiles { store: &store, manifest: &manifest, cancelled: &cancelled };
    *state.depth.borrow_mut() = None;
    let loaded =
        DepthModel::load(&gpu, &files, &manifest.id, Precision::F32).await.map_err(
            |e| match pipeline_failure(e) {
                (ErrorKind::Model, m) | (ErrorKind::Input, m) => (
                    ErrorKind::Model,
                    format!("the depth preprocessor needs {}: download it under Models ({m})", manifest.name),
                ),
                other => other,
            },
        )?;
    let loaded = Rc::new(loaded);
    *state.depth.borrow_mut() = Some(loaded.clone());
    Ok(loaded)
}

/// The depth control map of `image`, at its size.
pub(super) async fn depth_map(
    state: &State,
    id: u32,
    depth_model: Option<&ModelRef>,
    image: &Image,
) -> Result<Image, Failure> {
    let m = model(state, id, depth_model).await?;
    // A batch count's runs (and the preview before them) share the image: made once.
    let made = state
        .depth_last
        .borrow()
        .as_ref()
        .filter(|(name, source, _)| *name == m.name && source == image)
        .map(|(_, _, map)| map.clone());
    if let Some(map) = made {
        return Ok(map);
    }
    let gpu = gpu(state).await?;
    let map = m.control_map(&gpu, image).await.map_err(pipeline_failure)?;
    *state.depth_last.borrow_mut() = Some((m.name.clone(), image.clone(), map.clone()));
    Ok(map)
}

/// Answers a `Depth` request: the map of the PNG attachment, as a PNG attachment of `Result`.
pub(super) async fn preview(
    state: &State,
    id: u32,
    depth_model: &ModelRef,
    bytes: Vec<Vec<u8>>,
) -> Result<(), Failure> {
    let started = now_ms();
    let png = bytes.first().ok_or((ErrorKind::Input, "no image came with the request".into()))?;
    let image = Image::from_png(png).map_err(pipeline_failure)?;
    let map = depth_map(state, id, Some(depth_model), &image).await?;
    let out = encode_png_plain(&map.rgba, map.width as u32, map.height as u32)
        .map_err(|e| pipeline_failure(e.into()))?;
    let info = ImageInfo { width: map.width, height: map.height, seed: 0, infotext: String::new() };
    post(
        id,
        FromWorker::Result { images: vec![info], ms: now_ms() - started, gallery_error: None },
        vec![out],
    );
    Ok(())
}
