"""Reference images at sizes diffusers takes but the UNet's own factor does not divide.

diffusers (and A1111) accept any width and height that are multiples of the VAE's factor (8):
where a UNet down block halves an odd latent size it rounds up, and the up block resizes to the
skip connection's size instead of doubling. This script checks that on:

  tests/fixtures/tiny-sd-deep   a 3-level SD 1.x UNet (factor 4 on the latents, 32 on pixels) with
                                tiny-sd's text encoder, tokenizer and VAE, written by the current
                                diffusers/transformers `save_pretrained` (so its tokenizer/ holds
                                tokenizer.json, not vocab.json + merges.txt), in f16
  tests/fixtures/tiny-sd, tiny-sd2, tiny-sd-inpaint   the 2-level models (factor 16 on pixels)

txt2img, img2img, 4- and 9-channel inpainting and outpainting (inpainting on a canvas extended by
repeating its edge pixels, with the mask darkroom's `outpaint_canvas` makes) at sizes such as
80x48, 104x40 and 72x40. Writes tests/fixtures/sizes/{cases.json, reference.safetensors, *.png},
unet_reference.safetensors: the deep UNet alone at latent sizes its factor does not divide,
and tokens.json: the saved tokenizer's ids for the awkward prompts of pipeline_reference.py.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/sizes_reference.py
"""

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_reference import PROMPT, SAMPLERS, TOKEN_PROMPTS, pipe_for  # noqa: E402
from sd_reference import round_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "sizes"
DEEP = FIX / "tiny-sd-deep"

# name, folder, mode, sampler, steps, cfg, seed, width, height (+ batch, negative, strength, outpaint)
CASES = [
    dict(name="deep_80x48_euler", folder="tiny-sd-deep", sampler="euler", steps=4, cfg=7.5, seed=21,
         width=80, height=48),
    dict(name="deep_104x40_dpmpp_2m_karras_batch2", folder="tiny-sd-deep", sampler="dpmpp_2m_karras", steps=4,
         cfg=5.0, seed=22, width=104, height=40, batch=2, negative="blurry"),
    dict(name="deep_56x88_turbo", folder="tiny-sd-deep", sampler="turbo", steps=1, cfg=0.0, seed=23,
         width=56, height=88),
    dict(name="deep_img2img_88x56_euler_a", folder="tiny-sd-deep", mode="img2img", sampler="euler_a", steps=5,
         cfg=7.5, seed=24, width=88, height=56, strength=0.6),
    dict(name="deep_inpaint_72x40_ddim", folder="tiny-sd-deep", mode="inpaint", sampler="ddim", steps=4,
         cfg=7.5, seed=25, width=72, height=40, strength=1.0),
    dict(name="sd1_72x40_euler", folder="tiny-sd", sampler="euler", steps=4, cfg=7.5, seed=26,
         width=72, height=40),
    dict(name="sd2_v_40x56_euler", folder="tiny-sd2", sampler="euler", steps=4, cfg=7.5, seed=27,
         width=40, height=56),
    dict(name="inpaint_9ch_72x40_euler", folder="tiny-sd-inpaint", mode="inpaint", sampler="euler", steps=4,
         cfg=7.5, seed=28, width=72, height=40, strength=1.0),
    # Outpainting: a 64x40 image extended 16 pixels to the right and 8 at the bottom → 80x48.
    dict(name="deep_outpaint_80x48_euler", folder="tiny-sd-deep", mode="inpaint", sampler="euler", steps=4,
         cfg=7.5, seed=29, width=80, height=48, strength=1.0, outpaint=[0, 0, 16, 8], source=[64, 40]),
    dict(name="inpaint_9ch_outpaint_72x56_euler_a", folder="tiny-sd-inpaint", mode="inpaint",
         sampler="euler_a", steps=3, cfg=7.5, seed=30, width=72, height=56, strength=1.0,
         outpaint=[8, 16, 0, 0], source=[64, 40]),
]

OVERLAP = 8  # darkroom's outpainting overlap into the original (crates/pipeline outpaint_canvas)


