"""Models, inputs and PyTorch outputs for the onnxruntime-web comparison (`cargo xtask bench`).

For each benchmark model this writes, under OUT/<name>/:
  - the diffusers folders our engine loads (text_encoder/, unet/, vae/: config.json + f32 safetensors),
  - the same modules exported to ONNX (opset 17, TorchScript exporter) for onnxruntime-web,
  - seeded inputs and PyTorch's outputs as raw little-endian arrays (*.bin),
and OUT/bench.json describing them. Both engines get the same weights and the same inputs, and
both outputs are compared with PyTorch's, so a ratio is never taken against a broken run.

Models:
  tiny-sd     the committed tiny test pipeline (tests/fixtures/tiny-sd)
  sd15-slice  SD 1.5's real layer widths (320/640 channels, 8 heads, 768-wide context; CLIP
              ViT-L width with 2 of its 12 layers; the SD VAE decoder) with seeded weights,
              at a small latent so a software adapter finishes

Usage: HF_HUB_OFFLINE=1 .venv/bin/python tests/bench/export.py OUT [--latent 16]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def save_bin(path, tensor):
    array = tensor.detach().cpu().numpy()
    array = array.astype(np.int32 if array.dtype.kind in "iu" else np.float32)
    array.tofile(path)
    return {"file": os.path.basename(path), "shape": list(array.shape), "type": "int32" if array.dtype == np.int32 else "float32"}


class UNetOnnx(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class DecoderOnnx(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


class TextOnnx(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids):
        return self.clip(input_ids.long(), return_dict=False)[0]


def export(module, inputs, names, path):
    torch.onnx.export(
        module,
        tuple(inputs),
        path,
        input_names=names,
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )


def write_model(out, name, clip, unet, vae, batch, latent, image_latent, seed):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    clip.save_pretrained(os.path.join(folder, "text_encoder"), safe_serialization=True)
    unet.save_pretrained(os.path.join(folder, "unet"), safe_serialization=True)
    vae.save_pretrained(os.path.join(folder, "vae"), safe_serialization=True)

    g = torch.Generator().manual_seed(seed)
    vocab = clip.config.vocab_size
    ids = torch.randint(0, vocab, (batch, 77), generator=g, dtype=torch.int64)
    ids[:, 0] = min(49406, vocab - 2)
    sample = torch.randn(batch, unet.config.in_channels, latent, latent, generator=g)
    timestep = torch.full((batch,), 500.0)
    latents = torch.randn(1, vae.config.latent_channels, image_latent, image_latent, generator=g)

    components = []
    with torch.no_grad():
        text = clip(ids, return_dict=False)[0]
        export(TextOnnx(clip), [ids.to(torch.int32)], ["input_ids"], os.path.join(folder, "text_encoder.onnx"))
        components.append({
            "component": "text_encoder",
            "label": f"text encode (batch {batch}, 77 tokens)",
            "onnx": "text_encoder.onnx",
            "inputs": {"input_ids": save_bin(os.path.join(folder, "in_ids.bin"), ids.to(torch.int32))},
            "output": save_bin(os.path.join(folder, "out_text.bin"), text),
        })

        context = text
        noise = unet(sample, timestep, context, return_dict=False)[0]
        export(UNetOnnx(unet), [sample, timestep, context], ["sample", "timestep", "encoder_hidden_states"],
               os.path.join(folder, "unet.onnx"))
        components.append({
            "component": "unet",
            "label": f"UNet step (batch {batch}, {latent}x{latent} latents)",
            "onnx": "unet.onnx",
            "inputs": {
                "sample": save_bin(os.path.join(folder, "in_sample.bin"), sample),
                "timestep": save_bin(os.path.join(folder, "in_timestep.bin"), timestep),
                "encoder_hidden_states": save_bin(os.path.join(folder, "in_context.bin"), context),
            },
            "output": save_bin(os.path.join(folder, "out_unet.bin"), noise),
        })

        image = vae.decode(latents, return_dict=False)[0]
        export(DecoderOnnx(vae), [latents], ["latents"], os.path.join(folder, "vae_decoder.onnx"))
        side = image.shape[-1]
        components.append({
            "component": "vae_decoder",
            "label": f"VAE decode ({side}x{side} px)",
            "onnx": "vae_decoder.onnx",
            "inputs": {"latents": save_bin(os.path.join(folder, "in_latents.bin"), latents)},
            "output": save_bin(os.path.join(folder, "out_image.bin"), image),
        })
    params = sum(p.numel() for m in (clip, unet, vae) for p in m.parameters())
    return {"name": name, "parameters": params, "components": components}


def tiny_sd():
    base = os.path.join(ROOT, "tests", "fixtures", "tiny-sd")
    clip = CLIPTextModel.from_pretrained(os.path.join(base, "text_encoder")).float().eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(base, "unet")).float().eval()
    vae = AutoencoderKL.from_pretrained(os.path.join(base, "vae")).float().eval()
    return clip, unet, vae


def sd15_slice(seed):
    torch.manual_seed(seed)
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=2,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    )).eval()
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=768,
        attention_head_dim=8,
    ).eval()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    ).eval()
    return clip, unet, vae


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--latent", type=int, default=16, help="the slice's UNet latent side")
    parser.add_argument("--only", default=None, help="one model name")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = []
    if args.only in (None, "tiny-sd"):
        models.append(write_model(args.out, "tiny-sd", *tiny_sd(), batch=2, latent=8, image_latent=8, seed=1))
    if args.only in (None, "sd15-slice"):
        models.append(write_model(args.out, "sd15-slice", *sd15_slice(2), batch=2, latent=args.latent,
                                  image_latent=8, seed=3))
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump({"torch": torch.__version__, "models": models}, f, indent=1)
    for m in models:
        print(f"{m['name']}: {m['parameters'] / 1e6:.1f} M parameters")


if __name__ == "__main__":
    sys.exit(main())
