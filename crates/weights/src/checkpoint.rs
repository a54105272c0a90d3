//! Single-file Stable Diffusion 1.x and SDXL checkpoints — the original LDM/SGM layout that A1111,
//! ComfyUI and model sites share (`model.diffusion_model.*`, `first_stage_model.*`, and
//! `cond_stage_model.transformer.*` for SD 1.x, `conditioner.embedders.0.transformer.*` (CLIP-L)
//! and `conditioner.embedders.1.model.*` (OpenCLIP bigG) for SDXL) — imported into the diffusers
//! layout the loader reads, as diffusers' single-file converter maps them: one safetensors file
//! per component, tensors renamed, bytes copied unchanged (the VAE's 1x1 attention convolutions
//! become the matrices they are; OpenCLIP's fused `in_proj` splits into q, k and v by rows; its
//! `text_projection` is transposed). The import streams: it reads the source in ranges and writes
//! the store in chunks, so neither the browser nor the CLI holds the file.

use serde_json::Value;

use crate::fetch::{ChunkStore, FetchError, Seal};
use crate::safetensors::{header_span, Header, SafetensorsError, TensorInfo};

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const CLIP: &str = "cond_stage_model.transformer.";
const XL_CLIP: &str = "conditioner.embedders.0.transformer.";
const XL_OPENCLIP: &str = "conditioner.embedders.1.model.";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a readable safetensors file: {0}")]
    Format(#[from] SafetensorsError),
    #[error("reading the checkpoint failed: {0}")]
    Read(String),
    #[error("{0}")]
    Store(#[from] FetchError),
    #[error("the base model's {0} is missing or unreadable: {1}")]
    Config(&'static str, String),
    #[error("`{0}` is not a tensor of an SD 1.x or SDXL checkpoint in the LDM layout")]
    Unknown(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the import was cancelled; nothing of it was kept")]
    Cancelled,
}

/// The files of a diffusers pipeline a checkpoint fills (SDXL's second text encoder too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    TextEncoder,
    TextEncoder2,
    Unet,
    Vae,
}

impl Component {
    pub const ALL: [Component; 4] =
        [Component::TextEncoder, Component::TextEncoder2, Component::Unet, Component::Vae];
    /// What an SD 1.x checkpoint fills.
    pub const SD: [Component; 3] = [Component::TextEncoder, Component::Unet, Component::Vae];

    /// The components a checkpoint for this layout fills.
    pub fn for_layout(layout: &Layout) -> &'static [Component] {
        if layout.sdxl {
            &Component::ALL
        } else {
            &Component::SD
        }
    }

    /// The file in the diffusers layout.
    pub fn path(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder/model.safetensors",
            Component::TextEncoder2 => "text_encoder_2/model.safetensors",
            Component::Unet => "unet/diffusion_pytorch_model.safetensors",
            Component::Vae => "vae/diffusion_pytorch_model.safetensors",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::Unet => "unet",
            Component::Vae => "vae",
        }
    }
}

/// How a checkpoint tensor holds a diffusers one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// Third `k` (q, k, v) of OpenCLIP's fused attention projection, by rows.
    Third(u8),
    /// The transpose (OpenCLIP's `text_projection` is [width, projection]).
    Transposed,
}

/// What the renaming needs to know of the architecture, from the base model's configs.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub layers_per_block: usize,
    /// Per UNet up block: whether it has attentions (its upsampler then sits in slot 2).
    pub up_attention: Vec<bool>,
    /// The VAE's number of resolution levels (the LDM decoder numbers them the other way).
    pub vae_levels: usize,
    /// An SDXL UNet (text_time added conditioning): the checkpoint has two text encoders.
    pub sdxl: bool,
}

