"""torch.randn on the CPU generator, for darkroom-pipeline's torch-compatible RNG to match.

For several seeds and sizes (latent shapes, sizes that are and are not multiples of 16, and
small sizes under 16, which torch draws differently), the values of
`torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed))` in f32, and for one seed two
consecutive draws from the same generator. Writes tests/fixtures/randn.safetensors.

    .venv/bin/python tests/reference/randn_reference.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
CASES = [(0, 16), (0, 1 * 4 * 8 * 8), (42, 1 * 4 * 64 * 64), (1234, 100), (2**32 + 7, 37), (7, 5), (99, 1)]


def main():
    tensors = {}
    for seed, n in CASES:
        g = torch.Generator("cpu").manual_seed(seed)
        tensors[f"{seed}/{n}"] = torch.randn(n, generator=g, dtype=torch.float32)
    g = torch.Generator("cpu").manual_seed(5)
    tensors["5/then/first"] = torch.randn(40, generator=g)
    tensors["5/then/second"] = torch.randn(24, generator=g)
    save_file(tensors, ROOT / "tests" / "fixtures" / "randn.safetensors", metadata={"torch": torch.__version__})
    print(len(tensors), "draws")


if __name__ == "__main__":
    main()