def build_deep():
    """tiny-sd's components around a new 3-level UNet, saved as diffusers saves a pipeline today."""
    base = StableDiffusionPipeline.from_pretrained(FIX / "tiny-sd", torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        norm_num_groups=32,
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    round_weights(unet, 40, 1.0)
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=unet, scheduler=base.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    if DEEP.exists():
        shutil.rmtree(DEEP)
    # Every weight is an f16 value already (round_weights, and the f16 fixtures), so f16 files
    # lose nothing and keep the fixture small.
    pipe.to(torch.float16).save_pretrained(DEEP, safe_serialization=True)
    files = sorted(p.relative_to(DEEP).as_posix() for p in DEEP.rglob("*") if p.is_file())
    print("saved", files)
    assert not (DEEP / "tokenizer" / "vocab.json").exists(), "expected a tokenizer.json-only folder"
    assert (DEEP / "tokenizer" / "tokenizer.json").exists()


UNET_SIZES = [(6, 10), (7, 11), (5, 13), (11, 7), (5, 9), (8, 8)]


def unet_references(pipe):
    """The deep UNet alone at latent sizes its factor (4) does not divide, for darkroom-models;
    and with ControlNet residuals (a ControlNet made from the UNet, seeded non-zero zero-convs,
    on a random control image) added to its skips and mid block, as diffusers adds them."""
    unet = pipe.unet
    torch.manual_seed(50)
    tensors = {}
    for h, w in UNET_SIZES:
        sample = torch.randn(2, 4, h, w)
        context = torch.randn(2, 77, 32)
        timesteps = torch.tensor([999.0, 321.0])
        with torch.no_grad():
            out = unet(sample, timesteps, encoder_hidden_states=context).sample
        for k, v in {"sample": sample, "timesteps": timesteps, "encoder_hidden_states": context,
                     "noise_pred": out}.items():
            tensors[f"{h}x{w}/{k}"] = v.contiguous()
    controlnet = ControlNetModel.from_unet(unet)
    round_weights(controlnet, 60, 1.0)
    for h, w in [(6, 10), (7, 11)]:
        prefix = f"control_{h}x{w}"
        sample, context = torch.randn(2, 4, h, w), torch.randn(2, 77, 32)
        timesteps = torch.tensor([700.0, 10.0])
        with torch.no_grad():
            down, mid = controlnet(sample, timesteps, encoder_hidden_states=context,
                                   controlnet_cond=torch.rand(2, 3, 8 * h, 8 * w), return_dict=False)
            out = unet(sample, timesteps, encoder_hidden_states=context,
                       down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        for k, v in {"sample": sample, "timesteps": timesteps, "encoder_hidden_states": context,
                     "mid": mid, "noise_pred": out}.items():
            tensors[f"{prefix}/{k}"] = v.contiguous()
        for i, d in enumerate(down):
            tensors[f"{prefix}/down{i}"] = d.contiguous()
    save_file(tensors, OUT / "unet_reference.safetensors")


def outpaint_canvas(photo, margins):
    """darkroom's outpaint_canvas: edge pixels stretched into the margins; the mask repaints the
    new area and OVERLAP pixels into the original on each extended side."""
    left, top, right, bottom = margins
    src = np.asarray(photo)
    h, w = src.shape[:2]
    canvas = np.pad(src, ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    y0, y1 = top + min(OVERLAP, top), top + h - min(OVERLAP, bottom)
    x0, x1 = left + min(OVERLAP, left), left + w - min(OVERLAP, right)
    mask[y0:y1, x0:x1] = 0
    return Image.fromarray(canvas), Image.fromarray(mask, mode="L").convert("RGB")


def inputs(case):
    """The init image and mask of a case, written beside the references for the Rust tests."""
    photo = Image.open(FIX / "images" / "astronaut.png").convert("RGB")
    w, h = case["width"], case["height"]
    if "outpaint" in case:
        sw, sh = case["source"]
        source = photo.resize((sw, sh), Image.LANCZOS)
        source.save(OUT / f"source_{sw}x{sh}.png")
        case["init"] = f"source_{sw}x{sh}.png"
        return outpaint_canvas(source, case["outpaint"])
    init = photo.resize((w, h), Image.LANCZOS)
    init.save(OUT / f"init_{w}x{h}.png")
    case["init"] = f"init_{w}x{h}.png"
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255  # white = repaint
    Image.fromarray(mask, mode="L").convert("RGB").save(OUT / f"mask_{w}x{h}.png")
    if case.get("mode") == "inpaint":
        case["mask"] = f"mask_{w}x{h}.png"
    return init, Image.open(OUT / f"mask_{w}x{h}.png").convert("RGB")


def run(case, pipes):
    mode = case.get("mode", "txt2img")
    cls, overrides = SAMPLERS[case["sampler"]]
    base = pipes[case["folder"]]
    components = dict(base.components, scheduler=cls.from_config(base.scheduler.config, **overrides))
    pipe = pipe_for(mode, components)
    init, mask = inputs(case)
    if mode == "txt2img":
        case.pop("init")
    batch = case.get("batch", 1)
    w, h = case["width"], case["height"]
    out = {}
    for kind in ["np", "latent"]:
        common = dict(prompt=[PROMPT] * batch, negative_prompt=[case.get("negative", "")] * batch,
                      num_inference_steps=case["steps"], guidance_scale=case["cfg"], output_type=kind,
                      generator=[torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)])
        with torch.no_grad():
            if mode == "txt2img":
                result = pipe(height=h, width=w, **common)
            elif mode == "img2img":
                result = pipe(image=init, strength=case["strength"], **common)
            else:
                result = pipe(image=init, mask_image=mask, height=h, width=w, strength=case["strength"], **common)
        images = result.images
        out[kind] = (images if kind == "latent" else torch.from_numpy(np.ascontiguousarray(images))).float()
    assert out["np"].shape == (batch, h, w, 3), out["np"].shape
    return out


def main():
    logging.disable(logging.WARNING)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    build_deep()
    pipes = {name: StableDiffusionPipeline.from_pretrained(FIX / name, torch_dtype=torch.float32,
                                                           safety_checker=None, requires_safety_checker=False)
             for name in ["tiny-sd-deep", "tiny-sd", "tiny-sd2", "tiny-sd-inpaint"]}
    unet_references(pipes["tiny-sd-deep"])
    tensors, cases = {}, []
    for case in CASES:
        out = run(case, pipes)
        tensors[case["name"] + "/image"] = out["np"].contiguous()
        tensors[case["name"] + "/latents"] = out["latent"].contiguous()
        print(f"{case['name']:40s} {tuple(out['np'].shape)} latents {tuple(out['latent'].shape)} "
              f"mean {out['np'].mean():.3f} std {out['np'].std():.3f}")
        cases.append(dict({"mode": "txt2img", "batch": 1, "negative": "", "prompt": PROMPT}, **case))
    save_file(tensors, OUT / "reference.safetensors", metadata={"source": "tests/reference/sizes_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    # The saved tokenizer (tokenizer.json) as transformers loads it back, on the awkward prompts.
    tokenizer = pipes["tiny-sd-deep"].tokenizer
    tokens = [{"prompt": p, "ids": tokenizer(p).input_ids} for p in TOKEN_PROMPTS]
    (OUT / "tokens.json").write_text(json.dumps(tokens, indent=1, ensure_ascii=False) + "\n")
    print("tokenizer", type(tokenizer).__name__)


if __name__ == "__main__":
    main()