impl Layout {
    /// From the base model's `unet/config.json` and `vae/config.json`.
    pub fn from_configs(unet: &str, vae: &str) -> Result<Layout, CheckpointError> {
        let unet: Value = serde_json::from_str(unet)
            .map_err(|e| CheckpointError::Config("unet/config.json", e.to_string()))?;
        let vae: Value = serde_json::from_str(vae)
            .map_err(|e| CheckpointError::Config("vae/config.json", e.to_string()))?;
        let bad = |what: &'static str| CheckpointError::Config(what, "a field is missing".into());
        let up_attention = unet["up_block_types"]
            .as_array()
            .ok_or_else(|| bad("unet/config.json"))?
            .iter()
            .map(|t| t.as_str().is_some_and(|s| s.starts_with("CrossAttn")))
            .collect();
        Ok(Layout {
            layers_per_block: unet["layers_per_block"].as_u64().ok_or_else(|| bad("unet/config.json"))?
                as usize,
            up_attention,
            vae_levels: vae["block_out_channels"].as_array().ok_or_else(|| bad("vae/config.json"))?.len(),
            sdxl: unet["addition_embed_type"].as_str() == Some("text_time"),
        })
    }
}

fn rename(rest: &str, table: &[(&str, &str)]) -> String {
    for (old, new) in table {
        if let Some(tail) = rest.strip_prefix(old).filter(|t| t.starts_with('.')) {
            return format!("{new}{tail}");
        }
    }
    rest.to_string()
}

const UNET_RESNET: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("emb_layers.1", "time_emb_proj"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("skip_connection", "conv_shortcut"),
];
const VAE_SHORTCUT: [(&str, &str); 1] = [("nin_shortcut", "conv_shortcut")];
const VAE_ATTENTION: [(&str, &str); 5] =
    [("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")];

