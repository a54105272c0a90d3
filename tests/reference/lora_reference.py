"""A LoRA for the tiny SD 1.x test model, and diffusers' images with it fused.

Writes tests/fixtures/lora/:
  tiny-lora.safetensors   kohya-format LoRA (lora_unet_* / lora_te_*, lora_down / lora_up /
                          alpha, f16 as most shared LoRAs are) over every linear and conv layer
                          diffusers' converter maps: attention projections, feed-forwards,
                          proj_in/out, resnet convs and time projections, CLIP's attention and MLP
  reference.safetensors   diffusers' output images (float, [1, H, W, 3] in 0..1) for cases.json
  cases.json              the generation parameters and LoRA scale of each image

diffusers reads the file with `load_lora_weights` (its kohya converter) and merges it with
`fuse_lora(lora_scale=…)`: W += scale · alpha / rank · up · down, what Darkroom does at load.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/lora_reference.py   (needs peft)
"""

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "lora"
RANK, ALPHA = 4, 2.0
WIDTH, HEIGHT = 64, 48


def lora_pairs(module, prefix, generator):
    """kohya entries for every nn.Linear / nn.Conv2d under `module` that diffusers' converter knows."""
    tensors = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear):
            out_f, in_f = layer.weight.shape
            down_shape, up_shape = (RANK, in_f), (out_f, RANK)
        elif isinstance(layer, torch.nn.Conv2d) and prefix == "lora_unet":
            out_f, in_f, kh, kw = layer.weight.shape
            down_shape, up_shape = (RANK, in_f, kh, kw), (out_f, RANK, 1, 1)
        else:
            continue
        if prefix == "lora_te" and not any(p in name for p in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            continue
        if prefix == "lora_unet" and not any(
            p in name for p in ("to_q", "to_k", "to_v", "to_out.0", "ff.net", "proj_in", "proj_out", "conv1", "conv2", "time_emb_proj")
        ):
            continue
        key = f"{prefix}_{name.replace('.', '_')}"
        # Rounded to f16 here, so the file's values are exactly what both sides compute with.
        down = (torch.randn(down_shape, generator=generator) * 0.3).half()
        up = (torch.randn(up_shape, generator=generator) * 0.3).half()
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(ALPHA).half()
    return tensors


def main():
    OUT.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(42)
    pipe = StableDiffusionPipeline.from_pretrained(FIX / "tiny-sd", torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    tensors = {}
    tensors.update(lora_pairs(pipe.unet, "lora_unet", generator))
    tensors.update(lora_pairs(pipe.text_encoder, "lora_te", generator))
    save_file(tensors, OUT / "tiny-lora.safetensors", metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)})
    print(f"{len(tensors) // 3} LoRA modules")

    cases, images = [], {}
    prompt = "a photograph of an astronaut riding a horse"
    for index, scale in enumerate([0.0, 0.8]):
        if scale:
            pipe.load_lora_weights(OUT, weight_name="tiny-lora.safetensors", adapter_name="tiny")
            pipe.fuse_lora(lora_scale=scale)
        case = {"prompt": prompt, "negative": "", "seed": 1, "steps": 4, "cfg": 7.5, "sampler": "euler",
                "width": WIDTH, "height": HEIGHT, "lora_scale": scale}
        image = pipe(prompt, num_inference_steps=4, guidance_scale=7.5, width=WIDTH, height=HEIGHT,
                     generator=torch.Generator("cpu").manual_seed(1), output_type="np").images
        images[f"case{index}"] = torch.from_numpy(np.ascontiguousarray(image)).float()
        cases.append(case)
    save_file(images, OUT / "reference.safetensors")
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    diff = (images["case0"] - images["case1"]).abs().max().item()
    print(f"the LoRA changes the image by up to {diff:.3f}")


if __name__ == "__main__":
    main()
