"""The names of a single-file (original LDM / A1111) Stable Diffusion 1.x checkpoint, as diffusers
reads them, for the tiny test model.

Writes tests/fixtures/ldm/tiny-sd-ldm-map.json: one entry per tensor of tests/fixtures/tiny-sd,
[LDM name, component, diffusers name, LDM shape]. The LDM names are laid out here (the inverse
of diffusers' converter), then checked by diffusers itself: its `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint` and `convert_ldm_clip_checkpoint` must turn that checkpoint back
into exactly the tiny model's tensors, every key, bit for bit. So the map is diffusers' reading of
a single-file checkpoint; the Rust importer is tested against it.

Run: HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/ldm_checkpoint.py
"""

import json
import re
from pathlib import Path

import torch
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = ROOT / "tiny-sd"
OUT = ROOT / "ldm" / "tiny-sd-ldm-map.json"

UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
               ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def rename(rest, table):
    for new, old in table:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_key(key, cfg):
    layers = cfg["layers_per_block"]
    for new, old in [("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
                     ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2")]:
        if key.startswith(new + "."):
            return old + key[len(new):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i = 1 + int(m[1]) * (layers + 1) + int(m[3])
        return f"input_blocks.{i}.0.{rename(m[4], UNET_RESNET)}" if m[2] == "resnets" else f"input_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{1 + int(m[1]) * (layers + 1) + layers}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{rename(m[2], UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        i = int(m[1]) * (layers + 1) + int(m[3])
        return f"output_blocks.{i}.0.{rename(m[4], UNET_RESNET)}" if m[2] == "resnets" else f"output_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        b = int(m[1])
        slot = 2 if cfg["up_block_types"][b].startswith("CrossAttn") else 1
        return f"output_blocks.{b * (layers + 1) + layers}.{slot}.conv.{m[2]}"
    raise KeyError(key)


def vae_key(key, cfg):
    n = len(cfg["block_out_channels"])
    shortcut = [("conv_shortcut", "nin_shortcut")]
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{rename(m[3], shortcut)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"decoder.up.{n - 1 - int(m[1])}.block.{m[2]}.{rename(m[3], shortcut)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{n - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{rename(m[3], shortcut)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{rename(m[2], VAE_ATTENTION)}"
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    return key


def main():
    parts = {
        "unet": ("unet/diffusion_pytorch_model.safetensors", "unet/config.json", "model.diffusion_model."),
        "vae": ("vae/diffusion_pytorch_model.safetensors", "vae/config.json", "first_stage_model."),
        "text_encoder": ("text_encoder/model.safetensors", "text_encoder/config.json", "cond_stage_model.transformer."),
    }
    checkpoint, entries, originals, configs = {}, [], {}, {}
    for component, (weights, config, prefix) in parts.items():
        cfg = json.loads((MODEL / config).read_text())
        configs[component] = cfg
        tensors = load_file(MODEL / weights)
        originals[component] = tensors
        for key, value in tensors.items():
            if component == "unet":
                ldm = prefix + unet_key(key, cfg)
            elif component == "vae":
                ldm = prefix + vae_key(key, cfg)
                # The original VAE's attention projections are 1x1 convolutions.
                if ".mid.attn_1." in ldm and ldm.endswith(".weight") and value.dim() == 2:
                    value = value[:, :, None, None]
            else:
                ldm = prefix + key
            assert ldm not in checkpoint, f"{ldm} named twice"
            checkpoint[ldm] = value
            entries.append([ldm, component, key, list(value.shape)])

    # diffusers' reading of the checkpoint must give back every tensor exactly.
    back = {
        "unet": sfu.convert_ldm_unet_checkpoint(checkpoint, configs["unet"]),
        "vae": sfu.convert_ldm_vae_checkpoint(checkpoint, configs["vae"]),
        "text_encoder": sfu.convert_ldm_clip_checkpoint(checkpoint),
    }
    for component, tensors in originals.items():
        converted = back[component]
        missing = set(tensors) - set(converted)
        extra = set(converted) - set(tensors)
        assert not missing and not extra, f"{component}: missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}"
        for key, value in tensors.items():
            got = converted[key]
            assert torch.equal(got.reshape(value.shape), value), f"{component}.{key} differs"
            assert got.shape == value.shape, f"{component}.{key}: {tuple(got.shape)} vs {tuple(value.shape)}"

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(entries, indent=0) + "\n")
    print(f"{len(entries)} tensors; diffusers reads the single-file layout back exactly -> {OUT}")


if __name__ == "__main__":
    main()
