//! Prompts → the UNet's context, A1111's way: the prompt's attention syntax is parsed, tokens
//! are packed into chunks of 75 (a `BREAK` starts a new one), each chunk is encoded as
//! `[start, 75 tokens, end]` padded to 77, the chunks' embeddings are concatenated, and
//! weighted tokens scale their embeddings with the chunk's mean restored (A1111's "original"
//! emphasis). A prompt of at most 75 tokens without weights gives exactly diffusers' embeddings.

use std::sync::Arc;

use crate::model::TextEncoder;
use darkroom_gpu::{ops, Gpu, Tensor};
use darkroom_weights::embedding::Embedding;

use crate::prompt::{self, Piece};
use crate::tokenizer::ClipTokenizer;
use crate::PipelineError;

/// Tokens per chunk between the start and end tokens.
pub const CHUNK: usize = 75;
/// The encoder's window: start + 75 + end.
pub const WINDOW: usize = CHUNK + 2;
/// How far back from a full chunk's end a comma may be to break there (A1111's default).
const COMMA_BACKTRACK: usize = 20;

/// One 77-token window and each position's weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

/// A textual-inversion embedding a prompt may call by name.
#[derive(Debug, Clone)]
pub struct NamedEmbedding {
    /// The file's name without extension: what a prompt writes.
    pub name: String,
    pub embedding: Arc<Embedding>,
}

/// The embeddings a prompt may call, laid out as an extension of the encoders' vocabulary: the
/// vectors of embedding k take the ids after those of embeddings 0..k, from `vocab_size` on (the
/// ids diffusers' `load_textual_inversion` gives the tokens it adds, in load order), with each
/// encoder's rows.
#[derive(Default)]
pub struct Vocabulary {
    entries: Vec<Entry>,
    /// Per encoder: the extra rows, hidden-size wide, in id order.
    pub extra: Vec<Vec<f32>>,
}

struct Entry {
    name: String,
    first: u32,
    n: usize,
    /// Why the embedding does not fit this model (refused when a prompt uses it).
    unfit: Option<String>,
}

impl Vocabulary {
    /// `encoders`: each text encoder's width and, for SDXL, whether it is the second.
    pub fn new(
        embeddings: &[NamedEmbedding],
        encoders: &[(usize, Option<bool>)],
        vocab_size: usize,
    ) -> Vocabulary {
        let mut entries = Vec::new();
        let mut extra = vec![Vec::new(); encoders.len()];
        let mut next = vocab_size as u32;
        for e in embeddings {
            let n = e.embedding.vectors();
            let mut unfit = None;
            for (k, &(width, second)) in encoders.iter().enumerate() {
                match e.embedding.for_encoder(width, second) {
                    Ok(v) => extra[k].extend_from_slice(&v.values),
                    Err(why) => {
                        unfit.get_or_insert(why);
                        extra[k].extend(std::iter::repeat_n(0.0, n * width));
                    }
                }
            }
            entries.push(Entry { name: e.name.clone(), first: next, n, unfit });
            next += n as u32;
        }
        Vocabulary { entries, extra }
    }

    /// Each embedding's name as `tokenizer` splits it, longest first (A1111 prefers the longest
    /// match at a position).
    fn names(&self, tokenizer: &ClipTokenizer) -> Result<Vec<(Vec<u32>, &Entry)>, PipelineError> {
        let mut names = Vec::new();
        for e in &self.entries {
            let tokens = tokenizer.encode(&e.name)?;
            if !tokens.is_empty() {
                names.push((tokens, e));
            }
        }
        names.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(names)
    }
}

/// A piece's tokens with embeddings found: plain ids, or an embedding's ids (all its vectors).
enum Unit {
    Token(u32),
    Embedding(Vec<u32>),
}

