"""A tiny seeded CLIPModel (text and vision towers with their projections) and transformers'
outputs for it, for darkroom-models' CLIP vision tower and the CLIP score.

Writes tests/fixtures/clip-score/:
  model/config.json, model/model.safetensors   the CLIPModel as transformers saves it (weights
                                               rounded to f16 and saved that way)
  reference.safetensors   pixel_values [2, 3, 32, 32] (already CLIP-normalised), image_embeds,
                          input_ids [2, 77] (the fixture tokenizer, padded to 77), text_embeds,
                          and clip_score [2, 2] = 100 · max(cos(image i, text j), 0), torchmetrics'
                          definition; odd.png (97x61) preprocessed by CLIPImageProcessor at 224
                          (odd_224) and at the tiny model's 32 (odd_32); file_scores, the CLIP
                          scores of odd.png and images/astronaut.png for the first prompt through
                          the processor, and their sharpness (variance of OpenCV's Laplacian of the
                          grey image), and the scores of a seeded LAION-style aesthetic head
                          (aesthetic-head.pth, saved as its .pth is): what `darkroom score` prints;
  phash.json              imagehash's perceptual hashes of odd.png, the astronaut, the coffee and
                          near-astronaut.png (the astronaut shrunk and brightened: a near-duplicate)

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/clip_score_reference.py
"""

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer


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

    # CLIP's preprocessing on an odd-sized image, and the folder complete as a CLIP model
    # (processor and tokenizer beside the weights) for `darkroom score`.
    odd = Image.open(FIX / "images" / "coffee.png").convert("RGB").resize((97, 61), Image.LANCZOS)
    odd.save(OUT / "odd.png")
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(OUT / "model")
    tokenizer.save_pretrained(OUT / "model")
    full_size = CLIPImageProcessor()(images=odd, return_tensors="pt").pixel_values[0]
    tiny = processor(images=[odd, Image.open(FIX / "images" / "astronaut.png").convert("RGB")],
                     return_tensors="pt").pixel_values
    with torch.no_grad():
        files = features(model.get_image_features(pixel_values=tiny))
    files = files / files.norm(dim=-1, keepdim=True)
    file_scores = (100 * files @ txt[:1].T).clamp(min=0)[:, 0]
    print("file scores", file_scores.tolist())
    # The LAION aesthetic predictor v2's head (improved-aesthetic-predictor's MLP: linear layers
    # with dropouts between and no activation) at the tiny model's width, saved with torch.save
    # as its .pth is, scoring the L2-normalised image embeddings.
    torch.manual_seed(122)
    head = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 8), torch.nn.Dropout(0.2),
        torch.nn.Linear(8, 4), torch.nn.Dropout(0.1), torch.nn.Linear(4, 2), torch.nn.Linear(2, 1)).eval()
    wrapper = torch.nn.Module()
    wrapper.layers = head
    torch.save(wrapper.state_dict(), OUT / "aesthetic-head.pth")
    with torch.no_grad():
        aesthetic = head(files)[:, 0]
    print("aesthetic", aesthetic.tolist())

    # The cheap measures `darkroom score` prints beside it, as OpenCV computes them.
    import cv2
    sharp = []
    for im in [odd, Image.open(FIX / "images" / "astronaut.png").convert("RGB")]:
        grey = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2GRAY)
        sharp.append(cv2.Laplacian(grey, cv2.CV_64F).var())
    print("sharpness", sharp)
    # Perceptual hashes as the imagehash library computes them (`str(imagehash.phash(img))`), and
    # a near-duplicate: the astronaut shrunk and brightened a little.
    import json

    import imagehash
    near = Image.open(FIX / "images" / "astronaut.png").convert("RGB").resize((300, 300), Image.LANCZOS)
    near = Image.fromarray(np.clip(np.asarray(near).astype(np.int32) + 6, 0, 255).astype(np.uint8))
    near.save(OUT / "near-astronaut.png")
    hashes = {name: str(imagehash.phash(Image.open(path).convert("RGB"))) for name, path in [
        ("odd.png", OUT / "odd.png"), ("astronaut.png", FIX / "images" / "astronaut.png"),
        ("coffee.png", FIX / "images" / "coffee.png"), ("near-astronaut.png", OUT / "near-astronaut.png")]}
    (OUT / "phash.json").write_text(json.dumps(hashes, indent=1) + "\n")
    print("phash", hashes)
    save_file({"pixel_values": pixels, "image_embeds": image_embeds.contiguous(), "input_ids": ids.float(),
               "text_embeds": text_embeds.contiguous(), "clip_score": score.contiguous(),
               "odd_224": full_size.contiguous(), "odd_32": tiny[0].contiguous(),
               "file_scores": file_scores.contiguous(), "file_sharpness": torch.tensor(sharp).float(),
               "file_aesthetic": aesthetic.contiguous()},
              OUT / "reference.safetensors", metadata={"source": "tests/reference/clip_score_reference.py"})
    print("clip scores", score.tolist())


if __name__ == "__main__":
    main()
