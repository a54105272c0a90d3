//! What a host page may ask of the embedded widget, checked before anything acts on it.
//!
//! The widget (`?embed=1`) reads a host's postMessage data into a [`Value`] — only the keys in
//! [`KEYS`], texts and buffers only up to their limits, lists only up to one item past theirs —
//! and this module decides: [`read_message`] what the message is (or that it is ignored, or
//! answered with an error), [`read_params`] the recipe and images a generate request makes.
//! Being plain Rust, both are property-tested natively against arbitrary values
//! (tests/host_fuzz.rs); the widget only converts and applies.
//!
//! A host's request uses nothing of the user's own library: `<lora:…>` tags are refused whether
//! or not such a LoRA is stored, and the recipe carries no preset, template, hires pass or
//! drafts — so no answer tells a host what the user has beyond the models it names.

use crate::control::{ControlUnit, MAX_APP_UNITS as MAX_UNITS};
use crate::preprocess::Preprocessor;
use crate::prompt::extract_loras;
use crate::recipe::{ImageRef, ModelInfo, Recipe, MAX_PROMPT_CHARS};
use crate::request::Image;
use crate::schedulers::Sampler;

/// The protocol version a message must carry as `darkroom`.
pub const VERSION: f64 = 1.0;
/// The largest init, mask or control image a host may send.
pub const MAX_IMAGE_BYTES: usize = 32 << 20;
/// The longest text read (in UTF-8 bytes): a prompt of [`MAX_PROMPT_CHARS`] characters of up to
/// four bytes each.
pub const MAX_TEXT_BYTES: usize = 4 * MAX_PROMPT_CHARS;
/// Lists are read up to this many items (one more than any list may have, so "too many" can
/// still be said).
pub const MAX_LIST: usize = MAX_UNITS + 1;
/// How deep a message is read: message → params → controls → unit → field.
pub const MAX_DEPTH: usize = 5;
/// Every key the widget reads of an object: the message's, the params' and a control unit's.
pub const KEYS: &[&str] = &[
    "darkroom", "type", "id", "params", "prompt", "negative", "sampler", "seed", "steps", "cfg", "width",
    "height", "strength", "init", "mask", "controls", "image", "model", "pre", "weight", "start", "end",
    "low", "high",
];

/// A value of a host's message, as far as the widget reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `undefined`, `null` or a key not sent.
    Absent,
    Bool(bool),
    Number(f64),
    Text(String),
    /// An ArrayBuffer (a Blob the embed script read).
    Bytes(Vec<u8>),
    /// A text or buffer past its limit, not copied: its length.
    Oversized(usize),
    /// At most [`MAX_LIST`] items of an array.
    List(Vec<Value>),
    /// An object's keys among [`KEYS`].
    Map(Vec<(String, Value)>),
    /// Anything else (a function, a symbol, an object nested too deep).
    Other,
}

const ABSENT: Value = Value::Absent;

impl Value {
    /// The value under `key` of a map; `Absent` for anything else.
    pub fn get(&self, key: &str) -> &Value {
        match self {
            Value::Map(pairs) => pairs.iter().find(|(k, _)| k == key).map_or(&ABSENT, |(_, v)| v),
            _ => &ABSENT,
        }
    }
}

/// A host's message, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello,
    Cancel,
    Generate { id: u32, params: Value },
}

/// Why a message is not served.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Dropped without an answer (not for us, or nothing to answer to): why, for the log.
    Ignore(&'static str),
    /// Answered with an `invalid` error (for request `id` when it had one).
    Answer { id: Option<u32>, message: String },
}

/// The request id: a whole number from 0 below 2³², as the embed script counts them.
fn request_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) if n.fract() == 0.0 && (0.0..4e9).contains(n) => Some(*n as u32),
        _ => None,
    }
}

