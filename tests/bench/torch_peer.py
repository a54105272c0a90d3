"""PyTorch (CUDA, fp16) on the same model shapes `darkroom bench models` uses: the peer for the
native benchmark on a machine with an NVIDIA GPU, where onnxruntime-web has no browser to run in.

Seeded weights at SD-Turbo's (SD 2.1) or SD 1.5's shapes: text encode, one UNet step and a VAE
decode at 512x512, median of N runs after a warm-up, and the peak memory PyTorch allocated.

Usage: python3 tests/bench/torch_peer.py [--model sd-turbo|sd15] [--runs 5]
"""

import argparse
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


def median_ms(fn, runs):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sd-turbo", choices=["sd-turbo", "sd15"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    turbo = args.model == "sd-turbo"
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024 if turbo else 768, intermediate_size=4096 if turbo else 3072,
        num_hidden_layers=23 if turbo else 12, num_attention_heads=16 if turbo else 12,
        max_position_embeddings=77, hidden_act="gelu" if turbo else "quick_gelu"))
    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=1024 if turbo else 768,
        attention_head_dim=[5, 10, 20, 20] if turbo else 8, use_linear_projection=turbo)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    dev, dt = "cuda", torch.float16
    clip, unet, vae = (m.to(dev, dt).eval() for m in (clip, unet, vae))
    batch = 1 if turbo else 2
    latent = args.size // 8
    ids = torch.randint(0, 49408, (batch, 77), device=dev)
    sample = torch.randn(batch, 4, latent, latent, device=dev, dtype=dt)
    t = torch.full((batch,), 999.0, device=dev)
    z = torch.randn(1, 4, latent, latent, device=dev, dtype=dt)
    weights = torch.cuda.memory_allocated()
    with torch.no_grad():
        context = clip(ids)[0]
        rows = []
        for label, fn in [
            (f"text encode (batch {batch}, 77 tokens)", lambda: clip(ids)),
            (f"UNet step (batch {batch}, {latent}x{latent} latents)", lambda: unet(sample, t, context)),
            (f"VAE decode ({args.size}x{args.size} px)", lambda: vae.decode(z)),
        ]:
            torch.cuda.reset_peak_memory_stats()
            ms = median_ms(fn, args.runs)
            rows.append((label, ms, (torch.cuda.max_memory_allocated() - weights) / 2**20))
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}, fp16, {args.model} shapes, "
          f"median of {args.runs} runs after a warm-up")
    print(f"{'stage':<40} {'ms':>10} {'activations MiB':>16}")
    for label, ms, mib in rows:
        print(f"{label:<40} {ms:>10.1f} {mib:>16.1f}")
    print(f"weights: {weights / 2**20:.1f} MiB; peak: {(weights / 2**20) + max(r[2] for r in rows):.1f} MiB")


if __name__ == "__main__":
    main()
