//! `darkroom generate`: txt2img, img2img and inpainting from a diffusers folder to PNGs that
//! carry A1111's `parameters` chunk.

mod files;
mod settings;

use files::{load_model, load_preset, load_styles, lora_files, names_a_png, output_path};
pub use files::{read_png, read_wildcards, write_atomically};
pub use settings::*;

use std::io::Write;
use std::path::Path;

use darkroom_engine::policy::{self, Activations, Weights};
use darkroom_engine::ModelCache;
use darkroom_pipeline::preset::Preset;
use darkroom_workflow::{Styles, Wildcards};

use crate::failure::{usage, Failure};
use darkroom_gpu::Gpu;
use darkroom_pipeline::{Generated, Image, ImageRef, PipelineError, Recipe, Request, StableDiffusion};

/// The activations `--precision` asks for.
pub fn activations(precision: PrecisionArg) -> Activations {
    match precision {
        PrecisionArg::F32 => Activations::F32,
        PrecisionArg::F16 => Activations::F16,
        PrecisionArg::Auto => Activations::Auto,
    }
}

/// A seed from the clock, in A1111's range.
pub fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos % 4_294_967_295) as u64
}

/// A model id or a diffusers folder as the folder (an id is fetched first).

/// What every run of one command shares: the GPU, the settings, the images read once, the
/// styles, the loaded models (kept between runs while the model and LoRAs stay the same).
pub struct Runner<'g> {
    gpu: &'g Gpu,
    pub settings: Settings,
    precision: darkroom_pipeline::Precision,
    init_image: Option<Image>,
    mask: Option<Image>,
    pub styles: Styles,
    wildcards: Wildcards,
    preset: Option<Preset>,
    loaded: ModelCache<(StableDiffusion, String)>,
    controls: crate::control::Controls,
    upscalers: std::collections::HashMap<String, darkroom_models::upscale::Upscaler>,
    /// The TAESD decoder of --draft, loaded with the first draft.
    taesd: Option<darkroom_models::taesd::TaesdDecoder>,
}

