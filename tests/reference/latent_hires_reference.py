"""Reference for the hires fix's latent upscale (A1111's "Latent" and "Latent (nearest)"
upscalers): diffusers' txt2img on the tiny SD model gives the first pass's latents, torch's
`interpolate` (bilinear without antialiasing, and nearest — A1111's two modes) doubles them, and
diffusers' StableDiffusionImg2ImgPipeline, given those latents as its image (4 channels: taken
as latents, no VAE encode), makes the second pass. Composing those three is what
`darkroom generate --hires 2,upscaler=latent` must equal.

Writes tests/fixtures/pipeline/latent_hires.safetensors: `first` (the first pass's latents,
[1, 4, 6, 8]), `up_bilinear` / `up_nearest` ([1, 4, 12, 16]) and `image_bilinear` /
`image_nearest` (the second passes' images, [1, 96, 128, 3] in 0..1), with the settings in its
metadata.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/latent_hires_reference.py
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"

SETTINGS = dict(prompt="a lighthouse on a cliff at dusk", seed=21, steps=4, cfg=7.0, width=64, height=48,
                scale=2, hires_steps=5, strength=0.6)


def main():
    logging.disable(logging.WARNING)
    s = SETTINGS
    base = StableDiffusionPipeline.from_pretrained(FIX / "tiny-sd", torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config)
    txt2img = StableDiffusionPipeline(**dict(base.components, scheduler=scheduler))
    img2img = StableDiffusionImg2ImgPipeline(**dict(base.components, scheduler=scheduler))
    for p in (txt2img, img2img):
        p.set_progress_bar_config(disable=True)
    out = {}
    with torch.no_grad():
        first = txt2img(prompt=s["prompt"], height=s["height"], width=s["width"], num_inference_steps=s["steps"],
                        guidance_scale=s["cfg"], generator=torch.Generator("cpu").manual_seed(s["seed"]),
                        output_type="latent").images.float()
        out["first"] = first
        size = (s["height"] * s["scale"] // 8, s["width"] * s["scale"] // 8)
        for mode in ["bilinear", "nearest"]:
            up = torch.nn.functional.interpolate(first, size=size, mode=mode, antialias=False) \
                if mode == "bilinear" else torch.nn.functional.interpolate(first, size=size, mode=mode)
            image = img2img(prompt=s["prompt"], image=up, strength=s["strength"],
                            num_inference_steps=s["hires_steps"], guidance_scale=s["cfg"],
                            generator=torch.Generator("cpu").manual_seed(s["seed"]), output_type="np").images
            out[f"up_{mode}"] = up.contiguous()
            out[f"image_{mode}"] = torch.from_numpy(np.ascontiguousarray(image)).float()
            print(mode, tuple(up.shape), tuple(image.shape), f"mean {image.mean():.3f} std {image.std():.3f}")
    save_file(out, FIX / "pipeline" / "latent_hires.safetensors",
              metadata={"source": "tests/reference/latent_hires_reference.py", "settings": json.dumps(s)})


if __name__ == "__main__":
    main()