fn units(tokens: &[u32], names: &[(Vec<u32>, &Entry)]) -> Result<Vec<Unit>, PipelineError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        match names.iter().find(|(name, _)| tokens[at..].starts_with(name)) {
            Some((name, e)) => {
                if let Some(why) = &e.unfit {
                    return Err(PipelineError::Input(format!("the embedding {} {why}", e.name)));
                }
                out.push(Unit::Embedding((e.first..e.first + e.n as u32).collect()));
                at += name.len();
            }
            None => {
                out.push(Unit::Token(tokens[at]));
                at += 1;
            }
        }
    }
    Ok(out)
}

/// A prompt's chunks (at least one: an empty prompt is one chunk of start, end and padding).
pub fn chunks(tokenizer: &ClipTokenizer, text: &str) -> Result<Vec<Chunk>, PipelineError> {
    chunks_with(tokenizer, text, &Vocabulary::default())
}

/// A prompt's chunks, the names of `vocabulary`'s embeddings replaced by their vectors' ids as
/// A1111 does: an embedding is not split between chunks (it starts the next one when it does
/// not fit), and takes the weight of the text around it.
pub fn chunks_with(
    tokenizer: &ClipTokenizer,
    text: &str,
    vocabulary: &Vocabulary,
) -> Result<Vec<Chunk>, PipelineError> {
    let names = vocabulary.names(tokenizer)?;
    let comma = tokenizer.encode(",")?.first().copied();
    let mut runs: Vec<Vec<(u32, f32)>> = vec![Vec::new()];
    // Position in the current run just after its last comma (A1111's `last_comma`).
    let mut after_comma: Option<usize> = None;
    // `<lora:…>` tags choose weights (the caller loads them); they are not words.
    let (text, _) = prompt::extract_loras(text);
    for piece in prompt::parse(&text) {
        match piece {
            Piece::Break => {
                runs.push(Vec::new());
                after_comma = None;
            }
            Piece::Text(t, weight) => {
                for unit in units(&tokenizer.encode(&t)?, &names)? {
                    let id = match unit {
                        Unit::Token(id) => id,
                        Unit::Embedding(ids) => {
                            if runs.last().expect("never empty").len() + ids.len() > CHUNK {
                                runs.push(Vec::new());
                                after_comma = None;
                            }
                            let run = runs.last_mut().expect("never empty");
                            run.extend(ids.into_iter().map(|id| (id, weight as f32)));
                            continue;
                        }
                    };
                    let current = runs.last_mut().expect("never empty");
                    if Some(id) == comma {
                        after_comma = Some(current.len() + 1);
                    } else if current.len() == CHUNK {
                        // A full chunk moves the words after its last comma (within 20 tokens)
                        // to the next one, so a phrase is not cut in half (A1111's
                        // comma_padding_backtrack).
                        if let Some(at) = after_comma.filter(|&at| CHUNK + 1 - at <= COMMA_BACKTRACK) {
                            let moved = current.split_off(at);
                            runs.push(moved);
                            after_comma = None;
                        }
                    }
                    if runs.last().expect("never empty").len() == CHUNK {
                        runs.push(Vec::new());
                        after_comma = None;
                    }
                    runs.last_mut().expect("never empty").push((id, weight as f32));
                }
            }
        }
    }
    // A trailing BREAK does not add an empty chunk.
    if runs.len() > 1 && runs.last().is_some_and(Vec::is_empty) {
        runs.pop();
    }
    Ok(runs
        .into_iter()
        .map(|run| {
            let mut ids = vec![tokenizer.bos];
            let mut weights = vec![1.0];
            for (id, w) in run {
                ids.push(id);
                weights.push(w);
            }
            ids.push(tokenizer.eos);
            weights.push(1.0);
            ids.resize(WINDOW, tokenizer.pad);
            weights.resize(WINDOW, 1.0);
            Chunk { ids, weights }
        })
        .collect())
}