/// What a host's message asks: messages of another protocol version are ignored, as are
/// generate requests without an id to answer; an unknown type is answered.
pub fn read_message(data: &Value) -> Result<Message, Refusal> {
    if !matches!(data.get("darkroom"), Value::Number(n) if *n == VERSION) {
        return Err(Refusal::Ignore("not protocol version 1"));
    }
    let id = request_id(data.get("id"));
    match data.get("type") {
        Value::Text(t) if t == "hello" => Ok(Message::Hello),
        Value::Text(t) if t == "cancel" => Ok(Message::Cancel),
        Value::Text(t) if t == "generate" => match id {
            Some(id) => Ok(Message::Generate { id, params: data.get("params").clone() }),
            None => Err(Refusal::Ignore("a generate request without a numeric id")),
        },
        _ => Err(Refusal::Answer { id, message: "unknown message type".into() }),
    }
}

/// A PNG a host sent, decoded (its bytes kept, as the worker takes them).
#[derive(Debug, Clone, PartialEq)]
pub struct HostImage {
    pub width: usize,
    pub height: usize,
    pub png: Vec<u8>,
}

/// A generate request, checked: the recipe as the form will show it (its `init`, `mask` and
/// control images not yet attached), and the images.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRequest {
    pub recipe: Recipe,
    pub init: Option<HostImage>,
    pub mask: Option<HostImage>,
    /// One per `recipe.controls` unit, in order.
    pub control_images: Vec<HostImage>,
}

impl HostRequest {
    /// The recipe as the run sends it: its images attachments (init 0, mask 1, controls 2…).
    pub fn run_recipe(&self) -> Recipe {
        let mut run = self.recipe.clone();
        run.init = self.init.is_some().then_some(ImageRef::Attachment(0));
        run.mask = self.mask.is_some().then_some(ImageRef::Attachment(1));
        for (i, unit) in run.controls.iter_mut().enumerate() {
            unit.image = Some(ImageRef::Attachment(2 + i));
        }
        run
    }
}

fn text(v: &Value, key: &str) -> Result<Option<String>, String> {
    match v {
        Value::Absent => Ok(None),
        Value::Text(t) if t.len() <= MAX_TEXT_BYTES => Ok(Some(t.clone())),
        Value::Text(_) | Value::Oversized(_) => {
            Err(format!("{key} is longer than {MAX_PROMPT_CHARS} characters"))
        }
        _ => Err(format!("{key} must be a string")),
    }
}

fn number(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v {
        Value::Absent => Ok(None),
        Value::Number(n) if n.is_finite() => Ok(Some(*n)),
        _ => Err(format!("{key} must be a number")),
    }
}

fn whole(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match number(v, key)? {
        Some(n) if n.fract() == 0.0 && (0.0..=9_007_199_254_740_991.0).contains(&n) => Ok(Some(n as u64)),
        Some(_) => Err(format!("{key} must be a whole number of at least 0")),
        None => Ok(None),
    }
}

fn image(v: &Value, key: &str) -> Result<Option<HostImage>, String> {
    let png = match v {
        Value::Absent => return Ok(None),
        Value::Bytes(b) if b.len() <= MAX_IMAGE_BYTES => b,
        Value::Bytes(_) | Value::Oversized(_) => {
            return Err(format!("{key} is larger than {} MB", MAX_IMAGE_BYTES >> 20))
        }
        _ => return Err(format!("{key} must be a PNG (Blob or ArrayBuffer)")),
    };
    let img = Image::from_png(png).map_err(|e| format!("{key}: {e}"))?;
    Ok(Some(HostImage { width: img.width, height: img.height, png: png.clone() }))
}

