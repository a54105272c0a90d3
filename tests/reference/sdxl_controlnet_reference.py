"""SDXL ControlNet references: tiny seeded SDXL ControlNets and diffusers' SDXL ControlNet pipelines.

Builds two ControlNets from tests/fixtures/tiny-sdxl's UNet (`ControlNetModel.from_unet`, which
keeps the text_time added conditioning and the per-block transformer depth), every weight
re-drawn from a seed so the "zero" convolutions are not zero, the second with a narrower
conditioning embedding; saves them as diffusers folders
(tests/fixtures/sdxl-controlnet/tiny-sdxl-controlnet-{a,b}, weights stored in f16), and a third
shaped like diffusers' "-small" SDXL ControlNets (transformer_layers_per_block 0:
tiny-sdxl-controlnet-c), then writes
to tests/fixtures/sdxl-controlnet/:

  reference.safetensors  model/* and small/*: one evaluation's residuals (scale 0.7) of a and c
                         with pooled text embeddings and time ids; <case>/image and <case>/latents:
                         StableDiffusionXLControlNetPipeline / ...Img2ImgPipeline /
                         ...InpaintPipeline outputs for one and two units, weights, guidance
                         start/end, CFG on and off, an empty negative (zeros, as
                         force_zeros_for_empty_prompt says), batch 2 and a control image the
                         pipeline resizes
  cases.json             the cases, in tests/fixtures/controlnet/cases.json's form

and tests/fixtures/tiny-sdxl-controlnet.toml (a download manifest for tiny-sdxl-controlnet-a, for
the app's browser test). The control images are tests/fixtures/controlnet's.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/sdxl_controlnet_reference.py
"""

import hashlib
import json
import logging
import sys
from pathlib import Path

import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from controlnet_reference import controlnet, run  # noqa: E402
from sd_reference import round_weights  # noqa: E402
from pipeline_reference import PROMPT  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "sdxl-controlnet"
WIDTH, HEIGHT = 64, 48

PIPELINES = {"txt2img": StableDiffusionXLControlNetPipeline, "img2img": StableDiffusionXLControlNetImg2ImgPipeline,
             "inpaint": StableDiffusionXLControlNetInpaintPipeline}

CASES = [
    dict(name="one_unit_euler_cfg", sampler="euler", steps=4, cfg=7.5, seed=41,
         units=[dict(net="a", image="control_lines.png")]),
    dict(name="weight_start_end_no_cfg", sampler="euler_a", steps=5, cfg=1.0, seed=42,
         units=[dict(net="a", image="control_lines.png", weight=0.6, start=0.2, end=0.7)]),
    dict(name="two_units_ddim", sampler="ddim", steps=4, cfg=5.0, seed=43, negative="blurry",
         units=[dict(net="a", image="control_lines.png", weight=0.8),
                dict(net="b", image="control_photo.png", weight=1.3, start=0.0, end=0.5)]),
    dict(name="img2img_dpmpp_2m", mode="img2img", sampler="dpmpp_2m", steps=6, cfg=7.5, seed=44, strength=0.6,
         units=[dict(net="b", image="control_photo.png", end=0.8)]),
    dict(name="inpaint_euler_a", mode="inpaint", sampler="euler_a", steps=4, cfg=7.5, seed=46, strength=1.0,
         units=[dict(net="a", image="control_lines.png", weight=0.9)]),
    dict(name="resized_control_batch2", sampler="euler", steps=3, cfg=7.5, seed=45, batch=2,
         units=[dict(net="a", image="control_small.png", weight=1.1)]),
    # diffusers' "-small" SDXL ControlNets: transformer_layers_per_block 0 (projections only).
    dict(name="small_controlnet_dpmpp_2m", sampler="dpmpp_2m", steps=4, cfg=6.0, seed=47, negative="blurry",
         units=[dict(net="c", image="control_photo.png", weight=1.2)]),
]


MANIFEST = """# A tiny seeded SDXL ControlNet for the tiny SDXL model (tests/fixtures/sdxl-controlnet/tiny-sdxl-controlnet-a,
# made by tests/reference/sdxl_controlnet_reference.py), for the app's browser test of SDXL control
# units. Served from localhost; sizes and sha256 are the real ones.
id = "tiny-sdxl-controlnet"
name = "Tiny SDXL ControlNet (tests)"
family = "controlnet-sdxl"
description = "Random seeded weights in the ControlNet layout of the tiny SDXL UNet"

[license]
name = "MIT (test fixture)"
url = "https://opensource.org/license/mit"

[source]
repo = "darkroom/tiny-sdxl-controlnet"
revision = "fixture"

[quantization]
linear = "none"
conv = "none"
"""