/// Encodes the negative and positive prompts for `batch` images: the context
/// [2·batch, 77·k, D] (negatives first, as the CFG pass wants) or, with `with_negative` false,
/// [batch, 77·k, D] of the positive prompt alone. The shorter prompt is padded with empty
/// chunks so both have k.
#[allow(clippy::too_many_arguments)]
pub async fn encode(
    gpu: &Gpu,
    tokenizer: &ClipTokenizer,
    clip: &TextEncoder,
    vocabulary: &Vocabulary,
    prompt: &str,
    negative: &str,
    batch: usize,
    with_negative: bool,
) -> Result<Tensor, PipelineError> {
    let mut positive = chunks_with(tokenizer, prompt, vocabulary)?;
    let mut groups = Vec::new();
    if with_negative {
        let mut negative = chunks_with(tokenizer, negative, vocabulary)?;
        let k = positive.len().max(negative.len());
        let empty = chunks(tokenizer, "")?.remove(0);
        positive.resize(k, empty.clone());
        negative.resize(k, empty);
        groups.extend(std::iter::repeat_n(&negative, batch).cloned());
    }
    let k = positive.len();
    groups.extend(std::iter::repeat_n(&positive, batch).cloned());
    let rows: Vec<&Chunk> = groups.iter().flatten().collect();
    // Every row of a batch and guidance half repeats one of two prompts: encode each distinct
    // window once.
    let mut distinct: Vec<&Chunk> = Vec::new();
    let index: Vec<usize> = rows
        .iter()
        .map(|c| {
            distinct.iter().position(|d| d.ids == c.ids).unwrap_or_else(|| {
                distinct.push(c);
                distinct.len() - 1
            })
        })
        .collect();
    let ids: Vec<u32> = distinct.iter().flat_map(|c| c.ids.iter().copied()).collect();
    let extra = vocabulary.extra.first().map_or(&[][..], Vec::as_slice);
    // [distinct, 77, D]; an encoder kept on the host is uploaded for this and freed after.
    let encoded = clip.on_gpu(gpu)?.forward_extended(gpu, &ids, WINDOW, extra).await?;
    let d = *encoded.shape().last().expect("3-D");
    let dtype = encoded.dtype();
    let weighted = distinct.iter().any(|c| c.weights.iter().any(|&w| w != 1.0));
    let trivial_order = index.iter().enumerate().all(|(i, &j)| i == j);
    if !weighted && trivial_order {
        return Ok(encoded.reshape(&[groups.len(), k * WINDOW, d])?);
    }
    // Weights or repeated rows: assemble on the CPU (a few hundred KB, once per generation).
    let values = encoded.read_f32(gpu).await?;
    let per = WINDOW * d;
    let mut out = Vec::with_capacity(rows.len() * per);
    for &j in &index {
        let z = &values[j * per..(j + 1) * per];
        out.extend(emphasize(z, &distinct[j].weights, d));
    }
    let context = Tensor::from_f32(gpu, &[groups.len(), k * WINDOW, d], &out, dtype)?;
    Ok(context)
}

/// A1111's "original" emphasis: each token's embedding times its weight, then the whole
/// window rescaled so its mean is what it was.
fn emphasize(z: &[f32], weights: &[f32], d: usize) -> Vec<f32> {
    if weights.iter().all(|&w| w == 1.0) {
        return z.to_vec();
    }
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let before = mean(z);
    let scaled: Vec<f32> = z.iter().enumerate().map(|(i, &x)| x * weights[i / d]).collect();
    let after = mean(&scaled);
    let ratio = if after != 0.0 { (before / after) as f32 } else { 1.0 };
    scaled.into_iter().map(|x| x * ratio).collect()
}

/// Repeats `x` [1, …] `n` times along the batch dimension (for shared conditioning inputs).
pub fn repeat_batch(gpu: &Gpu, x: &Tensor, n: usize) -> Result<Tensor, darkroom_gpu::GpuError> {
    let mut out = x.clone();
    for _ in 1..n {
        out = ops::concat(gpu, &out, x, 0)?;
    }
    Ok(out)
}

/// What the UNet is conditioned on: the context, and for SDXL the pooled text embeddings.
#[derive(Clone)]
pub struct Conditioning {
    /// [rows, 77·k, D]: negative rows first (with CFG), then positive ones.
    pub context: Tensor,
    /// SDXL: [rows, P], the second encoder's pooled projection of each row's prompt.
    pub pooled: Option<Tensor>,
}

