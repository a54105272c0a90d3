"""A seeded, randomly initialised TAESD decoder for SD 1.x/2.x latents (4 channels, no midblock
pool), as madebyollin/taesd lays out `taesd_decoder`, and its PyTorch output for seeded latents.

Writes tests/fixtures/taesd-test/taesd_decoder.safetensors (f16 weights, the key names of the
real file) and tests/fixtures/taesd-test/reference.safetensors (latents [1, 4, 6, 8] and the
decoded [1, 3, 48, 64], f32, computed with the f16 weights upcast). The real TAESD weights are
not redistributable here; the architecture is the one tests/reference/taesd_reference.py checks
against the real TAEF2 weights.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/taesd_sd_reference.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from taesd_reference import decoder

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "taesd-test"


def main():
    torch.manual_seed(7)
    dec = decoder(4, False).eval()
    weights = {k: v.detach().half().contiguous() for k, v in dec.state_dict().items()}
    # Run with exactly the stored (f16) values.
    dec.load_state_dict({k: v.float() for k, v in weights.items()})
    latents = torch.randn(1, 4, 6, 8, generator=torch.Generator().manual_seed(11)) * 1.5
    with torch.no_grad():
        decoded = dec(latents)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(weights, OUT / "taesd_decoder.safetensors")
    save_file({"latents": latents.contiguous(), "decoded": decoded.contiguous()}, OUT / "reference.safetensors",
              metadata={"source": "tests/reference/taesd_sd_reference.py"})
    print(f"{sum(v.numel() for v in weights.values())} parameters; decoded range "
          f"{decoded.min().item():.3f}..{decoded.max().item():.3f} -> {OUT}")


if __name__ == "__main__":
    main()
