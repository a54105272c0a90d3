"""A tiny seeded CLIPModel (text and vision towers with their projections) and transformers'
outputs for it, for darkroom-models' CLIP vision tower and the CLIP score.

Writes tests/fixtures/clip-score/:
  model/config.json, model/model.safetensors   the CLIPModel as transformers saves it (weights
                                               rounded to f16 and saved that way)
  reference.safetensors   pixel_values [2, 3, 32, 32] (already CLIP-normalised), image_embeds,
                          input_ids [2, 77] (the fixture tokenizer, padded to 77), text_embeds,
                          and clip_score [2, 2] = 100 · max(cos(image i, text j), 0), torchmetrics'
                          definition

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/clip_score_reference.py
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer


ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "clip-score"
PROMPTS = ["a photograph of an astronaut riding a horse", "a bowl of red fruit"]


def round_weights(model, seed):
    """Seeded weights rounded to f16 (norm gains near 1; logit_scale, a scalar, as initialised)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 0:
                continue
            if name.endswith("weight") and p.ndim == 1:
                p.copy_((1 + 0.2 * torch.randn_like(p)).half().float())
            else:
                p.copy_((torch.randn_like(p) / max(1, p[0].numel()) ** 0.5).half().float())
    return model.eval()


def main():
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="quick_gelu"),
        projection_dim=16,
    )
    model = round_weights(CLIPModel(config), 139)
    (OUT / "model").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT / "model")
    # f16 on disk, as the other fixtures (the values are f16 already).
    from safetensors.torch import load_file
    state = load_file(OUT / "model" / "model.safetensors")
    save_file({k: v.half().contiguous() for k, v in state.items()}, OUT / "model" / "model.safetensors",
              metadata={"format": "pt"})
    model = CLIPModel.from_pretrained(OUT / "model", torch_dtype=torch.float32).eval()

    tokenizer = CLIPTokenizer.from_pretrained(FIX / "tiny-sd" / "tokenizer")
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    def features(out):
        return out if torch.is_tensor(out) else out.pooler_output

    with torch.no_grad():
        text_embeds = features(model.get_text_features(input_ids=ids))
        # Random images until the scores are not all clamped (some pairs agree, some do not).
        for seed in range(121, 200):
            torch.manual_seed(seed)
            pixels = torch.randn(2, 3, 32, 32)
            image_embeds = features(model.get_image_features(pixel_values=pixels))
            img = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
            txt = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
            cosine = img @ txt.T
            if (cosine > 0.05).any() and (cosine < 0).any():
                break
    score = (100 * cosine).clamp(min=0)
    save_file({"pixel_values": pixels, "image_embeds": image_embeds.contiguous(), "input_ids": ids.float(),
               "text_embeds": text_embeds.contiguous(), "clip_score": score.contiguous()},
              OUT / "reference.safetensors", metadata={"source": "tests/reference/clip_score_reference.py"})
    print("clip scores", score.tolist())


if __name__ == "__main__":
    main()