/// `"12.0.rest"` → (12, 0, "rest").
fn indices(s: &str) -> Option<(usize, usize, &str)> {
    let (a, rest) = s.split_once('.')?;
    let (b, rest) = rest.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

fn unet_name(key: &str, layout: &Layout) -> Option<String> {
    let per = layout.layers_per_block + 1;
    for (old, new) in [
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("label_emb.0.0", "add_embedding.linear_1"),
        ("label_emb.0.2", "add_embedding.linear_2"),
        ("input_blocks.0.0", "conv_in"),
        ("out.0", "conv_norm_out"),
        ("out.2", "conv_out"),
    ] {
        if let Some(tail) = key.strip_prefix(old).filter(|t| t.starts_with('.')) {
            return Some(format!("{new}{tail}"));
        }
    }
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (i, slot, rest) = indices(rest)?;
        let (block, layer) = ((i.checked_sub(1)?) / per, (i - 1) % per);
        return match (slot, layer == layout.layers_per_block) {
            (0, true) => {
                Some(format!("down_blocks.{block}.downsamplers.0.conv.{}", rest.strip_prefix("op.")?))
            }
            (0, false) => Some(format!("down_blocks.{block}.resnets.{layer}.{}", rename(rest, &UNET_RESNET))),
            (1, false) => Some(format!("down_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (slot, rest) = rest.split_once('.')?;
        return match slot {
            "0" => Some(format!("mid_block.resnets.0.{}", rename(rest, &UNET_RESNET))),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", rename(rest, &UNET_RESNET))),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (i, slot, rest) = indices(rest)?;
        let (block, layer) = (i / per, i % per);
        let attention = *layout.up_attention.get(block)?;
        let upsampler = if attention { 2 } else { 1 };
        return match slot {
            0 => Some(format!("up_blocks.{block}.resnets.{layer}.{}", rename(rest, &UNET_RESNET))),
            s if s == upsampler && layer == layout.layers_per_block && rest.starts_with("conv.") => {
                Some(format!("up_blocks.{block}.upsamplers.0.{rest}"))
            }
            1 if attention => Some(format!("up_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    None
}

fn vae_name(key: &str, layout: &Layout) -> Option<String> {
    let (part, rest) = key.split_once('.')?;
    if part != "encoder" && part != "decoder" {
        return ["quant_conv.", "post_quant_conv."]
            .iter()
            .any(|p| key.starts_with(p))
            .then(|| key.to_string());
    }
    if let Some(rest) = rest.strip_prefix("down.").filter(|_| part == "encoder") {
        let (level, rest) = rest.split_once('.')?;
        if let Some(conv) = rest.strip_prefix("downsample.conv.") {
            return Some(format!("encoder.down_blocks.{level}.downsamplers.0.conv.{conv}"));
        }
        let (j, rest) = rest.strip_prefix("block.")?.split_once('.')?;
        return Some(format!("encoder.down_blocks.{level}.resnets.{j}.{}", rename(rest, &VAE_SHORTCUT)));
    }
    if let Some(rest) = rest.strip_prefix("up.").filter(|_| part == "decoder") {
        let (level, rest) = rest.split_once('.')?;
        let block = layout.vae_levels.checked_sub(1)?.checked_sub(level.parse().ok()?)?;
        if let Some(conv) = rest.strip_prefix("upsample.conv.") {
            return Some(format!("decoder.up_blocks.{block}.upsamplers.0.conv.{conv}"));
        }
        let (j, rest) = rest.strip_prefix("block.")?.split_once('.')?;
        return Some(format!("decoder.up_blocks.{block}.resnets.{j}.{}", rename(rest, &VAE_SHORTCUT)));
    }
    if let Some(rest) = rest.strip_prefix("mid.") {
        if let Some(rest) = rest.strip_prefix("attn_1.") {
            return Some(format!("{part}.mid_block.attentions.0.{}", rename(rest, &VAE_ATTENTION)));
        }
        let (block, rest) = rest.split_once('.')?;
        let index = match block {
            "block_1" => 0,
            "block_2" => 1,
            _ => return None,
        };
        return Some(format!("{part}.mid_block.resnets.{index}.{}", rename(rest, &VAE_SHORTCUT)));
    }
    if let Some(tail) = rest.strip_prefix("norm_out.") {
        return Some(format!("{part}.conv_norm_out.{tail}"));
    }
    ["conv_in.", "conv_out."].iter().any(|p| rest.starts_with(p)).then(|| key.to_string())
}

const OPENCLIP_LAYER: [(&str, &str); 5] = [
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
    ("attn.out_proj", "self_attn.out_proj"),
];

/// An OpenCLIP text tower's tensor (after `…model.`) as CLIPTextModelWithProjection's: empty for
/// what the encoder does not use (logit_scale, the attention mask).
fn openclip_names(rest: &str) -> Option<Vec<(String, Part)>> {
    let whole = |name: &str| Some(vec![(name.to_string(), Part::Whole)]);
    match rest {
        "token_embedding.weight" => return whole("text_model.embeddings.token_embedding.weight"),
        "positional_embedding" => return whole("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight" => return whole("text_model.final_layer_norm.weight"),
        "ln_final.bias" => return whole("text_model.final_layer_norm.bias"),
        "text_projection" => return Some(vec![("text_projection.weight".into(), Part::Transposed)]),
        "logit_scale" | "attn_mask" => return Some(Vec::new()),
        _ => {}
    }
    let rest = rest.strip_prefix("transformer.resblocks.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let prefix = format!("text_model.encoder.layers.{layer}");
    if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
        if kind != "weight" && kind != "bias" {
            return None;
        }
        return Some(
            ["q", "k", "v"]
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("{prefix}.self_attn.{p}_proj.{kind}"), Part::Third(i as u8)))
                .collect(),
        );
    }
    let renamed = rename(rest, &OPENCLIP_LAYER);
    (renamed != rest).then(|| vec![(format!("{prefix}.{renamed}"), Part::Whole)])
}

/// Where a checkpoint tensor goes: one or more diffusers tensors (OpenCLIP's fused q/k/v
/// projection is three), none for what a pipeline does not use (EMA copies, training state,
/// position ids), an error for a name inside a component that is not known or a checkpoint of
/// another family than the base model's.
pub fn diffusers_names(
    key: &str,
    layout: &Layout,
) -> Result<Vec<(Component, String, Part)>, CheckpointError> {
    let family = |sdxl: bool| {
        if sdxl == layout.sdxl {
            return Ok(());
        }
        Err(CheckpointError::Unsupported(if sdxl {
            "this is an SDXL checkpoint: import it on an SDXL base model".into()
        } else {
            "this is an SD 1.x checkpoint: import it on an SD 1.x base model".into()
        }))
    };
    if let Some(rest) = key.strip_prefix(XL_CLIP) {
        family(true)?;
        if rest.ends_with("position_ids") {
            return Ok(Vec::new());
        }
        return Ok(vec![(Component::TextEncoder, rest.to_string(), Part::Whole)]);
    }
    if let Some(rest) = key.strip_prefix(XL_OPENCLIP) {
        family(true)?;
        let names = openclip_names(rest).ok_or_else(|| CheckpointError::Unknown(key.to_string()))?;
        return Ok(names.into_iter().map(|(n, p)| (Component::TextEncoder2, n, p)).collect());
    }
    if key.starts_with(CLIP) {
        family(false)?;
    }
    if key.starts_with("conditioner.") {
        return Err(CheckpointError::Unsupported(format!(
            "`{key}`: an SDXL refiner or other conditioner layout; SD 1.x and SDXL base checkpoints import"
        )));
    }
    Ok(diffusers_name(key, layout)?.map(|(c, n)| vec![(c, n, Part::Whole)]).unwrap_or_default())
}

/// Where a checkpoint tensor that maps one to one goes (UNet, VAE, SD 1.x's text encoder):
/// `Ok(None)` for what a pipeline does not use (EMA copies, training state, position ids), an
/// error for a name inside a component that is not known.
pub fn diffusers_name(key: &str, layout: &Layout) -> Result<Option<(Component, String)>, CheckpointError> {
    let unknown = || CheckpointError::Unknown(key.to_string());
    if let Some(rest) = key.strip_prefix(UNET) {
        return unet_name(rest, layout).map(|n| Some((Component::Unet, n))).ok_or_else(unknown);
    }
    if let Some(rest) = key.strip_prefix(VAE) {
        return vae_name(rest, layout).map(|n| Some((Component::Vae, n))).ok_or_else(unknown);
    }
    if let Some(rest) = key.strip_prefix(CLIP) {
        if rest.ends_with("position_ids") {
            return Ok(None);
        }
        // With or without transformers' `text_model.` level: the loader reads both.
        return Ok(Some((Component::TextEncoder, rest.to_string())));
    }
    if key.starts_with("cond_stage_model.model.") {
        return Err(CheckpointError::Unsupported(
            "this is an SD 2.x checkpoint (OpenCLIP text encoder); SD 1.x and SDXL single-file checkpoints import"
                .into(),
        ));
    }
    if key.starts_with("conditioner.") {
        return Err(CheckpointError::Unsupported(
            "this is an SDXL checkpoint: import it on an SDXL base model".into(),
        ));
    }
    Ok(None)
}

/// The shape in the diffusers layout: the VAE's attention projections lose their 1x1.
fn diffusers_shape(component: Component, name: &str, shape: &[u64]) -> Vec<u64> {
    let projection =
        ["to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight"].iter().any(|s| name.ends_with(s));
    if component == Component::Vae && projection && shape.len() == 4 && shape[2] == 1 && shape[3] == 1 {
        shape[..2].to_vec()
    } else {
        shape.to_vec()
    }
}

/// Random access to the checkpoint: a file natively, a `File` (Blob) in the browser.
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    fn len(&self) -> u64;
    async fn read(&self, start: u64, len: u64) -> Result<Vec<u8>, CheckpointError>;
}

/// A safetensors source's header bytes (the length field and the JSON, what [`Header::parse`]
/// reads), read in two small ranges: the header is checked before the rest is touched.
pub async fn read_header_bytes<S: ByteSource>(source: &S) -> Result<Vec<u8>, CheckpointError> {
    let len = source.len();
    let first8: [u8; 8] = source.read(0, 8).await?.try_into().map_err(|_| SafetensorsError::TooShort(len))?;
    let span = header_span(first8, len)?;
    source.read(0, span).await
}

/// A piece of the source that fills one output tensor: a byte range of a source tensor, copied
/// or (a small matrix) transposed.
struct Piece {
    name: String,
    start: u64,
    end: u64,
    /// Rows, columns and element size of a source matrix to transpose.
    transpose: Option<(u64, u64, u64)>,
}

/// One output file: its header and which source pieces fill it, in order.
struct Plan {
    component: Component,
    header: Vec<u8>,
    pieces: Vec<Piece>,
    total: u64,
}

/// The diffusers shape and source piece of a checkpoint tensor's `part`.
fn piece(
    t: &TensorInfo,
    component: Component,
    name: &str,
    part: Part,
) -> Result<(Vec<u64>, Piece), CheckpointError> {
    let len = t.end - t.start;
    let bad = |why: &str| CheckpointError::Unknown(format!("{} ({why}, shape {:?})", t.name, t.shape));
    Ok(match part {
        Part::Whole => {
            let shape = diffusers_shape(component, name, &t.shape);
            (shape, Piece { name: name.to_string(), start: t.start, end: t.end, transpose: None })
        }
        Part::Third(k) => {
            let rows = *t.shape.first().ok_or_else(|| bad("a scalar cannot split in three"))?;
            if rows % 3 != 0 {
                return Err(bad("rows do not split in three"));
            }
            let mut shape = t.shape.clone();
            shape[0] = rows / 3;
            let third = len / 3;
            let start = t.start + k as u64 * third;
            (shape, Piece { name: name.to_string(), start, end: start + third, transpose: None })
        }
        Part::Transposed => {
            let [rows, cols] = t.shape[..] else { return Err(bad("not a matrix")) };
            let size = len / (rows * cols).max(1);
            let transpose = Some((rows, cols, size));
            (vec![cols, rows], Piece { name: name.to_string(), start: t.start, end: t.end, transpose })
        }
    })
}

fn plan(header: &Header, layout: &Layout) -> Result<Vec<Plan>, CheckpointError> {
    // The text encoders say which family the file is: checked first, so an SDXL file on an
    // SD 1.x base is refused for that, not for the first UNet name the other layout lacks.
    if let Some(t) =
        header.tensors.iter().find(|t| t.name.starts_with(CLIP) || t.name.starts_with("conditioner."))
    {
        diffusers_names(&t.name, layout)?;
    }
    let mut targets = Vec::new();
    for t in &header.tensors {
        for (c, name, part) in diffusers_names(&t.name, layout)? {
            targets.push((c, name, part, t));
        }
    }
    let mut plans = Vec::new();
    for &component in Component::for_layout(layout) {
        let mut entries = serde_json::Map::new();
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for (c, name, part, t) in &targets {
            if *c != component {
                continue;
            }
            let (shape, piece) = piece(t, *c, name, *part)?;
            let len = piece.end - piece.start;
            let entry = serde_json::json!({ "dtype": t.dtype.name(), "shape": shape, "data_offsets": [offset, offset + len] });
            if entries.insert(name.clone(), entry).is_some() {
                return Err(CheckpointError::Unknown(format!("{} (a second tensor named {name})", t.name)));
            }
            offset += len;
            pieces.push(piece);
        }
        if pieces.is_empty() {
            let family = if layout.sdxl { "SDXL" } else { "SD 1.x" };
            return Err(CheckpointError::Unsupported(format!(
                "the checkpoint has no {} weights: it is not a full {family} checkpoint (a LoRA or a single component?)",
                component.name()
            )));
        }
        let mut json = serde_json::to_vec(&Value::Object(entries)).expect("a JSON map serializes");
        // Tensor data aligned to 8 bytes, as safetensors writers do.
        while (8 + json.len()) % 8 != 0 {
            json.push(b' ');
        }
        let mut head = (json.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&json);
        plans.push(Plan { component, total: head.len() as u64 + offset, header: head, pieces });
    }
    Ok(plans)
}

/// `bytes` of a [rows, cols] matrix of `size`-byte elements, transposed.
fn transposed(bytes: &[u8], rows: u64, cols: u64, size: u64) -> Vec<u8> {
    let (rows, cols, size) = (rows as usize, cols as usize, size as usize);
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * size;
            let to = (c * rows + r) * size;
            out[to..to + size].copy_from_slice(&bytes[from..from + size]);
        }
    }
    out
}

/// Writes a file into the store chunk by chunk as its bytes come.
struct ChunkWriter<'a, C: ChunkStore> {
    store: &'a C,
    key: String,
    chunk_size: u64,
    index: u64,
    buffer: Vec<u8>,
}

impl<C: ChunkStore> ChunkWriter<'_, C> {
    async fn push(&mut self, mut bytes: &[u8]) -> Result<(), CheckpointError> {
        while !bytes.is_empty() {
            let room = self.chunk_size as usize - self.buffer.len();
            let take = room.min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() == self.chunk_size as usize {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CheckpointError> {
        if !self.buffer.is_empty() {
            self.store.write_chunk(&self.key, self.index, self.chunk_size, &self.buffer).await?;
            self.index += 1;
            self.buffer.clear();
        }
        Ok(())
    }
}

/// Stores small bytes (a config file) as a complete file of the store.
pub async fn store_file<C: ChunkStore>(
    store: &C,
    key: &str,
    bytes: &[u8],
    chunk_size: u64,
) -> Result<(), CheckpointError> {
    store.remove(key).await?;
    store.set_total(key, bytes.len() as u64).await?;
    let mut writer = ChunkWriter { store, key: key.to_string(), chunk_size, index: 0, buffer: Vec::new() };
    writer.push(bytes).await?;
    writer.flush().await?;
    let seal = Seal { total: bytes.len() as u64, sha256: None, sha256_from: "", commit: None };
    store.seal(key, chunk_size, &seal).await?;
    Ok(())
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// (diffusers path, bytes) of each file written.
    pub files: Vec<(String, u64)>,
    /// Checkpoint tensors left out (EMA copies, training state).
    pub skipped: usize,
}

/// Copies a single-file SD 1.x or SDXL checkpoint into `store` as the weight files of model `id` in the
/// diffusers layout. `progress` sees (bytes written, bytes to write); `cancelled` is asked
/// between tensors. The configs and tokenizer come from a base model, stored by the caller.
pub async fn import_checkpoint<S: ByteSource, C: ChunkStore>(
    source: &S,
    store: &C,
    id: &str,
    layout: &Layout,
    chunk_size: u64,
    progress: &mut dyn FnMut(u64, u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<Imported, CheckpointError> {
    let outcome = async {
        let len = source.len();
        let header = Header::parse(&read_header_bytes(source).await?, len)?;
        let plans = plan(&header, layout)?;
        let used = header
            .tensors
            .iter()
            .filter(|t| diffusers_names(&t.name, layout).is_ok_and(|names| !names.is_empty()))
            .count();
        let total: u64 = plans.iter().map(|p| p.total).sum();
        let mut done = 0u64;
        let mut files = Vec::new();
        for p in &plans {
            let key = format!("{id}/{}", p.component.path());
            store.remove(&key).await?;
            store.set_total(&key, p.total).await?;
            let mut writer =
                ChunkWriter { store, key: key.clone(), chunk_size, index: 0, buffer: Vec::new() };
            writer.push(&p.header).await?;
            for piece in &p.pieces {
                if cancelled() {
                    return Err(CheckpointError::Cancelled);
                }
                if let Some((rows, cols, size)) = piece.transpose {
                    // A small matrix (SDXL's text projection, 3 MB): read whole, transposed.
                    let bytes = source.read(piece.start, piece.end - piece.start).await?;
                    if bytes.len() as u64 != piece.end - piece.start {
                        return Err(CheckpointError::Read(format!("{}: short read", piece.name)));
                    }
                    writer.push(&transposed(&bytes, rows, cols, size)).await?;
                    done += bytes.len() as u64;
                    progress(done, total);
                    continue;
                }
                let mut at = piece.start;
                while at < piece.end {
                    let n = (piece.end - at).min(chunk_size);
                    let bytes = source.read(at, n).await?;
                    if bytes.len() as u64 != n {
                        return Err(CheckpointError::Read(format!("{}: short read", piece.name)));
                    }
                    writer.push(&bytes).await?;
                    at += n;
                    done += n;
                    progress(done, total);
                }
            }
            writer.flush().await?;
            let seal = Seal { total: p.total, sha256: None, sha256_from: "", commit: None };
            store.seal(&key, chunk_size, &seal).await?;
            done += p.header.len() as u64;
            progress(done, total);
            files.push((p.component.path().to_string(), p.total));
        }
        Ok(Imported { files, skipped: header.tensors.len() - used })
    }
    .await;
    if outcome.is_err() {
        // A half-written import is never left looking like a model.
        for c in Component::ALL {
            let _ = store.remove(&format!("{id}/{}", c.path())).await;
        }
    }
    outcome
}

/// The file an imported model keeps its manifest in, beside its weights.
pub const IMPORTED_MANIFEST: &str = "darkroom-manifest.toml";

/// A model id from a checkpoint's file name: lower-case letters, digits, '-' and '.'.
pub fn model_id(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".safetensors").unwrap_or(file_name);
    let slug: String = stem
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    let mut slug = slug.trim_matches(|c| c == '-' || c == '.').to_string();
    while slug.contains("..") {
        slug = slug.replace("..", ".");
    }
    slug.truncate(64);
    let slug = slug.trim_end_matches(['-', '.']);
    if crate::manifest::check_id(slug).is_ok() {
        slug.to_string()
    } else {
        "imported".into()
    }
}

/// The files an imported model takes from its base model (configs, tokenizer, scheduler).
pub const BASE_FILES: [&str; 14] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
    // SDXL's second encoder and tokenizer (absent from SD 1.x bases).
    "text_encoder_2/config.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/vocab.json",
];

/// A manifest for an imported model, so it lists, loads and deletes like a downloaded one.
/// `files` are (path, size) of everything stored under `id`.
pub fn imported_manifest(id: &str, name: &str, base: &crate::Manifest, files: &[(String, u64)]) -> String {
    let mut toml = format!(
        "# Imported on this device from a single-file checkpoint, on the configs of {base_name}.\n\
         id = {id:?}\nname = {name:?}\nfamily = {family:?}\n\
         description = \"Imported from a local checkpoint (base: {base_name})\"\n\n\
         [license]\nname = \"The checkpoint's own license (it derives from {base_name}: {license})\"\nurl = {url:?}\n\n\
         [source]\nrepo = \"local/{id}\"\nrevision = \"imported\"\n\n",
        base_name = base.name,
        family = base.family.as_str(),
        license = base.license.name,
        url = base.license.url,
    );
    if let Some(d) = &base.defaults {
        toml += &format!(
            "[defaults]\nwidth = {}\nheight = {}\nsteps = {}\ncfg = {:?}\nsampler = {:?}\n\n",
            d.width, d.height, d.steps, d.cfg, d.sampler
        );
    }
    toml += &format!(
        "[quantization]\nlinear = {:?}\nconv = {:?}\n",
        base.quantization.linear, base.quantization.conv
    );
    for (path, size) in files {
        let component = path.split('/').next().filter(|_| path.contains('/')).unwrap_or("pipeline");
        toml += &format!("\n[[files]]\npath = {path:?}\ncomponent = {component:?}\nsize = {size}\n");
    }
    toml
}

#[cfg(test)]
mod tests {
    use super::model_id;

    #[test]
    fn ids_from_file_names_are_manifest_ids() {
        assert_eq!(model_id("My Model v2.safetensors"), "my-model-v2");
        assert_eq!(model_id("dreamshaper_8.safetensors"), "dreamshaper-8");
        assert_eq!(model_id("sd-1.5-pruned.safetensors"), "sd-1.5-pruned");
        assert_eq!(model_id("__.safetensors"), "imported");
        for hostile in ["...safetensors", "../../etc.safetensors", ".hidden.safetensors", "a..b.safetensors"]
        {
            let id = model_id(hostile);
            assert!(crate::manifest::check_id(&id).is_ok(), "{hostile} → {id}");
        }
        assert_eq!(model_id("../../etc.safetensors"), "etc");
    }
}
