"""The names of a single-file SDXL checkpoint (the original SGM layout A1111, ComfyUI and model sites
share), as diffusers reads them, for the tiny SDXL.

Writes tests/fixtures/ldm/tiny-sdxl-ldm-map.json: one entry per tensor of tests/fixtures/tiny-sdxl,
[single-file name, component, diffusers name, single-file shape, part]. `part` says how the
single-file tensor holds the diffusers one: "" the whole of it, "q"/"k"/"v" a third of OpenCLIP's
`attn.in_proj_weight`/`in_proj_bias` (rows in that order), "T" transposed (`text_projection`).
The single-file names are laid out here (`model.diffusion_model.` with `label_emb`,
`first_stage_model.`, `conditioner.embedders.0.transformer.` for CLIP-L and
`conditioner.embedders.1.model.` for OpenCLIP bigG), then checked by diffusers itself:
`StableDiffusionXLPipeline.from_single_file` must turn that checkpoint back into exactly the tiny
model's tensors, every key, bit for bit.

Run: HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/sdxl_checkpoint.py
"""

import json
import logging
import re
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_checkpoint import unet_key, vae_key  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = ROOT / "tiny-sdxl"
OUT = ROOT / "ldm" / "tiny-sdxl-ldm-map.json"

OPENCLIP = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
            ("self_attn.out_proj", "attn.out_proj")]


def sdxl_unet_key(key, cfg):
    for new, old in [("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2")]:
        if key.startswith(new + "."):
            return old + key[len(new):]
    return unet_key(key, cfg)


def openclip_key(key):
    """(single-file name, part) of a CLIPTextModelWithProjection tensor."""
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    if key in fixed:
        return fixed[key], ""
    if key == "text_projection.weight":
        return "text_projection", "T"
    m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.*)", key)
    assert m, key
    layer, rest = m[1], m[2]
    if q := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
        return f"transformer.resblocks.{layer}.attn.in_proj_{q[2]}", q[1]
    for new, old in OPENCLIP:
        if rest.startswith(new + "."):
            return f"transformer.resblocks.{layer}.{old}{rest[len(new):]}", ""
    raise KeyError(key)


def main():
    logging.disable(logging.WARNING)
    parts = {
        "unet": "unet/diffusion_pytorch_model.safetensors",
        "vae": "vae/diffusion_pytorch_model.safetensors",
        "text_encoder": "text_encoder/model.safetensors",
        "text_encoder_2": "text_encoder_2/model.safetensors",
    }
    configs = {c: json.loads((MODEL / c / "config.json").read_text()) for c in ["unet", "vae"]}
    pieces, entries, originals = {}, [], {}
    for component, weights in parts.items():
        tensors = load_file(MODEL / weights)
        originals[component] = tensors
        for key, value in tensors.items():
            part = ""
            if component == "unet":
                name = "model.diffusion_model." + sdxl_unet_key(key, configs["unet"])
            elif component == "vae":
                name = "first_stage_model." + vae_key(key, configs["vae"])
                if ".mid.attn_1." in name and name.endswith(".weight") and value.dim() == 2:
                    value = value[:, :, None, None]
            elif component == "text_encoder":
                # Checkpoints keep transformers 4's `text_model.` level (the tiny file, saved by
                # transformers 5, has none).
                name = "conditioner.embedders.0.transformer." + ("" if key.startswith("text_model.") else "text_model.") + key
            else:
                ldm, part = openclip_key(key)
                name = "conditioner.embedders.1.model." + ldm
                if part == "T":
                    value = value.T.contiguous()
            pieces.setdefault(name, []).append((part, value))
            entries.append([name, component, key, None, part])
    checkpoint = {}
    for name, values in pieces.items():
        if len(values) == 1 and values[0][0] in ("", "T"):
            checkpoint[name] = values[0][1]
        else:
            order = {p: v for p, v in values}
            assert sorted(order) == ["k", "q", "v"], (name, sorted(order))
            checkpoint[name] = torch.cat([order["q"], order["k"], order["v"]], dim=0)
    for entry in entries:
        entry[3] = list(checkpoint[entry[0]].shape)

    # diffusers' single-file loader must give back every tensor exactly.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny-sdxl.safetensors"
        save_file({k: v.contiguous() for k, v in checkpoint.items()}, path)
        pipe = StableDiffusionXLPipeline.from_single_file(path, config=str(MODEL), local_files_only=True,
                                                          torch_dtype=torch.float16)
    back = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
            "text_encoder_2": pipe.text_encoder_2}
    for component, tensors in originals.items():
        converted = {k: v for k, v in back[component].state_dict().items() if not k.endswith("position_ids")}
        missing = set(tensors) - set(converted)
        extra = set(converted) - set(tensors)
        assert not missing and not extra, f"{component}: missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}"
        for key, value in tensors.items():
            got = converted[key]
            assert got.shape == value.shape, f"{component}.{key}: {tuple(got.shape)} vs {tuple(value.shape)}"
            assert torch.equal(got.to(value.dtype), value), f"{component}.{key} differs"

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(entries, indent=0) + "\n")
    print(f"{len(entries)} tensors in {len(checkpoint)}; diffusers reads the single-file layout back exactly -> {OUT}")


if __name__ == "__main__":
    main()
