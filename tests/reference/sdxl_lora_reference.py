"""An SDXL LoRA as kohya's sd-scripts writes them, for the tiny SDXL, and diffusers' images with it.

kohya trains SDXL on the original (SGM/LDM) UNet, so its files name UNet modules the LDM way
(`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`, `lora_unet_output_blocks_2_2_conv`,
`lora_unet_middle_block_0_in_layers_2`), and the two text encoders `lora_te1_` / `lora_te2_`.
This script writes such a file over tests/fixtures/tiny-sdxl's modules (attention projections,
feed-forwards, proj_in/out, resnet convs, time projections and shortcuts, the down- and
upsamplers, both encoders' attention and MLP), loads it with diffusers' `load_lora_weights` (its
kohya/SGM converter) and fuses it with `fuse_lora(lora_scale=…)`.

Writes tests/fixtures/sdxl-lora/{tiny-sdxl-lora.safetensors, reference.safetensors, cases.json}.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/sdxl_lora_reference.py   (needs peft)
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "sdxl-lora"
RANK, ALPHA = 4, 2.0
WIDTH, HEIGHT = 64, 48

RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
          "conv_shortcut": "skip_connection"}


def sgm_name(name, config):
    """The LDM/SGM module path of a diffusers UNet module path (the inverse of the converters')."""
    per = config.layers_per_block + 1
    attention = ["CrossAttn" in t for t in config.up_block_types]
    parts = name.split(".")
    if parts[0] == "down_blocks":
        block, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "downsamplers":
            return ".".join([f"input_blocks.{(block + 1) * per}.0.op"])
        index = 1 + block * per + j
        if kind == "resnets":
            return f"input_blocks.{index}.0." + RESNET.get(rest[0], rest[0])
        return f"input_blocks.{index}.1." + ".".join(rest)
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), parts[3:]
        if kind == "resnets":
            return f"middle_block.{2 * j}." + RESNET.get(rest[0], rest[0])
        return "middle_block.1." + ".".join(rest)
    if parts[0] == "up_blocks":
        block, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "upsamplers":
            return f"output_blocks.{block * per + per - 1}.{2 if attention[block] else 1}.conv"
        index = block * per + j
        if kind == "resnets":
            return f"output_blocks.{index}.0." + RESNET.get(rest[0], rest[0])
        return f"output_blocks.{index}.1." + ".".join(rest)
    return None


def lora_pairs(module, prefix, generator, rename):
    tensors = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear):
            out_f, in_f = layer.weight.shape
            down_shape, up_shape = (RANK, in_f), (out_f, RANK)
        elif isinstance(layer, torch.nn.Conv2d):
            out_f, in_f, kh, kw = layer.weight.shape
            down_shape, up_shape = (RANK, in_f, kh, kw), (out_f, RANK, 1, 1)
        else:
            continue
        target = rename(name)
        if target is None:
            continue
        key = f"{prefix}_{target.replace('.', '_')}"
        down = (torch.randn(down_shape, generator=generator) * 0.3).half()
        up = (torch.randn(up_shape, generator=generator) * 0.3).half()
        tensors[f"{key}.lora_down.weight"] = down
        tensors[f"{key}.lora_up.weight"] = up
        tensors[f"{key}.alpha"] = torch.tensor(ALPHA).half()
    return tensors


def main():
    logging.disable(logging.WARNING)
    OUT.mkdir(exist_ok=True)
    generator = torch.Generator().manual_seed(43)
    pipe = StableDiffusionXLPipeline.from_pretrained(FIX / "tiny-sdxl", torch_dtype=torch.float32,
                                                     add_watermarker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.unet.config
    unet_modules = ("to_q", "to_k", "to_v", "to_out.0", "ff.net", "proj_in", "proj_out", "conv1", "conv2",
                    "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
    text_modules = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

    def unet_rename(name):
        return sgm_name(name, config) if any(p in name for p in unet_modules) else None

    def text_rename(name):
        return name if any(p in name for p in text_modules) and "text_model" in name else None

    tensors = {}
    tensors.update(lora_pairs(pipe.unet, "lora_unet", generator, unet_rename))
    tensors.update(lora_pairs(pipe.text_encoder, "lora_te1", generator, text_rename))
    tensors.update(lora_pairs(pipe.text_encoder_2, "lora_te2", generator, text_rename))
    save_file(tensors, OUT / "tiny-sdxl-lora.safetensors",
              metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA), "ss_base_model_version": "sdxl_base_v1-0"})
    print(f"{len(tensors) // 3} LoRA modules, e.g.", sorted(tensors)[:: max(1, len(tensors) // 8)])

    cases, images = [], {}
    prompt = "a photograph of an astronaut riding a horse"
    for index, scale in enumerate([0.0, 0.7]):
        if scale:
            pipe.load_lora_weights(OUT, weight_name="tiny-sdxl-lora.safetensors", adapter_name="tiny")
            # Every module of the file took a LoRA layer: the converter mapped every name.
            wrapped = sum(1 for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
                          for _, layer in m.named_modules() if hasattr(layer, "lora_A"))
            assert wrapped == len(tensors) // 3, (wrapped, len(tensors) // 3)
            pipe.fuse_lora(lora_scale=scale)
        case = {"prompt": prompt, "negative": "ugly", "seed": 3, "steps": 4, "cfg": 6.0, "sampler": "euler",
                "width": WIDTH, "height": HEIGHT, "lora_scale": scale}
        image = pipe(prompt, negative_prompt="ugly", num_inference_steps=4, guidance_scale=6.0, width=WIDTH,
                     height=HEIGHT, generator=torch.Generator("cpu").manual_seed(3), output_type="np").images
        images[f"case{index}"] = torch.from_numpy(np.ascontiguousarray(image)).float()
        cases.append(case)
    save_file(images, OUT / "reference.safetensors", metadata={"source": "tests/reference/sdxl_lora_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    diff = (images["case0"] - images["case1"]).abs().max().item()
    print(f"the LoRA changes the image by up to {diff:.3f}")


if __name__ == "__main__":
    main()