def small_controlnet(unet, seed):
    """A ControlNet shaped like diffusers/controlnet-*-sdxl-1.0-small: the UNet's encoder with no
    transformer blocks (each attention is the group norm and the projections in and out)."""
    config = {k: v for k, v in controlnet(unet, seed).config.items() if not k.startswith("_")}
    config["transformer_layers_per_block"] = [0] * len(config["down_block_types"])
    return round_weights(ControlNetModel(**config), seed, 1.0)


def write_manifest(folder):
    text = MANIFEST
    for name in ["config.json", "diffusion_pytorch_model.safetensors"]:
        data = (folder / name).read_bytes()
        text += (f'\n[[files]]\npath = "{name}"\ncomponent = "controlnet"\nsize = {len(data)}\n'
                 f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    (FIX / "tiny-sdxl-controlnet.toml").write_text(text)


def main():
    logging.disable(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    base = StableDiffusionXLPipeline.from_pretrained(FIX / "tiny-sdxl", torch_dtype=torch.float32,
                                                     add_watermarker=False)
    assert base.config.force_zeros_for_empty_prompt
    nets = {"a": controlnet(base.unet, 63),
            "b": controlnet(base.unet, 64, conditioning_embedding_out_channels=(8, 16, 16, 24)),
            "c": small_controlnet(base.unet, 65)}
    for key, net in nets.items():
        assert net.config.addition_embed_type == "text_time"
        folder = OUT / f"tiny-sdxl-controlnet-{key}"
        net.save_pretrained(folder, safe_serialization=True)
        nets[key] = ControlNetModel.from_pretrained(folder).eval()
        # Stored in f16: the seeded weights are f16 values, so nothing changes.
        save_file({k: v.half().contiguous() for k, v in nets[key].state_dict().items()},
                  folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})

    write_manifest(OUT / "tiny-sdxl-controlnet-a")

    tensors = {}
    torch.manual_seed(71)
    sample, context = torch.randn(2, 4, 5, 6), torch.randn(2, 77, 72)
    text_embeds = torch.randn(2, 24)
    time_ids = torch.tensor([[48.0, 64.0, 0.0, 0.0, 48.0, 64.0], [1024.0, 768.0, 16.0, 8.0, 1024.0, 768.0]])
    cond = torch.rand(2, 3, 40, 48)
    timesteps = torch.tensor([700.0, 10.0])
    inputs = {"sample": sample, "timesteps": timesteps, "context": context, "cond": cond,
              "text_embeds": text_embeds, "time_ids": time_ids}
    for group, key in [("model", "a"), ("small", "c")]:
        with torch.no_grad():
            down, mid = nets[key](sample, timesteps, encoder_hidden_states=context, controlnet_cond=cond,
                                  conditioning_scale=0.7, return_dict=False,
                                  added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids})
        for k, v in dict(inputs, mid=mid).items():
            tensors[f"{group}/{k}"] = v.clone().contiguous()
        for i, d in enumerate(down):
            tensors[f"{group}/down{i}"] = d.contiguous()

    photo = Image.open(FIX / "pipeline" / "init.png").convert("RGB")
    cases = []
    for case in CASES:
        images = run(case, base, nets, photo, "np", PIPELINES, xl=True)
        latents = run(case, base, nets, photo, "latent", PIPELINES, xl=True)
        tensors[case["name"] + "/image"] = images.contiguous()
        tensors[case["name"] + "/latents"] = latents.contiguous()
        print(f"{case['name']:26s} mean {images.mean():.3f} std {images.std():.3f}")
        units = [dict({"weight": 1.0, "start": 0.0, "end": 1.0}, **u) for u in case["units"]]
        full = dict({"mode": "txt2img", "batch": 1, "prompt": PROMPT, "width": WIDTH, "height": HEIGHT,
                     "folder": "tiny-sdxl"}, **dict(case, units=units))
        full["negative"] = case.get("negative", "")
        cases.append(full)
    save_file(tensors, OUT / "reference.safetensors",
              metadata={"source": "tests/reference/sdxl_controlnet_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(dict(cases=cases), indent=2) + "\n")


if __name__ == "__main__":
    main()
