//! Single-file (LDM layout) checkpoints into the diffusers layout, against diffusers' own reading
//! of such a file: tests/fixtures/ldm/tiny-sd-ldm-map.json lists every tensor of the tiny model
//! with its single-file name, as diffusers' converters read it back (tests/reference/ldm_checkpoint.py).

use std::path::PathBuf;

use darkroom_weights::checkpoint::{
    diffusers_name, import_checkpoint, ByteSource, CheckpointError, Component, Layout, Part,
};
use darkroom_weights::native::FolderStore;
use darkroom_weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn layout() -> Layout {
    let read = |p: &str| std::fs::read_to_string(fixtures().join("tiny-sd").join(p)).unwrap();
    Layout::from_configs(&read("unet/config.json"), &read("vae/config.json")).unwrap()
}

fn component(name: &str) -> Component {
    match name {
        "unet" => Component::Unet,
        "vae" => Component::Vae,
        "text_encoder" => Component::TextEncoder,
        other => panic!("{other}"),
    }
}

/// (LDM name, component, diffusers name, LDM shape).
fn map() -> Vec<(String, Component, String, Vec<u64>)> {
    let text = std::fs::read_to_string(fixtures().join("ldm/tiny-sd-ldm-map.json")).unwrap();
    let entries: Vec<(String, String, String, Vec<u64>)> = serde_json::from_str(&text).unwrap();
    entries.into_iter().map(|(l, c, d, s)| (l, component(&c), d, s)).collect()
}

fn original(c: Component) -> SafetensorsFile {
    SafetensorsFile::from_bytes(std::fs::read(fixtures().join("tiny-sd").join(c.path())).unwrap()).unwrap()
}