impl<'g> Runner<'g> {
    pub fn new(gpu: &'g Gpu, settings: Settings) -> Result<Runner<'g>, Failure> {
        let weights = match settings.quant {
            Quant::None => Weights::AsStored,
            Quant::Q8 => Weights::Q8,
            Quant::Q4 => Weights::Q4,
        };
        let mut precision =
            policy::precision(gpu.capabilities().shader_f16, activations(settings.precision), weights)?;
        precision.text_encoders = settings.text_encoders.on(&gpu.capabilities().device_type);
        if settings.outpaint.is_some() && settings.init.is_none() {
            return Err(usage("--outpaint extends --init; give the image to extend".into()));
        }
        let init_image = settings.init.as_deref().map(|p| read_png(p, "init image")).transpose()?;
        let mask = settings.mask.as_deref().map(|p| read_png(p, "mask")).transpose()?;
        let styles = load_styles(&settings)?;
        let preset = settings.preset.as_deref().map(load_preset).transpose()?;
        let default_dir = darkroom_weights::native::default_cache_dir().join("wildcards");
        let wildcards = match &settings.wildcards {
            Some(dir) => read_wildcards(dir)?,
            None if default_dir.is_dir() => read_wildcards(&default_dir)?,
            None => Wildcards::new(),
        };
        let depth_model = settings.depth_model.clone();
        Ok(Runner {
            gpu,
            settings,
            precision,
            init_image,
            mask,
            styles,
            wildcards,
            preset,
            loaded: ModelCache::default(),
            controls: crate::control::Controls::new(depth_model),
            upscalers: Default::default(),
            taesd: None,
        })
    }

    /// The recipe (its seed set) as the runs --dynamic makes of its prompt: one recipe per
    /// image in random mode (seed s + i picks image i's expansion), one per combination in
    /// combinatorial mode (seeds continuing); the recipe itself when --dynamic is off or the
    /// prompt is plain text.
    pub fn expand(&self, recipe: Recipe) -> Result<Vec<Recipe>, Failure> {
        let mode = match self.settings.dynamic {
            Dynamic::Off => darkroom_pipeline::Dynamic::Off,
            Dynamic::Random => darkroom_pipeline::Dynamic::Random,
            Dynamic::Combinatorial => darkroom_pipeline::Dynamic::Combinatorial,
        };
        let expanded = darkroom_pipeline::dynamic::expand(&recipe, mode, &self.wildcards)
            .map_err(|e| usage(format!("--prompt: {e}")))?;
        for name in &expanded.missing {
            eprintln!("warning: wildcard __{name}__ has no values (--wildcards); it is left in the prompt as written");
        }
        Ok(expanded.recipes)
    }

    /// The settings as a recipe for `prompt` (the seed left for the caller). The size defaults
    /// to the init image's (extended by --outpaint), else 512 x 512.
    pub fn recipe(&self, prompt: &str) -> Recipe {
        let s = &self.settings;
        let file = |p: &Path| ImageRef::File(p.display().to_string());
        let [left, top, right, bottom] = s.outpaint.unwrap_or_default();
        // As diffusers: the init image's size, else the first control image's rounded down to
        // a multiple of 8, else 512.
        let control_size = match s.controls.first().and_then(|u| u.image.as_ref()) {
            Some(ImageRef::File(path)) => crate::generate::read_png(Path::new(path), "control image")
                .ok()
                .map(|img| ((img.width / 8 * 8).max(8), (img.height / 8 * 8).max(8))),
            _ => None,
        };
        let (width, height) = match (&self.init_image, control_size) {
            (Some(img), _) if s.sd_upscale.is_some() => {
                s.sd_upscale.as_ref().map_or((img.width, img.height), |u| u.size(img.width, img.height))
            }
            (Some(img), _) => (img.width + left + right, img.height + top + bottom),
            (None, Some(size)) => size,
            (None, None) => (512, 512),
        };
        Recipe {
            model: s.model.display().to_string(),
            prompt: prompt.to_string(),
            negative_prompt: s.negative.clone(),
            seed: s.seed,
            steps: s.steps,
            sampler: s.sampler,
            cfg_scale: s.cfg,
            width: s.width.unwrap_or(width),
            height: s.height.unwrap_or(height),
            batch_size: s.batch,
            batch_count: s.batch_count,
            init: s.init.as_deref().map(file),
            mask: s.mask.as_deref().map(file),
            outpaint: s.outpaint,
            strength: s.strength,
            template: None,
            preset: None,
            controls: s.controls.clone(),
            hires: s.hires.clone(),
            sd_upscale: s.sd_upscale.clone(),
            draft: s.draft.is_some(),
        }
    }

    /// Job `job`'s recipe under --preset (the recipe itself without one). `size_chosen`: the
    /// size was asked for (a flag, a job's field), so one the preset does not allow is refused
    /// rather than replaced by the preset's first.
    pub fn apply_preset(&self, recipe: Recipe, job: usize, size_chosen: bool) -> Result<Recipe, Failure> {
        match &self.preset {
            Some(preset) => {
                preset.apply(&recipe, job, size_chosen).map_err(|e| usage(format!("--preset: {e}")))
            }
            None => Ok(recipe),
        }
    }

    /// Whether the flags choose the size (--width, --height, an init image's).
    pub fn size_chosen(&self) -> bool {
        self.settings.width.is_some() || self.settings.height.is_some() || self.init_image.is_some()
    }

    /// `recipe` with the named styles applied to its prompts.
    pub fn apply_styles(&self, recipe: &mut Recipe, names: &[String]) -> Result<(), Failure> {
        let (prompt, negative) = self
            .styles
            .apply(names, &recipe.prompt, &recipe.negative_prompt)
            .map_err(|e| usage(format!("--style: {e}")))?;
        recipe.prompt = prompt;
        recipe.negative_prompt = negative;
        Ok(())
    }

    /// Makes the recipe's images (its seed must be set); with the hires fix, each is then
    /// upscaled and redrawn by an img2img pass at the larger size (same seed), and recorded with
    /// the recipe that made it.
    pub fn run(&mut self, recipe: Recipe, label: &str) -> Result<Vec<Generated>, Failure> {
        if recipe.sd_upscale.is_some() {
            return self.run_sd_upscale(recipe, label);
        }
        if recipe.hires.is_some() {
            // The hires settings checked before an upscaler model is looked for.
            recipe
                .validate(&darkroom_pipeline::ModelInfo::stable_diffusion(&recipe.model, false))
                .map_err(PipelineError::from)?;
        }
        // A draft is the first pass; its recipe keeps the hires settings for finishing.
        self.run_once(recipe, None, label)
    }

    /// SD upscale: the init image upscaled to the recipe's size, then each tile redrawn by
    /// img2img (the recipe's seed, steps and strength, batch 1) and the tiles blended.
    fn run_sd_upscale(&mut self, recipe: Recipe, label: &str) -> Result<Vec<Generated>, Failure> {
        use darkroom_pipeline::upscale::{spans, Blend, Neighbours};
        let Some(up) = recipe.sd_upscale.clone() else { return Ok(Vec::new()) };
        recipe
            .validate(&darkroom_pipeline::ModelInfo::stable_diffusion(&recipe.model, false))
            .map_err(PipelineError::from)?;
        let init = self.init_image.clone().ok_or_else(|| usage("--sd-upscale needs --init".into()))?;
        let (w, h) = (recipe.width, recipe.height);
        let big = self.hires_upscale(&up.upscaler, &init, (w, h))?;
        let (xs, ys) = (spans(w, up.tile, up.overlap, 8), spans(h, up.tile, up.overlap, 8));
        let mut blend = Blend::new(w, h);
        let mut record = None;
        for (yi, &(y0, th)) in ys.iter().enumerate() {
            for (xi, &(x0, tw)) in xs.iter().enumerate() {
                let crop = Image {
                    width: tw,
                    height: th,
                    rgba: (0..th)
                        .flat_map(|y| {
                            big.rgba[((y0 + y) * w + x0) * 4..((y0 + y) * w + x0 + tw) * 4].to_vec()
                        })
                        .collect(),
                };
                let tile_recipe = Recipe {
                    width: tw,
                    height: th,
                    batch_size: 1,
                    batch_count: 1,
                    sd_upscale: None,
                    ..recipe.clone()
                };
                let n = yi * xs.len() + xi + 1;
                let label = format!("{label}tile {n}/{}: ", xs.len() * ys.len());
                let made = self.run_once(tile_recipe, Some(crop), &label)?;
                let tile = made.into_iter().next().ok_or_else(|| usage("a tile made no image".into()))?;
                let neighbours = Neighbours::in_grid(xi, yi, xs.len(), ys.len());
                blend.add((x0, y0), (tw, th), up.overlap, neighbours, |x, y, c| {
                    tile.image.rgba[(y * tw + x) * 4 + c] as f32 / 255.0
                });
                record.get_or_insert(tile.params);
            }
        }
        let mut params = recipe.to_params(&record.and_then(|p| p.model).unwrap_or_default(), 0);
        params.width = w as u32;
        params.height = h as u32;
        Ok(vec![Generated::new(blend.finish(), params)])
    }

    /// The first pass's image at the second pass's size: Lanczos, or an upscaler model then
    /// Lanczos to the exact size.
    fn hires_upscale(
        &mut self,
        upscaler: &str,
        image: &Image,
        (w, h): (usize, usize),
    ) -> Result<Image, Failure> {
        use darkroom_pipeline::preprocess::resize_lanczos;
        if upscaler.eq_ignore_ascii_case(darkroom_pipeline::recipe::HIRES_LANCZOS) {
            return Ok(resize_lanczos(image, w, h));
        }
        self.load_upscaler(upscaler)?;
        let model = &self.upscalers[upscaler];
        let quiet = self.settings.quiet;
        let mut progress = |done: usize, total: usize| {
            if !quiet {
                crate::progress!("\rupscaling: tile {done}/{total}   ");
            }
            true
        };
        let big = pollster::block_on(darkroom_pipeline::upscale::upscale(
            self.gpu,
            model,
            model.dtype,
            image,
            None,
            &mut progress,
        ))?;
        Ok(if (big.width, big.height) == (w, h) { big } else { resize_lanczos(&big, w, h) })
    }

    /// Upscaler model `name` (a file or a downloaded id), loaded once.
    fn load_upscaler(&mut self, name: &str) -> Result<(), Failure> {
        if !self.upscalers.contains_key(name) {
            let model = crate::upscale::load(self.gpu, Path::new(name), self.precision.activations)?;
            self.upscalers.insert(name.to_string(), model);
        }
        Ok(())
    }

    /// The upscaler model `recipe`'s hires fix names (loaded now), if it names one.
    fn hires_upscaler(&mut self, recipe: &Recipe) -> Result<Option<String>, Failure> {
        match &recipe.hires {
            Some(h) if !darkroom_engine::job::runs_hires(h) => {
                self.load_upscaler(&h.upscaler)?;
                Ok(Some(h.upscaler.clone()))
            }
            _ => Ok(None),
        }
    }

    /// A draft's kept latents decoded by the full VAE of the model that made them (`--model`
    /// if given, else the recipe's), then the hires pass if its recipe has one.
    pub fn finish(
        &mut self,
        kept: &darkroom_pipeline::draft::Kept,
        label: &str,
    ) -> Result<Vec<Generated>, Failure> {
        let mut recipe = kept.final_recipe();
        recipe.model = self.settings.model.display().to_string();
        let quiet = self.settings.quiet;
        let seed = darkroom_pipeline::recipe::seed_at(recipe.seed.unwrap_or_default(), kept.index as u64, 1);
        let first = if recipe.hires.as_ref().and_then(|h| h.latent()).is_some() {
            // The kept latents are the first pass's: upscaled as they are, no VAE decode.
            darkroom_engine::job::FirstPass::Latents(kept.values.clone(), kept.shape)
        } else {
            let tiling = self.settings.vae_tiling;
            let gpu = self.gpu;
            let model = load_model(&mut self.loaded, gpu, &self.settings, self.precision, &recipe)?;
            let mut progress = |p: &darkroom_pipeline::Progress| {
                if !quiet {
                    crate::progress!("\r{label}decoding {}/{}   ", p.step, p.total);
                    let _ = std::io::stderr().flush();
                }
                true
            };
            let finished =
                pollster::block_on(darkroom_pipeline::finish(gpu, &model.0, kept, tiling, &mut progress))?;
            if !quiet {
                crate::progress_done!("\r{label}decoded      ");
            }
            if recipe.hires.is_none() {
                return Ok(vec![finished]);
            }
            darkroom_engine::job::FirstPass::Image(finished.image)
        };
        let upscaler = self.hires_upscaler(&recipe)?;
        let (model, request) = self.prepare(recipe, None, label)?;
        let mut progress = |p: &darkroom_pipeline::Progress| {
            if !quiet {
                crate::progress!("\r{label}hires {:?} {}/{}   ", p.stage, p.step, p.total);
                let _ = std::io::stderr().flush();
            }
            true
        };
        let made = pollster::block_on(darkroom_engine::job::hires_second_pass(
            self.gpu,
            &model.0,
            upscaler.as_deref().map(|name| &self.upscalers[name]),
            &request,
            seed,
            first,
            &mut progress,
        ))?;
        if !quiet {
            crate::progress_done!("\r{label}done                ");
        }
        Ok(made)
    }

    /// The TAESD decoder drafts are decoded with (`--draft`'s), loaded once.
    fn load_taesd(&mut self) -> Result<(), Failure> {
        if self.taesd.is_none() {
            let which = self.settings.draft.clone().unwrap_or_else(|| "taesd".into());
            let path = Path::new(&which);
            let file = if path.is_file() {
                path.to_path_buf()
            } else if path.is_dir() {
                path.join("taesd_decoder.safetensors")
            } else {
                crate::models::resolve(&which, None)?.join("taesd_decoder.safetensors")
            };
            let bytes = std::fs::read(&file)
                .map_err(|e| usage(format!("--draft: cannot read {}: {e}", file.display())))?;
            let store = darkroom_models::WeightStore::from_bytes(bytes)
                .map_err(|e| usage(format!("--draft: {}: {e}", file.display())))?;
            let dtype = self.precision.activations;
            let policy = if dtype == darkroom_gpu::DType::F16 {
                darkroom_models::QuantPolicy::F16
            } else {
                darkroom_models::QuantPolicy::F32
            };
            let decoder = darkroom_models::taesd::TaesdDecoder::load(
                &store.root(self.gpu, dtype, policy),
                darkroom_models::taesd::TaesdConfig::SD,
            )
            .map_err(|e| usage(format!("--draft: {} is not a TAESD decoder: {e}", file.display())))?;
            self.taesd = Some(decoder);
        }
        Ok(())
    }

    /// A run's model and request: the LoRA tags added, the model loaded (or reused), the
    /// ControlNets and embeddings; `init` stands in for the init image (the hires pass's).
    fn prepare(
        &mut self,
        mut recipe: Recipe,
        init: Option<Image>,
        label: &str,
    ) -> Result<(std::rc::Rc<(StableDiffusion, String)>, Request), Failure> {
        if recipe.draft {
            self.load_taesd()?;
        }
        let (_, tags) = lora_files(&self.settings);
        recipe.prompt.push_str(&tags);
        let quiet = self.settings.quiet;
        let gpu = self.gpu;
        let model = load_model(&mut self.loaded, gpu, &self.settings, self.precision, &recipe)?;
        let controls = self.controls.load(gpu, self.precision, &recipe.controls, quiet)?;
        let init_image = init.or_else(|| self.init_image.clone());
        let mut request = Request::new(recipe, init_image, self.mask.clone())?;
        request.vae_tiling = self.settings.vae_tiling;
        request.controls = controls;
        let dir = self
            .settings
            .embedding_dir
            .clone()
            .unwrap_or_else(|| darkroom_weights::native::default_cache_dir().join("embeddings"));
        let (embeddings, skipped) = crate::embeddings::load(&dir);
        if !quiet {
            for line in skipped {
                eprintln!("left out {line}");
            }
        }
        request.embeddings = embeddings;
        if !quiet {
            eprintln!("{label}seed {}", request.recipe.seed.unwrap_or_default());
        }
        Ok((model, request))
    }

    /// One run of the recipe; `init` stands in for its init image (the hires pass's).
    fn run_once(
        &mut self,
        recipe: Recipe,
        init: Option<Image>,
        label: &str,
    ) -> Result<Vec<Generated>, Failure> {
        let quiet = self.settings.quiet;
        // A draft's hires fix runs when it is finished.
        let upscaler = if recipe.draft { None } else { self.hires_upscaler(&recipe)? };
        let (model, request) = self.prepare(recipe, init, label)?;
        let started = std::time::Instant::now();
        let mut progress = |event: &darkroom_engine::job::Event| {
            if !quiet {
                let p = event.progress;
                let stage = match p.stage {
                    darkroom_pipeline::Stage::Encoding => "encoding",
                    darkroom_pipeline::Stage::Denoising => "denoising",
                    darkroom_pipeline::Stage::Decoding => "decoding",
                };
                let run = if event.runs > 1 {
                    format!("run {}/{}: ", event.run + 1, event.runs)
                } else {
                    String::new()
                };
                crate::progress!("\r{label}{run}{stage} {}/{}   ", p.step, p.total);
                let _ = std::io::stderr().flush();
            }
            true
        };
        let helpers = darkroom_engine::job::Helpers {
            taesd: self.taesd.as_ref(),
            upscaler: upscaler.as_deref().map(|name| &self.upscalers[name]),
        };
        let images = pollster::block_on(darkroom_engine::job::generate(
            self.gpu,
            &model.0,
            helpers,
            &request,
            &mut progress,
        ))?;
        if !quiet {
            crate::progress_done!(
                "\r{label}done in {:.1} s                ",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(images)
    }
}

pub fn run(gpu: &Gpu, args: GenerateArgs) -> Result<(), Failure> {
    let mut runner = Runner::new(gpu, args.settings)?;
    let mut recipe = runner.recipe(&args.prompt);
    recipe.seed = Some(recipe.seed.unwrap_or_else(random_seed));
    let styles = runner.settings.style.clone();
    let recipe = runner.apply_preset(recipe, 0, runner.size_chosen())?;
    let runs = runner.expand(recipe)?;
    let mut images = Vec::new();
    for (i, mut recipe) in runs.iter().cloned().enumerate() {
        runner.apply_styles(&mut recipe, &styles)?;
        let label = if runs.len() > 1 { format!("prompt {}/{}: ", i + 1, runs.len()) } else { String::new() };
        images.extend(runner.run(recipe, &label)?);
    }
    let count = images.len();
    let is_dir = !names_a_png(&args.out);
    let dir =
        if is_dir { args.out.clone() } else { args.out.parent().map(Path::to_path_buf).unwrap_or_default() };
    if !dir.as_os_str().is_empty() {
        std::fs::create_dir_all(&dir).map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    }
    for (i, generated) in images.iter().enumerate() {
        let path = output_path(&args.out, generated.params.seed, i, count);
        write_atomically(&path, &generated.to_png()?)?;
        println!("{}", path.display());
    }
    Ok(())
}