/// SDXL's conditioning for the negative and positive prompts, `batch` rows each (negatives
/// first, only with `with_negative`), as diffusers' `StableDiffusionXLPipeline.encode_prompt`
/// for prompts of at most 75 tokens, and A1111's way beyond: both tokenizers chunk the prompt
/// alike (the second pads with its own pad token), both encoders' penultimate states are
/// weighted (A1111's emphasis, each encoder's mean restored) and concatenated per token, and
/// the pooled embedding is the second encoder's for the first chunk. An empty negative prompt
/// is zeros, context and pooled, where the model says `force_zeros_for_empty_prompt`.
#[allow(clippy::too_many_arguments)]
pub async fn encode_sdxl(
    gpu: &Gpu,
    (tokenizer, clip): (&ClipTokenizer, &TextEncoder),
    xl: &crate::model::SdxlText,
    vocabulary: &Vocabulary,
    prompt: &str,
    negative: &str,
    batch: usize,
    with_negative: bool,
) -> Result<Conditioning, PipelineError> {
    let zero_negative = with_negative && negative.is_empty() && xl.force_zeros_for_empty_prompt;
    let texts: Vec<&str> = match (with_negative, zero_negative) {
        (true, false) => vec![negative, prompt],
        _ => vec![prompt],
    };
    // Chunks per text and tokenizer, padded with empty chunks to one count k.
    let mut first: Vec<Vec<Chunk>> =
        texts.iter().map(|t| chunks_with(tokenizer, t, vocabulary)).collect::<Result<_, _>>()?;
    let mut second: Vec<Vec<Chunk>> =
        texts.iter().map(|t| chunks_with(&xl.tokenizer, t, vocabulary)).collect::<Result<_, _>>()?;
    let k = first.iter().chain(&second).map(Vec::len).max().unwrap_or(1);
    let (empty1, empty2) = (chunks(tokenizer, "")?.remove(0), chunks(&xl.tokenizer, "")?.remove(0));
    for (list, empty) in first.iter_mut().map(|l| (l, &empty1)).chain(second.iter_mut().map(|l| (l, &empty2)))
    {
        list.resize(k, empty.clone());
    }
    let ids =
        |lists: &[Vec<Chunk>]| -> Vec<u32> { lists.iter().flatten().flat_map(|c| c.ids.clone()).collect() };
    let extra = |k: usize| vocabulary.extra.get(k).map_or(&[][..], Vec::as_slice);
    // One encoder at a time: one kept on the host is on the GPU only for its own pass.
    let out1 = clip.on_gpu(gpu)?.forward_sdxl(gpu, &ids(&first), WINDOW, false, extra(0)).await?;
    let h1 = out1.penultimate.read_f32(gpu).await?;
    let out2 = xl.clip.on_gpu(gpu)?.forward_sdxl(gpu, &ids(&second), WINDOW, true, extra(1)).await?;
    let (d1, d2) = (clip.config().hidden_size, xl.clip.config().hidden_size);
    let h2 = out2.penultimate.read_f32(gpu).await?;
    let pooled = out2
        .pooled
        .ok_or_else(|| PipelineError::Input("the second text encoder gave no pooled output".into()))?;
    let p = *pooled.shape().last().expect("2-D");
    let pooled = pooled.read_f32(gpu).await?;

    // Per text: [77·k, d1 + d2] and the first chunk's pooled row.
    let width = d1 + d2;
    let per_text: Vec<(Vec<f32>, Vec<f32>)> = (0..texts.len())
        .map(|t| {
            let mut context = vec![0.0f32; k * WINDOW * width];
            for c in 0..k {
                let row = t * k + c;
                let a = emphasize(&h1[row * WINDOW * d1..(row + 1) * WINDOW * d1], &first[t][c].weights, d1);
                let b = emphasize(&h2[row * WINDOW * d2..(row + 1) * WINDOW * d2], &second[t][c].weights, d2);
                for i in 0..WINDOW {
                    let at = (c * WINDOW + i) * width;
                    context[at..at + d1].copy_from_slice(&a[i * d1..(i + 1) * d1]);
                    context[at + d1..at + width].copy_from_slice(&b[i * d2..(i + 1) * d2]);
                }
            }
            (context, pooled[t * k * p..(t * k + 1) * p].to_vec())
        })
        .collect();
    let zeros = (vec![0.0f32; k * WINDOW * width], vec![0.0f32; p]);
    let groups: Vec<&(Vec<f32>, Vec<f32>)> = match (with_negative, zero_negative) {
        (true, true) => vec![&zeros, &per_text[0]],
        (true, false) => vec![&per_text[0], &per_text[1]],
        _ => vec![&per_text[0]],
    };
    let rows = groups.len() * batch;
    let mut context = Vec::with_capacity(rows * k * WINDOW * width);
    let mut pooled_rows = Vec::with_capacity(rows * p);
    for group in &groups {
        for _ in 0..batch {
            context.extend_from_slice(&group.0);
            pooled_rows.extend_from_slice(&group.1);
        }
    }
    let dtype = out1.penultimate.dtype();
    Ok(Conditioning {
        context: Tensor::from_f32(gpu, &[rows, k * WINDOW, width], &context, dtype)?,
        pooled: Some(Tensor::from_f32(gpu, &[rows, p], &pooled_rows, dtype)?),
    })
}

