"""Reference outputs for darkroom-models' UNet and VAE, from diffusers on tiny seeded models.

Builds, in diffusers layout, with weights rounded to f16 and saved that way:
  vae          AutoencoderKL, 4 blocks so the scale factor stays 8 (SD 1.x/2.x shape)
  unet_sd1     UNet2DConditionModel, SD 1.x style: conv proj_in/out, one head count for all blocks
  unet_sd2     SD 2.x style: linear proj_in/out, per-block head counts (v-prediction is the
               scheduler's business; the UNet is the same network)
  unet_inpaint SD 1.x inpainting: 9 input channels (latents, mask, masked-image latents)
and dumps each module's inputs and outputs (decode and encode for the VAE; noise predictions
for given latents, timesteps and text embeddings for the UNets) to reference.safetensors.

Writes tests/fixtures/sd/<name>/{config.json,model.safetensors,reference.safetensors}.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/sd_reference.py
"""

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "sd"


def round_weights(model, seed, scale):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:  # norm gains stay near 1
                p.copy_((1 + 0.2 * torch.randn_like(p)).half().float())
            else:
                p.copy_((scale * torch.randn_like(p) / max(1, p[0].numel()) ** 0.5).half().float())
    return model.eval()


def save(name, model, tensors):
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(dict(model.config), indent=2, sort_keys=True, default=str))
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, out / "reference.safetensors")
    print(name, {k: tuple(v.shape) for k, v in tensors.items()})


def vae():
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.18215,
    )
    round_weights(model, 10, 1.0)
    torch.manual_seed(11)
    image = torch.rand(1, 3, 32, 40) * 2 - 1
    latents = torch.randn(1, 4, 4, 5)
    with torch.no_grad():
        moments = model.quant_conv(model.encoder(image))  # [1, 8, 4, 5]: mean, logvar
        decoded = model.decode(latents).sample
    save("vae", model, {"image": image, "moments": moments, "latents": latents, "decoded": decoded})


def unet(name, seed, in_channels, **kwargs):
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        norm_num_groups=32,
        cross_attention_dim=32,
        **kwargs,
    )
    round_weights(model, seed, 1.0)
    torch.manual_seed(seed + 1)
    sample = torch.randn(2, in_channels, 8, 8)
    context = torch.randn(2, 77, 32)
    timesteps = torch.tensor([999.0, 321.0])
    with torch.no_grad():
        noise = model(sample, timesteps, encoder_hidden_states=context).sample
    save(name, model, {"sample": sample, "timesteps": timesteps, "encoder_hidden_states": context, "noise_pred": noise})


def main():
    vae()
    unet("unet_sd1", 20, 4, attention_head_dim=8)
    unet("unet_sd2", 30, 4, attention_head_dim=(2, 4), use_linear_projection=True)
    unet("unet_inpaint", 40, 9, attention_head_dim=8)


if __name__ == "__main__":
    main()
