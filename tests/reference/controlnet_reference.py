"""ControlNet references: tiny seeded ControlNets, diffusers' ControlNet pipelines, OpenCV's Canny.

Builds two ControlNets from tests/fixtures/tiny-sd's UNet (`ControlNetModel.from_unet`), every
weight re-drawn from a seed so the "zero" convolutions are not zero and the control matters, the
second with a narrower conditioning embedding; saves them as diffusers folders
(tests/fixtures/controlnet/tiny-controlnet-{a,b}), then writes to tests/fixtures/controlnet/:

  reference.safetensors  model/*: one ControlNet evaluation's residuals (scale 0.7) on random
                         latents and a random control image; <case>/image and <case>/latents:
                         StableDiffusionControlNetPipeline / ...Img2ImgPipeline outputs for one
                         and two units, weights, guidance start/end, CFG on and off, batch 2, a
                         control image of another size (resized by the pipeline, Lanczos)
  cases.json             the cases (units: net, image, weight, start, end)
  control_*.png          the control images
  canny/*.png            cv2.Canny of the fixture photographs at several thresholds
  lineart/*.png          A1111's lineart_standard extractor (cv2.GaussianBlur σ 6, darkness below the
                         blur over its median) at the photographs' own sizes
  resize/*.png           PIL's Lanczos resize (what diffusers' control image processor applies) of
                         the fixture photographs to larger, smaller and mixed sizes

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/controlnet_reference.py
"""

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from PIL import Image, ImageDraw
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_reference import PROMPT, SAMPLERS  # noqa: E402
from sd_reference import round_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "controlnet"
WIDTH, HEIGHT = 64, 48

CASES = [
    dict(name="one_unit_euler_cfg", sampler="euler", steps=4, cfg=7.5, seed=31,
         units=[dict(net="a", image="control_lines.png")]),
    dict(name="weight_start_end_no_cfg", sampler="euler_a", steps=5, cfg=1.0, seed=32,
         units=[dict(net="a", image="control_lines.png", weight=0.6, start=0.2, end=0.7)]),
    dict(name="two_units_ddim", sampler="ddim", steps=4, cfg=5.0, seed=33, negative="blurry",
         units=[dict(net="a", image="control_lines.png", weight=0.8),
                dict(net="b", image="control_photo.png", weight=1.3, start=0.0, end=0.5)]),
    dict(name="img2img_dpmpp_2m", mode="img2img", sampler="dpmpp_2m", steps=6, cfg=7.5, seed=34, strength=0.6,
         units=[dict(net="b", image="control_photo.png", end=0.8)]),
    dict(name="inpaint_euler_a", mode="inpaint", sampler="euler_a", steps=4, cfg=7.5, seed=36, strength=1.0,
         units=[dict(net="a", image="control_lines.png", weight=0.9)]),
    dict(name="resized_control_batch2", sampler="euler", steps=3, cfg=7.5, seed=35, batch=2,
         units=[dict(net="a", image="control_small.png", weight=1.1)]),
]

CANNY = [("astronaut.png", 100, 200), ("astronaut.png", 50, 120), ("coffee.png", 100, 200),
         ("coffee.png", 30, 60)]


def controlnet(unet, seed, **kwargs):
    net = ControlNetModel.from_unet(unet, **kwargs)
    return round_weights(net, seed, 1.0)


def control_images():
    lines = Image.new("RGB", (WIDTH, HEIGHT), "black")
    d = ImageDraw.Draw(lines)
    d.line([(4, 40), (30, 6), (60, 30)], fill="white", width=2)
    d.ellipse([36, 20, 56, 42], outline="white", width=2)
    lines.save(OUT / "control_lines.png")
    photo = Image.open(FIX / "images" / "coffee.png").convert("RGB").resize((WIDTH, HEIGHT), Image.LANCZOS)
    photo.save(OUT / "control_photo.png")
    small = Image.open(FIX / "images" / "astronaut.png").convert("RGB").resize((50, 37), Image.LANCZOS)
    small.save(OUT / "control_small.png")


PIPELINES = {"txt2img": StableDiffusionControlNetPipeline, "img2img": StableDiffusionControlNetImg2ImgPipeline,
             "inpaint": StableDiffusionControlNetInpaintPipeline}


def run(case, base, nets, photo, output_type, pipelines=PIPELINES, xl=False):
    """One case through diffusers' ControlNet pipelines (`pipelines` by mode); `xl`: SDXL's, where
    a missing negative prompt stays None (force_zeros_for_empty_prompt makes it zeros)."""
    cls, overrides = SAMPLERS[case["sampler"]]
    scheduler = cls.from_config(base.scheduler.config, **overrides)
    units = case["units"]
    net = [nets[u["net"]] for u in units]
    # SDXL's ControlNet pipelines take no IP-Adapter encoder or feature extractor.
    components = {k: v for k, v in base.components.items() if not xl or k not in ("image_encoder", "feature_extractor")}
    components.update(scheduler=scheduler, controlnet=net if len(net) > 1 else net[0])
    mode = case.get("mode", "txt2img")
    img2img = mode == "img2img"
    pipe = pipelines[mode](**components, **(dict(add_watermarker=False) if xl else {}))
    pipe.set_progress_bar_config(disable=True)
    batch = case.get("batch", 1)
    images = [Image.open(OUT / u["image"]).convert("RGB") for u in units]
    one = len(units) == 1
    negative = case.get("negative", None if xl else "")
    kwargs = dict(
        prompt=[PROMPT] * batch,
        negative_prompt=None if negative is None else [negative] * batch,
        num_inference_steps=case["steps"],
        guidance_scale=case["cfg"],
        height=HEIGHT, width=WIDTH,
        controlnet_conditioning_scale=[u.get("weight", 1.0) for u in units] if not one else units[0].get("weight", 1.0),
        control_guidance_start=[u.get("start", 0.0) for u in units] if not one else units[0].get("start", 0.0),
        control_guidance_end=[u.get("end", 1.0) for u in units] if not one else units[0].get("end", 1.0),
        generator=[torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)],
        output_type=output_type,
    )
    if mode == "inpaint":
        mask = Image.open(FIX / "pipeline" / "mask.png").convert("RGB")
        kwargs.update(image=photo, mask_image=mask, control_image=images if not one else images[0],
                      strength=case["strength"])
    elif img2img:
        kwargs.update(image=photo, control_image=images if not one else images[0], strength=case["strength"])
    else:
        kwargs.update(image=images if not one else images[0])
    with torch.no_grad():
        out = pipe(**kwargs)
    return out.images.float() if output_type == "latent" else torch.from_numpy(np.ascontiguousarray(out.images))