#[test]
fn every_name_maps_as_diffusers_reads_it() {
    let layout = layout();
    let entries = map();
    assert_eq!(entries.len(), 536);
    for (ldm, c, name, _) in &entries {
        let got = diffusers_name(ldm, &layout).unwrap_or_else(|e| panic!("{ldm}: {e}"));
        assert_eq!(got, Some((*c, name.clone())), "{ldm}");
    }
    // What a pipeline does not use is left out, not an error.
    for skipped in [
        "model_ema.decay",
        "model_ema.diffusion_modelinput_blocks00weight",
        "alphas_cumprod",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "lora_unet_down_blocks_0.alpha",
    ] {
        assert_eq!(diffusers_name(skipped, &layout).unwrap(), None, "{skipped}");
    }
    for (bad, why) in [
        ("model.diffusion_model.input_blocks.1.7.weight", "not a tensor"),
        ("first_stage_model.encoder.mid.block_9.conv1.weight", "not a tensor"),
        ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "SD 2.x"),
        ("conditioner.embedders.0.transformer.text_model.final_layer_norm.weight", "SDXL"),
    ] {
        let e = diffusers_name(bad, &layout).unwrap_err().to_string();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

fn ldm_checkpoint() -> Vec<u8> {
    darkroom_weights::testing::tiny_ldm_checkpoint(&fixtures())
}

fn safetensors(tensors: &[(String, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    darkroom_weights::testing::safetensors_bytes(tensors)
}

struct Memory(Vec<u8>);

impl ByteSource for Memory {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, CheckpointError> {
        let end = (start + len).min(self.0.len() as u64) as usize;
        Ok(self.0[start as usize..end].to_vec())
    }
}

fn temp_store(name: &str) -> (PathBuf, FolderStore) {
    let dir = std::env::temp_dir().join(format!("darkroom-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (dir.clone(), FolderStore::new(&dir))
}

#[test]
fn an_import_writes_the_diffusers_files_tensor_for_tensor() {
    let source = Memory(ldm_checkpoint());
    let (dir, store) = temp_store("import");
    let mut seen = Vec::new();
    let mut progress = |done, total| seen.push((done, total));
    // A small chunk size, so tensors span chunks and chunks span tensors.
    let imported = pollster::block_on(import_checkpoint(
        &source,
        &store,
        "mine",
        &layout(),
        4096,
        &mut progress,
        &|| false,
    ))
    .unwrap();
    assert_eq!(imported.skipped, 2, "alphas_cumprod and model_ema.decay are left out");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress only grows");
    let (done, total) = *seen.last().unwrap();
    assert_eq!(done, total);
    assert_eq!(total, imported.files.iter().map(|(_, n)| n).sum::<u64>());
    for c in Component::SD {
        let ours =
            SafetensorsFile::from_bytes(std::fs::read(dir.join("mine").join(c.path())).unwrap()).unwrap();
        let theirs = original(c);
        let names = |f: &SafetensorsFile| {
            f.header.tensors.iter().map(|t| t.name.clone()).collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(names(&ours), names(&theirs), "{c:?}: the same tensor names");
        for t in &theirs.header.tensors {
            let o = ours.header.get(&t.name).unwrap();
            assert_eq!((o.dtype, &o.shape), (t.dtype, &t.shape), "{c:?} {}", t.name);
            assert_eq!(ours.tensor_bytes(o), theirs.tensor_bytes(t), "{c:?} {}", t.name);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_is_not_a_full_sd1_checkpoint_is_refused_with_a_reason() {
    let layout = layout();
    let import = |bytes: Vec<u8>| {
        let (dir, store) = temp_store("refuse");
        let r = pollster::block_on(import_checkpoint(
            &Memory(bytes),
            &store,
            "x",
            &layout,
            4096,
            &mut |_, _| {},
            &|| false,
        ));
        let _ = std::fs::remove_dir_all(&dir);
        r.map(|_| ()).unwrap_err().to_string()
    };
    let lora = safetensors(&[(
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight".into(),
        "F16",
        vec![4, 32],
        vec![0; 256],
    )]);
    assert!(import(lora).contains("not a full SD 1.x checkpoint"));
    let sd2 = safetensors(&[("cond_stage_model.model.ln_final.weight".into(), "F32", vec![1], vec![0; 4])]);
    assert!(import(sd2).contains("SD 2.x"));
    assert!(import(b"not a checkpoint at all".to_vec()).contains("safetensors"));
    let mut cut = ldm_checkpoint();
    cut.truncate(cut.len() / 2);
    assert!(import(cut).contains("safetensors"), "a truncated file fails its header check");
    let (dir, store) = temp_store("cancel");
    let cancelled = pollster::block_on(import_checkpoint(
        &Memory(ldm_checkpoint()),
        &store,
        "x",
        &layout,
        4096,
        &mut |_, _| {},
        &|| true,
    ));
    assert!(cancelled.unwrap_err().to_string().contains("cancelled"));
    assert!(
        !dir.join("x/unet").join("diffusion_pytorch_model.safetensors").exists(),
        "nothing half-written is left"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn sdxl_layout() -> Layout {
    let read = |p: &str| std::fs::read_to_string(fixtures().join("tiny-sdxl").join(p)).unwrap();
    Layout::from_configs(&read("unet/config.json"), &read("vae/config.json")).unwrap()
}

/// The tensor names without transformers 4's optional `text_model.` level of the first encoder
/// (checkpoints carry it; the tiny file, saved by transformers 5, does not; the loader reads both).
fn plain(component: Component, name: &str) -> String {
    match component {
        Component::TextEncoder => name.strip_prefix("text_model.").unwrap_or(name).to_string(),
        _ => name.to_string(),
    }
}

/// tests/fixtures/ldm/tiny-sdxl-ldm-map.json: every SDXL single-file name (label_emb, CLIP-L under
/// conditioner.embedders.0, OpenCLIP bigG under conditioner.embedders.1 with fused q/k/v and a
/// transposed projection) maps to the tensor diffusers' converter makes of it.
#[test]
fn sdxl_names_map_as_diffusers_reads_them() {
    let sd_layout = layout();
    let layout = sdxl_layout();
    assert!(layout.sdxl && !sd_layout.sdxl);
    let text = std::fs::read_to_string(fixtures().join("ldm/tiny-sdxl-ldm-map.json")).unwrap();
    let entries: Vec<(String, String, String, Vec<u64>, String)> = serde_json::from_str(&text).unwrap();
    assert_eq!(entries.len(), 1123);
    for (ldm, component, name, _, part) in &entries {
        let targets = darkroom_weights::checkpoint::diffusers_names(ldm, &layout)
            .unwrap_or_else(|e| panic!("{ldm}: {e}"));
        let want_part = match part.as_str() {
            "" => Part::Whole,
            "T" => Part::Transposed,
            "q" => Part::Third(0),
            "k" => Part::Third(1),
            _ => Part::Third(2),
        };
        let found =
            targets.iter().any(|(c, n, p)| c.name() == component && plain(*c, n) == *name && *p == want_part);
        assert!(found, "{ldm} → {targets:?}, want {component} {name} {part}");
    }
    // An SD 1.x checkpoint on an SDXL base, and the reverse, say which base they need.
    let sd1 = diffusers_name("cond_stage_model.transformer.text_model.final_layer_norm.weight", &layout);
    let e = darkroom_weights::checkpoint::diffusers_names(
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        &layout,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("SD 1.x base"), "{e} ({sd1:?})");
    let e = darkroom_weights::checkpoint::diffusers_names(
        "conditioner.embedders.1.model.ln_final.weight",
        &sd_layout,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("SDXL base"), "{e}");
}

#[test]
fn an_sdxl_import_writes_the_four_diffusers_files_tensor_for_tensor() {
    let source = Memory(darkroom_weights::testing::tiny_sdxl_ldm_checkpoint(&fixtures()));
    let (dir, store) = temp_store("sdxl");
    let imported = pollster::block_on(import_checkpoint(
        &source,
        &store,
        "mine",
        &sdxl_layout(),
        4096,
        &mut |_, _| {},
        &|| false,
    ))
    .unwrap();
    assert_eq!(imported.skipped, 1, "model_ema.num_updates is left out");
    assert_eq!(imported.files.len(), 4);
    for c in Component::ALL {
        let read = |root: &std::path::Path| {
            SafetensorsFile::from_bytes(std::fs::read(root.join(c.path())).unwrap()).unwrap()
        };
        let (ours, theirs) = (read(&dir.join("mine")), read(&fixtures().join("tiny-sdxl")));
        let names = |f: &SafetensorsFile| {
            f.header.tensors.iter().map(|t| plain(c, &t.name)).collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(names(&ours), names(&theirs), "{c:?}: the same tensor names");
        for o in &ours.header.tensors {
            let t = theirs.header.tensors.iter().find(|t| plain(c, &t.name) == plain(c, &o.name)).unwrap();
            assert_eq!((o.dtype, &o.shape), (t.dtype, &t.shape), "{c:?} {}", t.name);
            assert_eq!(ours.tensor_bytes(o), theirs.tensor_bytes(t), "{c:?} {}", t.name);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
