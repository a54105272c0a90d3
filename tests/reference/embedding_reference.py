"""Textual-inversion embeddings for the tiny SD and SDXL models, and diffusers' images with them.

Writes tests/fixtures/embeddings/:
  tinystyle.safetensors   A1111 layout: emb_params [2, 32] (SD 1.x, the tiny CLIP's width)
  badthing.pt             A1111's torch.save layout: string_to_param {"*": Parameter [3, 32]},
                          string_to_token, name, step, sd_checkpoint (read by the safe .pt reader)
  xlstyle.safetensors     SDXL layout: clip_l [2, 32] and clip_g [2, 40] (the tiny encoders' widths)
  cases.json, reference.safetensors   diffusers' images: each embedding loaded with
                          `load_textual_inversion(…, token=<file name>)` (SDXL: clip_l into the
                          first encoder and tokenizer, clip_g into the second), its name written
                          in the prompt or the negative prompt

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/embedding_reference.py
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "embeddings"
WIDTH, HEIGHT = 64, 48

CASES = [
    dict(name="sd_prompt", folder="tiny-sd", prompt="a photograph of an astronaut riding a horse, tinystyle",
         negative="", seed=5, embeddings=["tinystyle.safetensors"]),
    dict(name="sd_negative_pt", folder="tiny-sd", prompt="a photograph of an astronaut riding a horse",
         negative="ugly, badthing", seed=6, embeddings=["badthing.pt", "tinystyle.safetensors"]),
    dict(name="sdxl_prompt", folder="tiny-sdxl", prompt="xlstyle, a photograph of an astronaut riding a horse",
         negative="blurry", seed=7, embeddings=["xlstyle.safetensors"]),
]


def vectors(generator, n, width):
    # Near the scale of the tiny encoders' token embeddings, rounded to f16 as shared files are.
    return (torch.randn(n, width, generator=generator) * 1.0).half().float()


def write_files():
    g = torch.Generator().manual_seed(90)
    save_file({"emb_params": vectors(g, 2, 32)}, OUT / "tinystyle.safetensors")
    param = torch.nn.Parameter(vectors(g, 3, 32))
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": param}, "name": "badthing", "step": 1500,
                "sd_checkpoint": "a9263745", "sd_checkpoint_name": "v1-5-pruned"}, OUT / "badthing.pt")
    save_file({"clip_l": vectors(g, 2, 32), "clip_g": vectors(g, 2, 40)}, OUT / "xlstyle.safetensors")


def load(pipe, file):
    token = Path(file).stem
    path = OUT / file
    if isinstance(pipe, StableDiffusionXLPipeline):
        state = load_file(path)
        pipe.load_textual_inversion(state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
    else:
        pipe.load_textual_inversion(path, token=token)


def main():
    logging.disable(logging.WARNING)
    OUT.mkdir(exist_ok=True)
    write_files()
    images, cases = {}, []
    for case in CASES:
        if case["folder"] == "tiny-sdxl":
            pipe = StableDiffusionXLPipeline.from_pretrained(FIX / "tiny-sdxl", torch_dtype=torch.float32,
                                                             add_watermarker=False)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(FIX / "tiny-sd", torch_dtype=torch.float32,
                                                           safety_checker=None)
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        for file in case["embeddings"]:
            load(pipe, file)
        def run(prompt, negative, output_type):
            return pipe(prompt, negative_prompt=negative, num_inference_steps=3, guidance_scale=7.0, width=WIDTH,
                        height=HEIGHT, generator=torch.Generator("cpu").manual_seed(case["seed"]),
                        output_type=output_type).images

        image = run(case["prompt"], case["negative"], "np")
        images[case["name"]] = torch.from_numpy(np.ascontiguousarray(image)).float()
        # The tiny models' pixels barely follow the prompt; the latents do.
        images[case["name"] + "/latents"] = run(case["prompt"], case["negative"], "latent").float().contiguous()
        cases.append(dict(case, steps=3, cfg=7.0, sampler="euler", width=WIDTH, height=HEIGHT))
        print(case["name"], tuple(image.shape), float(image.mean()))
    save_file(images, OUT / "reference.safetensors", metadata={"source": "tests/reference/embedding_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    main()
