"""Reference outputs for darkroom-models' CLIP text encoder, from transformers' CLIPTextModel.

Builds two tiny seeded text encoders in the layout Stable Diffusion checkpoints use:
  sd1: quick-GELU (as SD 1.x's ViT-L/14)
  sd2: exact GELU (as SD 2.x's OpenCLIP ViT-H, whose diffusers checkpoint drops the last layer:
       the "penultimate layer" convention lives in num_hidden_layers, not in code)
with the real vocabulary size, weights rounded to f16 and saved that way (small files; the
reference runs in f32 on exactly those values). Prompts are tokenized with the real CLIP
tokenizer (tests/fixtures/clip-tokenizer) and padded with <|endoftext|> to 77 tokens, as SD 1.x.

Writes tests/fixtures/clip/{sd1,sd2}/{config.json,model.safetensors,reference.safetensors}.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/clip_reference.py
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "",
    "portrait of a woman, (oil painting:1.2), dramatic lighting, 85mm",
    "a very long prompt " + "with many repeated words " * 20,
]

VARIANTS = {
    "sd1": dict(hidden_act="quick_gelu", num_hidden_layers=3, seed=1),
    "sd2": dict(hidden_act="gelu", num_hidden_layers=2, seed=2),
}


def build(hidden_act, num_hidden_layers, seed):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            # Larger than the default init so every layer matters, then rounded to f16.
            p.copy_((torch.randn_like(p) * 0.3).half().float())
    return config, model


def main():
    tokenizer = CLIPTokenizer.from_pretrained(FIXTURES / "clip-tokenizer")
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    for name, spec in VARIANTS.items():
        config, model = build(**spec)
        out_dir = FIXTURES / "clip" / name
        out_dir.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            hidden = model(ids).last_hidden_state
        state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
        save_file(state, out_dir / "model.safetensors")
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
        save_file(
            {"input_ids": ids.to(torch.int64).contiguous(), "last_hidden_state": hidden.contiguous()},
            out_dir / "reference.safetensors",
            metadata={"prompts": json.dumps(PROMPTS), "source": "tests/reference/clip_reference.py"},
        )
        print(name, "ids", tuple(ids.shape), "hidden", tuple(hidden.shape), "keys", len(state))


if __name__ == "__main__":
    main()
