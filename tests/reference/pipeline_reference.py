"""Reference images for darkroom-pipeline and `darkroom generate`, from diffusers' pipelines.

Assembles three tiny Stable Diffusion folders in diffusers layout from the component fixtures
the model tests already use (byte-identical copies, so git stores each weight file once):
  tests/fixtures/tiny-sd          SD 1.x: clip/sd1, sd/unet_sd1, sd/vae, epsilon
  tests/fixtures/tiny-sd2         SD 2.x: clip/sd2, sd/unet_sd2, sd/vae, v_prediction, "!" padding
  tests/fixtures/tiny-sd-inpaint  SD 1.x inpainting: clip/sd1, sd/unet_inpaint (9 channels), sd/vae
loads each back with `from_pretrained` (so the folders are what diffusers reads), and runs
StableDiffusionPipeline / Img2Img / Inpaint for every sampler, with and without CFG, a negative
prompt, batch 2 (one generator per image, seed, seed+1, as A1111), img2img and inpainting.

Also writes tests/fixtures/tiny-sd.toml, the folder as a download manifest (sizes, sha256).

Writes tests/fixtures/pipeline/{cases.json, reference.safetensors, init.png, mask.png,
tokens.json}: each case's parameters and diffusers' output images (float, [B, H, W, 3] in 0..1),
and the CLIP tokenizer's ids for a set of awkward prompts.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/pipeline_reference.py
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "pipeline"
WIDTH, HEIGHT = 64, 48

SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

FOLDERS = {
    "tiny-sd": dict(clip="clip/sd1", unet="sd/unet_sd1", prediction="epsilon", pad="<|endoftext|>"),
    "tiny-sd2": dict(clip="clip/sd2", unet="sd/unet_sd2", prediction="v_prediction", pad="!"),
    "tiny-sd-inpaint": dict(clip="clip/sd1", unet="sd/unet_inpaint", prediction="epsilon", pad="<|endoftext|>"),
}

SAMPLERS = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "ddim": (DDIMScheduler, {}),
    "lcm": (LCMScheduler, {}),
    "turbo": (EulerDiscreteScheduler, {"timestep_spacing": "trailing"}),
}

PROMPT = "a photograph of an astronaut riding a horse"

# name: folder, mode, sampler, steps, cfg, prompt, negative, seed, batch (+ strength)
CASES = [
    dict(name="euler_cfg", folder="tiny-sd", sampler="euler", steps=4, cfg=7.5, seed=1),
    dict(name="euler_a_negative", folder="tiny-sd", sampler="euler_a", steps=4, cfg=7.5, seed=2,
         negative="blurry, low quality"),
    dict(name="dpmpp_2m", folder="tiny-sd", sampler="dpmpp_2m", steps=5, cfg=5.0, seed=3),
    dict(name="dpmpp_2m_karras", folder="tiny-sd", sampler="dpmpp_2m_karras", steps=5, cfg=5.0, seed=4),
    dict(name="ddim", folder="tiny-sd", sampler="ddim", steps=4, cfg=7.5, seed=5),
    dict(name="lcm_no_cfg", folder="tiny-sd", sampler="lcm", steps=4, cfg=1.0, seed=6),
    dict(name="turbo_1_step", folder="tiny-sd", sampler="turbo", steps=1, cfg=0.0, seed=7),
    dict(name="euler_a_batch2", folder="tiny-sd", sampler="euler_a", steps=3, cfg=7.5, seed=8, batch=2,
         negative="ugly"),
    dict(name="v_euler", folder="tiny-sd2", sampler="euler", steps=4, cfg=7.5, seed=9),
    dict(name="v_dpmpp_2m_karras", folder="tiny-sd2", sampler="dpmpp_2m_karras", steps=4, cfg=7.5, seed=10),
    dict(name="v_ddim", folder="tiny-sd2", sampler="ddim", steps=4, cfg=3.0, seed=11),
    dict(name="img2img_euler", folder="tiny-sd", mode="img2img", sampler="euler", steps=5, cfg=7.5, seed=12,
         strength=0.6),
    dict(name="img2img_dpmpp_2m", folder="tiny-sd", mode="img2img", sampler="dpmpp_2m", steps=6, cfg=7.5,
         seed=13, strength=0.5),
    dict(name="inpaint_4ch_euler_a", folder="tiny-sd", mode="inpaint", sampler="euler_a", steps=4, cfg=7.5,
         seed=14, strength=1.0),
    dict(name="inpaint_4ch_ddim_strength", folder="tiny-sd", mode="inpaint", sampler="ddim", steps=5, cfg=7.5,
         seed=15, strength=0.8),
    dict(name="inpaint_9ch_euler", folder="tiny-sd-inpaint", mode="inpaint", sampler="euler", steps=4, cfg=7.5,
         seed=16, strength=1.0),
]

TOKEN_PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "Portrait of a WOMAN, oil-painting; dramatic lighting!! 85mm f/1.4",
    "  spaces\tand\nnewlines   everywhere  ",
    "it's what we're doing, they'll say I'd've",
    "caf\u00e9 na\u00efve \u00fcber stra\u00dfe \u65e5\u672c\u8a9e \U0001F600 emoji",
    "1234567 3.14159 #hashtag @user <|endoftext|> tokens",
    "masterpiece, best quality, ultra-detailed, 8k, hdr, (((photorealistic)))",
]


def assemble(name, clip, unet, prediction, pad):
    root = FIX / name
    if root.exists():
        shutil.rmtree(root)
    for sub in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"]:
        (root / sub).mkdir(parents=True)
    shutil.copyfile(FIX / clip / "config.json", root / "text_encoder" / "config.json")
    shutil.copyfile(FIX / clip / "model.safetensors", root / "text_encoder" / "model.safetensors")
    for f in ["vocab.json", "merges.txt"]:
        shutil.copyfile(FIX / "clip-tokenizer" / f, root / "tokenizer" / f)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
               "unk_token": "<|endoftext|>"}
    (root / "tokenizer" / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_config = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True,
                      errors="replace", add_prefix_space=False)
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    for sub, src in [("unet", unet), ("vae", "sd/vae")]:
        config = json.loads((FIX / src / "config.json").read_text())
        config["_class_name"] = "UNet2DConditionModel" if sub == "unet" else "AutoencoderKL"
        (root / sub / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(FIX / src / "model.safetensors", root / sub / "diffusion_pytorch_model.safetensors")
    scheduler = dict(SCHEDULER_CONFIG, prediction_type=prediction)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


MANIFEST_HEAD = """# The tiny test model (tests/fixtures/tiny-sd) as a manifest, for download tests: the files are
# served from localhost (a base URL given at run time); sizes and sha256 are the real ones.
# Written by tests/reference/pipeline_reference.py.
id = "tiny-sd"
name = "Tiny SD (tests)"
family = "test"
description = "Random seeded weights in SD 1.x layout; makes noise, fast"