/// What a conditioning depends on besides the model: the prompts, the rows, whether the
/// negative is encoded, and the embeddings the prompts may call (the same files, by identity).
#[derive(Clone)]
pub struct ConditioningKey {
    prompt: String,
    negative: String,
    batch: usize,
    guided: bool,
    embeddings: Vec<NamedEmbedding>,
}

impl ConditioningKey {
    pub fn new(
        prompt: &str,
        negative: &str,
        batch: usize,
        guided: bool,
        embeddings: &[NamedEmbedding],
    ) -> Self {
        ConditioningKey {
            prompt: prompt.to_string(),
            negative: negative.to_string(),
            batch,
            guided,
            embeddings: embeddings.to_vec(),
        }
    }

    fn same(&self, other: &ConditioningKey) -> bool {
        self.prompt == other.prompt
            && self.negative == other.negative
            && self.batch == other.batch
            && self.guided == other.guided
            && self.embeddings.len() == other.embeddings.len()
            && self
                .embeddings
                .iter()
                .zip(&other.embeddings)
                .all(|(a, b)| a.name == b.name && Arc::ptr_eq(&a.embedding, &b.embedding))
    }
}

/// The last few conditionings a model made, so runs that differ only in what does not change
/// the text (a grid's steps, CFG or sampler cells, a batch count's runs, a queue of seeds) do not
/// encode the prompts again. A loaded model is one set of weights (LoRAs are merged at load),
/// so the cache lives with it. Each entry is a few hundred KB of GPU memory.
#[derive(Default)]
pub struct TextCache {
    entries: std::sync::Mutex<Vec<(ConditioningKey, Conditioning)>>,
    encodings: std::sync::atomic::AtomicUsize,
}

impl TextCache {
    /// How many entries are kept.
    pub const ENTRIES: usize = 8;

    /// The conditioning for `key`, if kept (it becomes the most recent).
    pub fn get(&self, key: &ConditioningKey) -> Option<Conditioning> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = entries.iter().position(|(k, _)| k.same(key))?;
        let entry = entries.remove(at);
        let out = entry.1.clone();
        entries.push(entry);
        Some(out)
    }

    /// Keeps a conditioning just encoded, dropping the least recently used past [`Self::ENTRIES`].
    pub fn keep(&self, key: ConditioningKey, conditioning: &Conditioning) {
        self.encodings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(k, _)| !k.same(&key));
        entries.push((key, conditioning.clone()));
        let excess = entries.len().saturating_sub(Self::ENTRIES);
        entries.drain(..excess);
    }

    /// How many times the text encoders have run for this model.
    pub fn encodings(&self) -> usize {
        self.encodings.load(std::sync::atomic::Ordering::Relaxed)
    }
}
