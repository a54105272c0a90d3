//! ControlNet units on the command line: `--control model=…,image=…[,pre=…][,weight=W]
//! [,start=S][,end=E][,low=L,high=H]` (repeatable), the ControlNets they load, and
//! `darkroom preprocess`, which writes a control map alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use darkroom_gpu::Gpu;
use darkroom_pipeline::depth::DepthModel;
use darkroom_pipeline::preprocess;
use darkroom_pipeline::{
    ControlNet, ControlUnit, Folder, FolderQuantCache, Image, ImageRef, Precision, Preprocessor,
};

use crate::failure::{usage, Failure};

/// One `--control` value as a recipe's unit (its image a file).
pub fn parse_control(s: &str) -> Result<ControlUnit, String> {
    let mut unit = ControlUnit::default();
    let number =
        |key: &str, v: &str| v.trim().parse::<f64>().map_err(|_| format!("{key}={v:?} is not a number"));
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| {
            format!("expected key=value in {part:?} (keys: model, image, pre, weight, start, end, low, high)")
        })?;
        let value = value.trim();
        match key.trim() {
            "model" => unit.model = value.to_string(),
            "image" => unit.image = Some(ImageRef::File(value.to_string())),
            "pre" => unit.pre = value.parse()?,
            "weight" => unit.weight = number("weight", value)?,
            "start" => unit.start = number("start", value)?,
            "end" => unit.end = number("end", value)?,
            "low" => unit.low = number("low", value)?,
            "high" => unit.high = number("high", value)?,
            other => {
                return Err(format!(
                    "unknown key {other:?} (keys: model, image, pre, weight, start, end, low, high)"
                ))
            }
        }
    }
    if unit.model.is_empty() || unit.image.is_none() {
        return Err("a control unit needs model=<id|folder> and image=<png>".into());
    }
    unit.validate(0).map_err(|e| e.message.trim_start_matches("control unit 1: ").to_string())?;
    Ok(unit)
}

/// The folder a model argument names: a folder, or an id in the download cache; `what` says
/// what it must be when it has no config.json.
fn model_folder(model: &str, what: &str) -> Result<PathBuf, Failure> {
    let path = Path::new(model);
    let looks_like_id = !model.contains(['/', '\\']) && !model.starts_with('.');
    let folder = if !path.exists() && looks_like_id {
        crate::models::resolve(model, None)?
    } else {
        path.to_path_buf()
    };
    if !folder.join("config.json").is_file() {
        return Err(usage(format!("{}: not {what} (no config.json)", folder.display())));
    }
    Ok(folder)
}

/// The diffusers ControlNet folder a unit's model names.
fn controlnet_folder(model: &str) -> Result<PathBuf, Failure> {
    model_folder(model, "a diffusers ControlNet folder")
        .map_err(|e| usage(format!("ControlNet {}", e.message)))
}

/// The Depth Anything folder `--depth-model` names (by default depth-anything-v2-small).
fn depth_folder(model: Option<&str>) -> Result<PathBuf, Failure> {
    model_folder(model.unwrap_or(darkroom_pipeline::depth::DEFAULT_MODEL), "a Depth Anything folder").map_err(
        |e| {
            usage(format!(
                "the depth preprocessor needs Depth Anything: {} (or give its folder with --depth-model)",
                e.message
            ))
        },
    )
}

/// Loads the depth model, in f32 whatever the generation's precision (as the app's worker runs
/// it: the map is the same everywhere).
fn load_depth(gpu: &Gpu, model: Option<&str>, quiet: bool) -> Result<DepthModel, Failure> {
    let folder = depth_folder(model)?;
    let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !quiet {
        eprintln!("loading depth model {name} …");
    }
    Ok(pollster::block_on(DepthModel::load(gpu, &Folder(folder), &name, Precision::F32))?)
}

/// ControlNets, control images and the depth model, loaded once and shared by every run of a
/// command.
#[derive(Default)]
pub struct Controls {
    nets: HashMap<PathBuf, Arc<ControlNet>>,
    images: HashMap<String, Image>,
    /// `--depth-model`, and the model once loaded.
    depth_model: Option<String>,
    depth: Option<DepthModel>,
    /// Depth maps made, by image path.
    depth_maps: HashMap<String, Image>,
}

impl Controls {
    pub fn new(depth_model: Option<String>) -> Controls {
        Controls { depth_model, ..Controls::default() }
    }

    /// The depth control map of the image at `path`.
    fn depth_map(&mut self, gpu: &Gpu, path: &str, image: &Image, quiet: bool) -> Result<Image, Failure> {
        if let Some(map) = self.depth_maps.get(path) {
            return Ok(map.clone());
        }
        if self.depth.is_none() {
            self.depth = Some(load_depth(gpu, self.depth_model.as_deref(), quiet)?);
        }
        let model = self.depth.as_ref().expect("loaded above");
        let map = pollster::block_on(model.control_map(gpu, image))?;
        self.depth_maps.insert(path.to_string(), map.clone());
        Ok(map)
    }

