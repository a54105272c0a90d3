"""PyTorch .pth files for the restricted reader (crates/weights/src/pth.rs), written by torch.save:

  plain.pth      a state dict of f32, f16 and bf16 tensors, a transposed (non-contiguous) view and
                 a view at an offset into a shared storage, and an nn.Parameter
  nested.pth     {"params_ema": …, "params": …, "iter": 5}: the reader takes params_ema
  evil.pth       a dict holding an object whose __reduce__ calls os.system: refused, nothing run
  reference.safetensors   every tensor the reader should find, contiguous, by file/name

    .venv/bin/python tests/reference/pth_reference.py
"""

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "pth"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(3)
    shared = torch.randn(40, generator=g)
    plain = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(4, generator=g),
        "half": torch.randn(5, 2, generator=g).half(),
        "bf16": torch.randn(3, generator=g).bfloat16(),
        "transposed": torch.randn(3, 5, generator=g).t(),
        "offset_view": shared[10:22].view(3, 4),
        "shared_head": shared[:6],
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "steps": torch.tensor([7], dtype=torch.int64),
    }
    torch.save(plain, OUT / "plain.pth")
    ema = {"body.0.weight": torch.randn(2, 3, generator=g)}
    torch.save({"params_ema": ema, "params": {"body.0.weight": torch.zeros(2, 3)}, "iter": 5}, OUT / "nested.pth")
    torch.save({"weight": torch.ones(2), "payload": Evil()}, OUT / "evil.pth")
    reference = {f"plain/{k}": v.detach().contiguous().clone() for k, v in plain.items()}
    reference.update({f"nested/{k}": v.contiguous() for k, v in ema.items()})
    save_file(reference, OUT / "reference.safetensors")


if __name__ == "__main__":
    main()
