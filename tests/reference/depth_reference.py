"""A tiny seeded Depth Anything (V2 layout: a DINOv2 backbone and the DPT neck and head) and
transformers' outputs for it, for darkroom-models' DepthAnything and the depth preprocessor.

Writes tests/fixtures/depth-anything/:
  model/config.json, model/model.safetensors   DepthAnythingForDepthEstimation as transformers
                                               saves it (weights rounded to f16, saved that way),
                                               with preprocessor_config.json (the Hub model's, at
                                               518 pixels)
  reference.safetensors   square_pixels [1, 3, 56, 56] (the 4x4 grid the positions were learned
                          at) and square_depth [1, 56, 56]; wide_pixels [1, 3, 70, 98] (a 5x7 grid:
                          positions interpolated) and wide_depth; odd_depth [61, 97], the depth of
                          odd.png (97x61) through DPTImageProcessor (PIL backend, 518 pixels,
                          aspect kept, multiples of 14) and post_process_depth_estimation back to
                          the image's size; odd_map [61, 97], that depth min-max scaled to
                          0..255 and truncated (the control map, white near); odd_input_size, the
                          processor's size (height, width); all f32

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/depth_reference.py
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "depth-anything"


def round_weights(model, seed):
    """Seeded weights rounded to f16: norm gains near 1, layer scales near 0.5 (so they matter),
    everything else scaled by the fan-in."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda1" in name:
                p.copy_((0.5 + 0.3 * torch.randn_like(p)).half().float())
            elif ("norm" in name) and name.endswith("weight") and p.ndim == 1:
                p.copy_((1 + 0.2 * torch.randn_like(p)).half().float())
            elif p.ndim >= 2:
                fan_in = p[0].numel() if "resize" not in name else p.shape[0]
                p.copy_((torch.randn_like(p) / max(1, fan_in) ** 0.5).half().float())
            else:
                p.copy_((0.1 * torch.randn_like(p)).half().float())
    return model.eval()


def main():
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=4, image_size=56,
        patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False, apply_layernorm=True,
        layer_norm_eps=1e-6,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
        neck_hidden_sizes=[8, 16, 24, 32], reassemble_factors=[4, 2, 1, 0.5], fusion_hidden_size=16,
        head_hidden_size=8, depth_estimation_type="relative",
    )
    model = round_weights(DepthAnythingForDepthEstimation(config), 191)
    (OUT / "model").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT / "model")
    state = load_file(OUT / "model" / "model.safetensors")
    save_file({k: v.half().contiguous() for k, v in state.items()}, OUT / "model" / "model.safetensors",
              metadata={"format": "pt"})
    print("\n".join(sorted(state)[:40]))
    model = DepthAnythingForDepthEstimation.from_pretrained(OUT / "model", dtype=torch.float32).eval()

    processor = DPTImageProcessorPil(
        do_resize=True, size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=Image.BICUBIC, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False,
    )
    processor.save_pretrained(OUT / "model")

    torch.manual_seed(192)
    square = torch.randn(1, 3, 56, 56)
    wide = torch.randn(1, 3, 70, 98)
    odd = Image.open(FIX / "clip-score" / "odd.png").convert("RGB")
    assert odd.size == (97, 61)
    inputs = processor(images=odd, return_tensors="pt").pixel_values
    with torch.no_grad():
        square_depth = model(pixel_values=square).predicted_depth
        wide_depth = model(pixel_values=wide).predicted_depth
        out = model(pixel_values=inputs)
    odd_depth = processor.post_process_depth_estimation(out, target_sizes=[(61, 97)])[0]["predicted_depth"]
    d = odd_depth.numpy().astype(np.float32)
    odd_map = ((d - d.min()) / (d.max() - d.min()) * 255.0).astype(np.uint8)
    Image.fromarray(odd_map).save(OUT / "odd-map.png")
    print("input", tuple(inputs.shape), "depth range", float(d.min()), float(d.max()))
    save_file({
        "square_pixels": square.contiguous(), "square_depth": square_depth.contiguous(),
        "wide_pixels": wide.contiguous(), "wide_depth": wide_depth.contiguous(),
        "odd_depth": odd_depth.float().contiguous(),
        "odd_map": torch.from_numpy(odd_map).float().contiguous(),
        "odd_input_size": torch.tensor(list(inputs.shape[2:]), dtype=torch.float32),
    }, OUT / "reference.safetensors")


if __name__ == "__main__":
    main()
