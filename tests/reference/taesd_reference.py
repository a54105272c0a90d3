"""Reference outputs for darkroom-models' TAESD, from a PyTorch definition of the same network.

Loads the TAEF2 weights (tests/fixtures/taef2), encodes and decodes a 64x64 crop of
astronaut.png, and writes the crop, its latents and the decoded crop (f32) to
tests/fixtures/taef2_reference.safetensors. Prints the full-image round-trip PSNRs.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/taesd_reference.py
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CROP = (224, 160, 64, 64)  # x, y, width, height: the astronaut's face


def conv3(n_in, n_out, stride=1, bias=True):
    return nn.Conv2d(n_in, n_out, 3, padding=1, stride=stride, bias=bias)


class TanhClamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class MidPool(nn.Module):
    """x + pool(x) with pool = 1x1 conv, GroupNorm(4), ReLU, 1x1 conv (4x wider inside)."""

    def __init__(self, c):
        super().__init__()
        self.pool = nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(), nn.Conv2d(4 * c, c, 1, bias=False))


class Block(nn.Module):
    def __init__(self, c, midblock=False):
        super().__init__()
        self.conv = nn.Sequential(conv3(c, c), nn.ReLU(), conv3(c, c), nn.ReLU(), conv3(c, c))
        self.pool = MidPool(c).pool if midblock else None

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


def encoder(latent, midblock):
    layers = [conv3(3, 64), Block(64)]
    for stage in range(3):
        layers += [conv3(64, 64, stride=2, bias=False)] + [Block(64, midblock and stage == 2) for _ in range(3)]
    return nn.Sequential(*layers, conv3(64, latent))


def decoder(latent, midblock):
    layers = [TanhClamp(), conv3(latent, 64), nn.ReLU()] + [Block(64, midblock) for _ in range(3)]
    for stage in range(3):
        layers += [nn.Upsample(scale_factor=2), conv3(64, 64, bias=False)] + [Block(64) for _ in range(1 if stage == 2 else 3)]
    return nn.Sequential(*layers, conv3(64, 3))


def load(module, path):
    state = {k: v.float() for k, v in load_file(path).items()}
    module.load_state_dict(state, strict=True)
    return module.eval()


def image(name, crop=None):
    pixels = np.asarray(Image.open(FIXTURES / "images" / name).convert("RGB"), dtype=np.float32) / 255.0
    if crop:
        x, y, w, h = crop
        pixels = pixels[y : y + h, x : x + w]
    else:
        h, w = pixels.shape[0] // 8 * 8, pixels.shape[1] // 8 * 8
        pixels = pixels[:h, :w]
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


def main():
    torch.manual_seed(0)
    enc = load(encoder(32, True), FIXTURES / "taef2" / "taef2_encoder.safetensors")
    dec = load(decoder(32, True), FIXTURES / "taef2" / "taef2_decoder.safetensors")
    with torch.no_grad():
        for name in ["astronaut.png", "coffee.png"]:
            x = image(name)
            y = dec(enc(x)).clamp(0, 1)
            mse = torch.mean((x - y) ** 2).item()
            print(f"{name} {x.shape[3]}x{x.shape[2]}: {10 * np.log10(1 / mse):.2f} dB")
        crop = image("astronaut.png", CROP)
        latents = enc(crop)
        decoded = dec(latents)
    save_file(
        {"image": crop, "latents": latents.contiguous(), "decoded": decoded.contiguous()},
        FIXTURES / "taef2_reference.safetensors",
        metadata={"crop": ",".join(map(str, CROP)), "source": "tests/reference/taesd_reference.py"},
    )


if __name__ == "__main__":
    main()