def canny():
    (OUT / "canny").mkdir(exist_ok=True)
    cases = []
    for name, low, high in CANNY:
        rgb = np.asarray(Image.open(FIX / "images" / name).convert("RGB"))
        edges = cv2.Canny(rgb, low, high)
        out = f"canny/{Path(name).stem}_{low}_{high}.png"
        Image.fromarray(edges, mode="L").save(OUT / out)
        cases.append(dict(image=name, low=low, high=high, edges=out))
        print(out, f"{(edges > 0).mean():.3f} edge pixels")
    return cases


RESIZES = [("control_small.png", 64, 48), ("control_small.png", 23, 71), ("../images/coffee.png", 61, 45),
           ("../images/coffee.png", 600, 37), ("../images/astronaut.png", 96, 512)]


def lineart():
    """A1111 ControlNet's lineart_standard, without its resize to the processor resolution."""
    (OUT / "lineart").mkdir(exist_ok=True)
    cases = []
    for name in ["astronaut.png", "coffee.png"]:
        x = np.asarray(Image.open(FIX / "images" / name).convert("RGB")).astype(np.float32)
        g = cv2.GaussianBlur(x, (0, 0), 6.0)
        intensity = np.min(g - x, axis=2).clip(0, 255)
        intensity /= max(16, np.median(intensity[intensity > 8]))
        intensity *= 127
        result = intensity.clip(0, 255).astype(np.uint8)
        out = f"lineart/{Path(name).stem}.png"
        Image.fromarray(result, mode="L").save(OUT / out)
        cases.append(dict(image=name, lineart=out))
    return cases


def resizes():
    (OUT / "resize").mkdir(exist_ok=True)
    cases = []
    for name, w, h in RESIZES:
        out = f"resize/{Path(name).stem}_{w}x{h}.png"
        Image.open(OUT / name).convert("RGB").resize((w, h), Image.LANCZOS).save(OUT / out)
        cases.append(dict(image=name, width=w, height=h, resized=out))
    return cases


def main():
    logging.disable(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    base = StableDiffusionPipeline.from_pretrained(FIX / "tiny-sd", torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    nets = {"a": controlnet(base.unet, 61), "b": controlnet(base.unet, 62,
                                                             conditioning_embedding_out_channels=(8, 16, 16, 24))}
    for key, net in nets.items():
        net.save_pretrained(OUT / f"tiny-controlnet-{key}", safe_serialization=True)
        # Reload, so the runs below use exactly the saved (f32) weights.
        nets[key] = ControlNetModel.from_pretrained(OUT / f"tiny-controlnet-{key}").eval()
        # Stored in f16: the seeded weights are f16 values, so nothing changes.
        path = OUT / f"tiny-controlnet-{key}" / "diffusion_pytorch_model.safetensors"
        save_file({k: v.half().contiguous() for k, v in nets[key].state_dict().items()}, path,
                  metadata={"format": "pt"})

    tensors = {}
    torch.manual_seed(70)
    sample, context = torch.randn(2, 4, 5, 6), torch.randn(2, 77, 32)
    cond = torch.rand(2, 3, 40, 48)
    timesteps = torch.tensor([700.0, 10.0])
    with torch.no_grad():
        down, mid = nets["a"](sample, timesteps, encoder_hidden_states=context, controlnet_cond=cond,
                              conditioning_scale=0.7, return_dict=False)
    for k, v in {"sample": sample, "timesteps": timesteps, "context": context, "cond": cond, "mid": mid}.items():
        tensors[f"model/{k}"] = v.contiguous()
    for i, d in enumerate(down):
        tensors[f"model/down{i}"] = d.contiguous()

    control_images()
    photo = Image.open(FIX / "pipeline" / "init.png").convert("RGB")
    cases = []
    for case in CASES:
        images = run(case, base, nets, photo, "np")
        latents = run(case, base, nets, photo, "latent")
        tensors[case["name"] + "/image"] = images.contiguous()
        tensors[case["name"] + "/latents"] = latents.contiguous()
        print(f"{case['name']:26s} mean {images.mean():.3f} std {images.std():.3f}")
        units = [dict({"weight": 1.0, "start": 0.0, "end": 1.0}, **u) for u in case["units"]]
        cases.append(dict({"mode": "txt2img", "batch": 1, "negative": "", "prompt": PROMPT, "width": WIDTH,
                           "height": HEIGHT, "folder": "tiny-sd"}, **dict(case, units=units)))
    save_file(tensors, OUT / "reference.safetensors",
              metadata={"source": "tests/reference/controlnet_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(dict(cases=cases, canny=canny(), lineart=lineart(), resize=resizes()), indent=2) + "\n")


if __name__ == "__main__":
    main()
