"""Upscaler references: seeded RRDBNet and SRVGGNetCompact state dicts with the official key
names (Real-ESRGAN's, and ESRGAN's old names for one), run by spandrel in PyTorch.

Writes tests/fixtures/upscale/: <case>.safetensors (f16) or <case>.pth (torch.save; rrdb_x2
nested under params_ema and params, as BasicSR saves), input.png (a 24x16 crop of the fixture photograph), reference.safetensors
(<case>/output [1, 3, H·s, W·s], unclamped; <case>/output_large for input_large.png, 102x60,
through spandrel's descriptor, which pads by reflection to the model's factor) and cases.json.

    .venv/bin/python tests/reference/upscale_reference.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from spandrel import ModelLoader

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "upscale"


def conv(state, name, out, inp, g, gain=1.0):
    state[f"{name}.weight"] = (torch.randn(out, inp, 3, 3, generator=g) * gain / (inp * 9) ** 0.5).half().float()
    state[f"{name}.bias"] = (torch.randn(out, generator=g) * 0.02).half().float()


def rrdb(g, nf=8, nb=1, gc=32, in_ch=3):
    s = {}
    conv(s, "conv_first", nf, in_ch, g)
    for i in range(nb):
        for r in (1, 2, 3):
            for j in range(5):
                conv(s, f"body.{i}.rdb{r}.conv{j + 1}", nf if j == 4 else gc, nf + j * gc, g)
    for name in ["conv_body", "conv_up1", "conv_up2", "conv_hr"]:
        conv(s, name, nf, nf, g)
    conv(s, "conv_last", 3, nf, g)
    return s


def compact(g, nf=16, nc=4, scale=4):
    s = {}
    conv(s, "body.0", nf, 3, g)
    for k in range(nc + 1):
        s[f"body.{2 * k + 1}.weight"] = (0.25 + 0.1 * torch.randn(nf, generator=g)).half().float()
        conv(s, f"body.{2 * k + 2}", 3 * scale * scale if k == nc else nf, nf, g)
    return s


def old_names(state, nb):
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "conv_first":
            nk = f"model.0.{parts[1]}"
        elif parts[0] == "body":
            nk = f"model.1.sub.{parts[1]}.{parts[2].upper()}.{parts[3]}.0.{parts[4]}"
        elif parts[0] == "conv_body":
            nk = f"model.1.sub.{nb}.{parts[1]}"
        else:
            nk = {"conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}[
                parts[0]] + f".{parts[1]}"
        out[nk] = v
    return out


# Cases shipped as .pth (as most upscalers are shared); the rest as .safetensors.
PTH = ["rrdb_x2", "esrgan_old_x4"]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    photo = Image.open(ROOT / "tests" / "fixtures" / "images" / "coffee.png").convert("RGB")
    crop = photo.resize((120, 80), Image.LANCZOS).crop((40, 24, 64, 40))
    crop.save(OUT / "input.png")
    x = torch.from_numpy(np.asarray(crop).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    # A larger input (not a multiple of 4 wide) for the tiled runs.
    large = photo.resize((150, 100), Image.LANCZOS).crop((20, 10, 122, 70))
    large.save(OUT / "input_large.png")
    xl = torch.from_numpy(np.asarray(large).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    g = torch.Generator().manual_seed(9)
    cases = {
        "rrdb_x4": rrdb(g),
        "rrdb_x2": rrdb(g, in_ch=12),
        "compact_x4": compact(g),
        "compact_x2": compact(g, nf=8, nc=3, scale=2),
    }
    cases["esrgan_old_x4"] = old_names(cases["rrdb_x4"], 1)
    tensors, listing = {}, []
    for name, state in cases.items():
        # The weights are f16 values: stored in f16, nothing changes.
        if name in PTH:
            wrapped = {"params_ema": state, "params": state} if name == "rrdb_x2" else state
            torch.save(wrapped, OUT / f"{name}.pth")
        else:
            save_file({k: v.half().contiguous() for k, v in state.items()}, OUT / f"{name}.safetensors")
        model = ModelLoader().load_from_state_dict(state).eval()
        with torch.no_grad():
            y = model.model(x)
        tensors[f"{name}/output"] = y.contiguous()
        if name in ("rrdb_x2", "compact_x4"):
            with torch.no_grad():
                tensors[f"{name}/output_large"] = model(xl).contiguous()
        listing.append(dict(name=name, scale=model.scale, architecture=type(model.model).__name__))
        print(name, model.scale, type(model.model).__name__, tuple(y.shape), f"{y.mean():.3f} {y.std():.3f}")
    save_file(tensors, OUT / "reference.safetensors")
    (OUT / "cases.json").write_text(json.dumps(listing, indent=2) + "\n")


if __name__ == "__main__":
    main()