[license]
name = "MIT (test fixture)"
url = "https://opensource.org/license/mit"

[source]
repo = "darkroom/tiny-sd"
revision = "fixture"

[defaults]
width = 64
height = 48
steps = 4
cfg = 7.5
sampler = "euler"

[quantization]
linear = "none"
conv = "none"
"""


def write_manifest(name, head=MANIFEST_HEAD):
    """tests/fixtures/<name>.toml listing every file of the folder with its size and sha256."""
    root = FIX / name
    text = head
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        component = rel.split("/")[0] if "/" in rel else "pipeline"
        text += (f'\n[[files]]\npath = "{rel}"\ncomponent = "{component}"\nsize = {len(data)}\n'
                 f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    (FIX / f"{name}.toml").write_text(text)


def init_and_mask():
    photo = Image.open(FIX / "images" / "astronaut.png").convert("RGB").resize((WIDTH, HEIGHT), Image.LANCZOS)
    photo.save(OUT / "init.png")
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[8:40, 16:56] = 255  # white = repaint
    Image.fromarray(mask, mode="L").convert("RGB").save(OUT / "mask.png")
    return photo, Image.open(OUT / "mask.png").convert("RGB")


def run(case, pipes, photo, mask):
    folder, mode = case["folder"], case.get("mode", "txt2img")
    cls, overrides = SAMPLERS[case["sampler"]]
    base = pipes[folder]
    scheduler = cls.from_config(base.scheduler.config, **overrides)
    components = dict(base.components, scheduler=scheduler)
    batch = case.get("batch", 1)
    common = dict(
        prompt=[PROMPT] * batch,
        negative_prompt=[case.get("negative", "")] * batch,
        num_inference_steps=case["steps"],
        guidance_scale=case["cfg"],
    )
    with torch.no_grad():
        return {kind: call(pipe_for(mode, components), mode, case, common, photo, mask, kind)
                for kind in ["np", "latent"]}


def pipe_for(mode, components):
    cls = {"txt2img": StableDiffusionPipeline, "img2img": StableDiffusionImg2ImgPipeline,
           "inpaint": StableDiffusionInpaintPipeline}[mode]
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, mode, case, common, photo, mask, output_type):
    batch = len(common["prompt"])
    common = dict(common, output_type=output_type,
                  generator=[torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)])
    if True:
        if mode == "txt2img":
            out = pipe(height=HEIGHT, width=WIDTH, **common)
        elif mode == "img2img":
            out = pipe(image=photo, strength=case["strength"], **common)
        else:
            out = pipe(image=photo, mask_image=mask, height=HEIGHT, width=WIDTH, strength=case["strength"],
                       **common)
    images = out.images if output_type == "latent" else torch.from_numpy(np.ascontiguousarray(out.images))
    return images.float()


def main():
    logging.disable(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    pipes = {}
    for name, spec in FOLDERS.items():
        assemble(name, **spec)
        pipe = StableDiffusionPipeline.from_pretrained(FIX / name, torch_dtype=torch.float32,
                                                       safety_checker=None, requires_safety_checker=False)
        pipes[name] = pipe
    write_manifest("tiny-sd")
    photo, mask = init_and_mask()
    tensors, cases = {}, []
    first = None
    for case in CASES:
        out = run(case, pipes, photo, mask)
        images = out["np"]
        assert images.shape == (case.get("batch", 1), HEIGHT, WIDTH, 3), images.shape
        tensors[case["name"] + "/image"] = images.contiguous()
        tensors[case["name"] + "/latents"] = out["latent"].contiguous()
        u8 = (images * 255).round()
        first = images[0] if first is None else first
        print(f"{case['name']:28s} mean {images.mean():.3f} std {images.std():.3f} "
              f"saturated {(u8 == 0).float().mean() + (u8 == 255).float().mean():.3f} "
              f"differs from the first case by {(images[0] - first).abs().mean() * 255:.1f}/255 "
              f"latents std {out['latent'].std():.3f}")
        cases.append(dict({"mode": "txt2img", "batch": 1, "negative": "", "prompt": PROMPT, "width": WIDTH,
                           "height": HEIGHT}, **case))
    save_file(tensors, OUT / "reference.safetensors", metadata={"source": "tests/reference/pipeline_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")

    tokenizer = CLIPTokenizer.from_pretrained(FIX / "tiny-sd" / "tokenizer")
    tokens = [{"prompt": p, "ids": tokenizer(p).input_ids} for p in TOKEN_PROMPTS]
    (OUT / "tokens.json").write_text(json.dumps(tokens, indent=1, ensure_ascii=False) + "\n")
    print("tokenizer", type(tokenizer).__name__, [len(t["ids"]) for t in tokens])


if __name__ == "__main__":
    main()