/// A generate request's `params` on top of `base` (the widget's form, with the selected model's
/// defaults), checked by [`Recipe::validate`] for `model` — the same rules as the app's and the
/// CLI's. `Err` says what is wrong, in terms of the params.
pub fn read_params(params: &Value, base: &Recipe, model: &ModelInfo) -> Result<HostRequest, String> {
    if !matches!(params, Value::Map(_)) {
        return Err("params must be an object".into());
    }
    let prompt = text(params.get("prompt"), "prompt")?.ok_or("prompt is required")?;
    if !extract_loras(&prompt).1.is_empty() {
        return Err(
            "prompt: <lora:…> tags are not taken from a host page; the user adds LoRAs in Darkroom".into()
        );
    }
    let negative = text(params.get("negative"), "negative")?;
    let sampler = match text(params.get("sampler"), "sampler")? {
        Some(name) => Some(name.parse::<Sampler>().map_err(|e| format!("sampler: {e}"))?),
        None => None,
    };
    let init = image(params.get("init"), "init")?;
    let mask = image(params.get("mask"), "mask")?;
    if mask.is_some() && init.is_none() {
        return Err("mask needs an init image to repaint".into());
    }
    // The form's model and its settings; nothing else of the form (no hires pass, preset,
    // template or drafts), one image.
    let mut recipe = Recipe {
        model: base.model.clone(),
        prompt,
        negative_prompt: negative.unwrap_or_default(),
        seed: whole(params.get("seed"), "seed")?,
        steps: base.steps,
        sampler: base.sampler,
        cfg_scale: base.cfg_scale,
        width: base.width,
        height: base.height,
        ..Recipe::default()
    };
    if let Some(v) = sampler {
        recipe.sampler = v;
    }
    if let Some(v) = whole(params.get("steps"), "steps")? {
        recipe.steps = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = number(params.get("cfg"), "cfg")? {
        recipe.cfg_scale = v as f32;
    }
    if let Some(img) = &init {
        (recipe.width, recipe.height) = (img.width, img.height);
    }
    if let Some(v) = whole(params.get("width"), "width")? {
        recipe.width = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = whole(params.get("height"), "height")? {
        recipe.height = usize::try_from(v).unwrap_or(usize::MAX);
    }
    // Unset: img2img's 0.75, or 1 with a mask (`Recipe::effective_strength`), as in the app.
    recipe.strength = number(params.get("strength"), "strength")?;
    let (units, control_images) = controls(params.get("controls"))?;
    recipe.controls = units;
    let request = HostRequest { recipe, init, mask, control_images };
    request.run_recipe().validate(model).map_err(|e| e.message)?;
    Ok(request)
}

/// A host's `controls: [{image, model, pre, weight, start, end, low, high}]`: at most
/// [`MAX_UNITS`] units, each with a PNG and a model id; the units' numbers are checked by
/// `Recipe::validate` with the rest, whether the model is here by the widget (which asks the
/// user rather than telling the host).
fn controls(value: &Value) -> Result<(Vec<ControlUnit>, Vec<HostImage>), String> {
    let items = match value {
        Value::Absent => return Ok((Vec::new(), Vec::new())),
        Value::List(items) => items,
        _ => return Err("controls must be an array".into()),
    };
    if items.len() > MAX_UNITS {
        return Err(format!("at most {MAX_UNITS} controls"));
    }
    let mut units = Vec::new();
    let mut images = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("controls[{i}]");
        if !matches!(item, Value::Map(_)) {
            return Err(format!("{what} must be an object"));
        }
        let model = match item.get("model") {
            Value::Text(id) if darkroom_weights::manifest::check_id(id).is_ok() => id.clone(),
            _ => return Err(format!("{what}.model must be a ControlNet's id")),
        };
        let pre = match text(item.get("pre"), &format!("{what}.pre"))? {
            Some(p) => p.parse::<Preprocessor>().map_err(|e| format!("{what}.pre: {e}"))?,
            None => Preprocessor::None,
        };
        let key = format!("{what}.image");
        let img =
            image(item.get("image"), &key)?.ok_or(format!("{key} must be a PNG (Blob or ArrayBuffer)"))?;
        let d = ControlUnit::default();
        let num = |key: &str, default: f64| -> Result<f64, String> {
            Ok(number(item.get(key), &format!("{what}.{key}"))?.unwrap_or(default))
        };
        units.push(ControlUnit {
            model,
            image: None,
            pre,
            weight: num("weight", d.weight)?,
            start: num("start", d.start)?,
            end: num("end", d.end)?,
            low: num("low", d.low)?,
            high: num("high", d.high)?,
        });
        images.push(img);
    }
    Ok((units, images))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::IMG2IMG_STRENGTH;

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }

    fn text(t: &str) -> Value {
        Value::Text(t.into())
    }

    fn sd() -> ModelInfo {
        ModelInfo::stable_diffusion("tiny", false)
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgba);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&vec![128; (width * height * 4) as usize]).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn messages() {
        let hello = map(&[("darkroom", Value::Number(1.0)), ("type", text("hello"))]);
        assert_eq!(read_message(&hello), Ok(Message::Hello));
        let v2 = map(&[("darkroom", Value::Number(2.0)), ("type", text("hello"))]);
        assert_eq!(read_message(&v2), Err(Refusal::Ignore("not protocol version 1")));
        assert!(matches!(read_message(&text("not an object")), Err(Refusal::Ignore(_))));
        let no_id =
            map(&[("darkroom", Value::Number(1.0)), ("type", text("generate")), ("id", Value::Number(1.5))]);
        assert!(matches!(read_message(&no_id), Err(Refusal::Ignore(_))));
        let unknown = map(&[
            ("darkroom", Value::Number(1.0)),
            ("type", text("format-disk")),
            ("id", Value::Number(10.0)),
        ]);
        assert_eq!(
            read_message(&unknown),
            Err(Refusal::Answer { id: Some(10), message: "unknown message type".into() })
        );
        let generate = map(&[
            ("darkroom", Value::Number(1.0)),
            ("type", text("generate")),
            ("id", Value::Number(7.0)),
            ("params", map(&[("prompt", text("a cat"))])),
        ]);
        assert_eq!(
            read_message(&generate),
            Ok(Message::Generate { id: 7, params: map(&[("prompt", text("a cat"))]) })
        );
    }

    #[test]
    fn params_on_the_form_recipe() {
        let base = Recipe {
            steps: 4,
            width: 512,
            height: 512,
            preset: Some("brand".into()),
            template: Some("{a|b}".into()),
            draft: true,
            batch_size: 4,
            ..Recipe::default()
        };
        let params = map(&[
            ("prompt", text("a red boat")),
            ("seed", Value::Number(21.0)),
            ("steps", Value::Number(2.0)),
            ("sampler", text("euler")),
            ("width", Value::Number(64.0)),
            ("height", Value::Number(48.0)),
        ]);
        let r = read_params(&params, &base, &sd()).unwrap();
        assert_eq!(r.recipe.prompt, "a red boat");
        assert_eq!((r.recipe.seed, r.recipe.steps, r.recipe.width, r.recipe.height), (Some(21), 2, 64, 48));
        assert_eq!(r.recipe.sampler, Sampler::Euler);
        assert_eq!(
            (r.recipe.preset.as_deref(), r.recipe.template.as_deref(), r.recipe.draft),
            (None, None, false)
        );
        assert_eq!((r.recipe.batch_size, r.recipe.batch_count), (1, 1));
    }

    #[test]
    fn an_init_image_sets_the_size_and_img2img_strength() {
        let params = map(&[("prompt", text("x")), ("init", Value::Bytes(png(64, 40)))]);
        let r = read_params(&params, &Recipe::default(), &sd()).unwrap();
        assert_eq!((r.recipe.width, r.recipe.height), (64, 40));
        assert_eq!(r.run_recipe().effective_strength(), IMG2IMG_STRENGTH);
        assert_eq!(r.run_recipe().init, Some(ImageRef::Attachment(0)));
        let inpaint = map(&[
            ("prompt", text("x")),
            ("init", Value::Bytes(png(64, 40))),
            ("mask", Value::Bytes(png(64, 40))),
        ]);
        let r = read_params(&inpaint, &Recipe::default(), &sd()).unwrap();
        assert_eq!(
            r.run_recipe().effective_strength(),
            1.0,
            "a mask repaints from noise, as diffusers' inpainting"
        );
        let given = map(&[
            ("prompt", text("x")),
            ("init", Value::Bytes(png(64, 40))),
            ("strength", Value::Number(0.4)),
        ]);
        assert_eq!(read_params(&given, &Recipe::default(), &sd()).unwrap().recipe.strength, Some(0.4));
        let mask_only = map(&[("prompt", text("x")), ("mask", Value::Bytes(png(64, 40)))]);
        assert_eq!(
            read_params(&mask_only, &Recipe::default(), &sd()).unwrap_err(),
            "mask needs an init image to repaint"
        );
    }

    #[test]
    fn refusals_name_the_param() {
        let base = Recipe::default();
        let cases: Vec<(Value, &str)> = vec![
            (text("x"), "params must be an object"),
            (map(&[]), "prompt is required"),
            (map(&[("prompt", Value::Number(42.0))]), "prompt must be a string"),
            (map(&[("prompt", Value::Oversized(5_000_000))]), "prompt is longer than"),
            (map(&[("prompt", text("x")), ("steps", text("many"))]), "steps must be a number"),
            (map(&[("prompt", text("x")), ("seed", Value::Number(-1.0))]), "seed must be a whole number"),
            (map(&[("prompt", text("x")), ("cfg", Value::Number(f64::NAN))]), "cfg must be a number"),
            (
                map(&[("prompt", text("x")), ("init", Value::Oversized(40 << 20))]),
                "init is larger than 32 MB",
            ),
            (map(&[("prompt", text("x")), ("init", Value::Bytes(b"not a png".to_vec()))]), "init: "),
            (map(&[("prompt", text("x")), ("sampler", text("warp drive"))]), "sampler: "),
            (map(&[("prompt", text("x")), ("controls", Value::Bool(true))]), "controls must be an array"),
            (
                map(&[("prompt", text("x")), ("controls", Value::List(vec![Value::Absent; 4]))]),
                "at most 3 controls",
            ),
            (
                map(&[
                    ("prompt", text("x")),
                    ("controls", Value::List(vec![map(&[("model", text("../x"))])])),
                ]),
                "controls[0].model must be a ControlNet's id",
            ),
            (
                map(&[
                    ("prompt", text("x")),
                    ("controls", Value::List(vec![map(&[("model", text("canny"))])])),
                ]),
                "controls[0].image must be a PNG",
            ),
        ];
        for (params, want) in cases {
            let got = read_params(&params, &base, &sd()).unwrap_err();
            assert!(got.starts_with(want), "{params:?}: {got:?}, want {want:?}");
        }
    }

    #[test]
    fn lora_tags_are_refused_alike_whatever_is_stored() {
        let params = map(&[("prompt", text("a cat <lora:my-face:0.8>"))]);
        let got = read_params(&params, &Recipe::default(), &sd()).unwrap_err();
        assert!(got.contains("<lora:…> tags are not taken from a host page"), "{got}");
    }

    #[test]
    fn control_units() {
        let unit = map(&[
            ("model", text("controlnet-canny")),
            ("image", Value::Bytes(png(64, 48))),
            ("pre", text("canny")),
            ("weight", Value::Number(0.5)),
        ]);
        let params = map(&[
            ("prompt", text("x")),
            ("width", Value::Number(64.0)),
            ("height", Value::Number(48.0)),
            ("controls", Value::List(vec![unit])),
        ]);
        let r = read_params(&params, &Recipe::default(), &sd()).unwrap();
        assert_eq!(r.recipe.controls.len(), 1);
        assert_eq!(
            (r.recipe.controls[0].model.as_str(), r.recipe.controls[0].weight),
            ("controlnet-canny", 0.5)
        );
        assert_eq!(r.recipe.controls[0].pre, Preprocessor::Canny);
        assert_eq!(r.control_images[0].width, 64);
        assert_eq!(r.run_recipe().controls[0].image, Some(ImageRef::Attachment(2)));
    }
}