    pub fn image(&mut self, path: &str) -> Result<Image, Failure> {
        if let Some(image) = self.images.get(path) {
            return Ok(image.clone());
        }
        let image = crate::generate::read_png(Path::new(path), "control image")?;
        self.images.insert(path.to_string(), image.clone());
        Ok(image)
    }

    /// The units' ControlNets and images, in order.
    pub fn load(
        &mut self,
        gpu: &Gpu,
        precision: Precision,
        units: &[ControlUnit],
        quiet: bool,
    ) -> Result<Vec<darkroom_pipeline::Control>, Failure> {
        let mut out = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let (image, path) = match &unit.image {
                Some(ImageRef::File(path)) => (self.image(path)?, path.clone()),
                _ => return Err(usage(format!("control unit {}: give its image as image=<png>", i + 1))),
            };
            let map = match unit.pre {
                Preprocessor::Depth => Some(self.depth_map(gpu, &path, &image, quiet)?),
                _ => None,
            };
            let folder = controlnet_folder(&unit.model)?;
            let key = folder.canonicalize().unwrap_or_else(|_| folder.clone());
            let net = match self.nets.get(&key) {
                Some(net) => net.clone(),
                None => {
                    let name = key.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if !quiet {
                        eprintln!("loading ControlNet {name} …");
                    }
                    let cache =
                        FolderQuantCache(darkroom_weights::native::default_cache_dir().join("quantized"));
                    let net = Arc::new(pollster::block_on(ControlNet::load(
                        gpu,
                        &Folder(folder.clone()),
                        &cache,
                        &name,
                        precision,
                        &mut |_, _, _| {},
                    ))?);
                    self.nets.insert(key, net.clone());
                    net
                }
            };
            out.push(darkroom_pipeline::Control { net, image, map });
        }
        Ok(out)
    }
}

#[derive(clap::Args)]
pub struct PreprocessArgs {
    /// none, canny, lineart, scribble, depth, tile.
    #[arg(long, value_parser = parse_pre)]
    pub pre: Preprocessor,
    /// The image to make a control map of (PNG).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The control map (PNG).
    #[arg(long)]
    pub out: PathBuf,
    /// Canny's low threshold.
    #[arg(long, default_value_t = darkroom_pipeline::control::CANNY_LOW)]
    pub low: f64,
    /// Canny's high threshold.
    #[arg(long, default_value_t = darkroom_pipeline::control::CANNY_HIGH)]
    pub high: f64,
    /// The Depth Anything model --pre depth runs: an id (default depth-anything-v2-small) or a
    /// transformers folder.
    #[arg(long, value_name = "id|folder")]
    pub depth_model: Option<String>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_pre(s: &str) -> Result<Preprocessor, String> {
    s.parse()
}

pub fn run_preprocess(args: PreprocessArgs) -> Result<(), Failure> {
    let unit = ControlUnit {
        model: "-".into(),
        image: Some(ImageRef::File(args.input.display().to_string())),
        pre: args.pre,
        low: args.low,
        high: args.high,
        ..ControlUnit::default()
    };
    unit.validate(0).map_err(|e| usage(e.message.trim_start_matches("control unit 1: ").to_string()))?;
    let image = crate::generate::read_png(&args.input, "image")?;
    let map = match args.pre {
        Preprocessor::Depth => {
            let gpu = pollster::block_on(Gpu::open(&darkroom_gpu::Requirements::default()))
                .map_err(darkroom_pipeline::PipelineError::from)?;
            let model = load_depth(&gpu, args.depth_model.as_deref(), args.quiet)?;
            pollster::block_on(model.control_map(&gpu, &image))?
        }
        pre => preprocess::run(pre, &image, args.low, args.high)?,
    };
    let bytes = darkroom_pipeline::metadata::encode_png_plain(&map.rgba, map.width as u32, map.height as u32)
        .map_err(darkroom_pipeline::PipelineError::from)?;
    crate::generate::write_atomically(&args.out, &bytes)?;
    println!("{}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_values_parse_with_defaults_and_refuse_what_is_wrong() {
        let unit = parse_control("model=nets/canny,image=pose.png").unwrap();
        assert_eq!(
            unit,
            ControlUnit {
                model: "nets/canny".into(),
                image: Some(ImageRef::File("pose.png".into())),
                ..ControlUnit::default()
            }
        );
        let unit =
            parse_control("model=m,image=a.png,pre=canny,weight=0.5,start=0.1,end=0.8,low=50,high=120")
                .unwrap();
        assert_eq!(
            (unit.pre, unit.weight, unit.start, unit.end, unit.low, unit.high),
            (Preprocessor::Canny, 0.5, 0.1, 0.8, 50.0, 120.0)
        );
        for (bad, words) in [
            ("image=a.png", "model="),
            ("model=m", "image="),
            ("model=m,image=a.png,weight=x", "not a number"),
            ("model=m,image=a.png,pre=pose", "unknown preprocessor"),
            ("model=m,image=a.png,strength=1", "unknown key"),
            ("model=m,image=a.png,start=0.9,end=0.2", "start"),
            ("model=m,image", "key=value"),
        ] {
            let e = parse_control(bad).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }
}
