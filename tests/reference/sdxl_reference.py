"""Reference images for SDXL in darkroom-pipeline and `darkroom generate`, from diffusers.

Builds tiny seeded SDXL folders in diffusers layout (weights rounded to f16 and saved that way):
  tests/fixtures/tiny-sdxl          two text encoders (CLIPTextModel, quick-GELU, and
                                    CLIPTextModelWithProjection, GELU, legacy eos_token_id 2 so
                                    the pooled row is the argmax of the ids, as SDXL's config),
                                    tokenizer_2 padding with "!", a UNet with
                                    addition_embed_type "text_time", per-block transformer depth
                                    [1, 2, 3] (no attention in the first block, as SDXL), the SD
                                    test VAE with SDXL's scaling factor, SDXL's Euler scheduler
                                    config and force_zeros_for_empty_prompt
  tests/fixtures/tiny-sdxl-inpaint  the same with a 9-channel UNet
loads each back with `from_pretrained`, and runs StableDiffusionXLPipeline / Img2Img / Inpaint
for every sampler, CFG on and off, an empty negative (zeros, as force_zeros_for_empty_prompt
says) and a written one, a non-square size, batch 2 (one generator per image), img2img and
inpainting with 4- and 9-channel UNets.

Also dumps module references to tests/fixtures/sdxl/modules.safetensors: the second text
encoder's penultimate hidden states and pooled projection for a few prompts, and the UNet's
output for given latents, timesteps, context, pooled text embeddings and time ids.

Writes tests/fixtures/sdxl/{cases.json, reference.safetensors, modules.safetensors} (init.png and
mask.png are tests/fixtures/pipeline's) and tests/fixtures/tiny-sdxl.toml (a download manifest).

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/sdxl_reference.py
"""

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_reference import MANIFEST_HEAD as SD_MANIFEST_HEAD  # noqa: E402
from pipeline_reference import PROMPT, SAMPLERS, write_manifest  # noqa: E402
from sd_reference import round_weights  # noqa: E402
from sizes_reference import outpaint_canvas  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "sdxl"
WIDTH, HEIGHT = 64, 48

# stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

CASES = [
    dict(name="euler_cfg_empty_negative", folder="tiny-sdxl", sampler="euler", steps=4, cfg=7.5, seed=1),
    dict(name="euler_a_negative", folder="tiny-sdxl", sampler="euler_a", steps=4, cfg=7.5, seed=2,
         negative="blurry, low quality"),
    dict(name="dpmpp_2m", folder="tiny-sdxl", sampler="dpmpp_2m", steps=5, cfg=5.0, seed=3, negative="ugly"),
    dict(name="dpmpp_2m_karras", folder="tiny-sdxl", sampler="dpmpp_2m_karras", steps=5, cfg=5.0, seed=4),
    dict(name="ddim", folder="tiny-sdxl", sampler="ddim", steps=4, cfg=7.5, seed=5, negative="ugly"),
    dict(name="lcm_no_cfg", folder="tiny-sdxl", sampler="lcm", steps=4, cfg=1.0, seed=6),
    dict(name="turbo_1_step", folder="tiny-sdxl", sampler="turbo", steps=1, cfg=0.0, seed=7),
    dict(name="euler_a_batch2", folder="tiny-sdxl", sampler="euler_a", steps=3, cfg=7.5, seed=8, batch=2,
         negative="ugly"),
    dict(name="square_euler", folder="tiny-sdxl", sampler="euler", steps=3, cfg=4.0, seed=9, width=48,
         height=48),
    dict(name="img2img_euler", folder="tiny-sdxl", mode="img2img", sampler="euler", steps=5, cfg=7.5, seed=12,
         strength=0.6),
    dict(name="img2img_dpmpp_2m", folder="tiny-sdxl", mode="img2img", sampler="dpmpp_2m", steps=6, cfg=7.5,
         seed=13, strength=0.5, negative="ugly"),
    dict(name="inpaint_4ch_euler_a", folder="tiny-sdxl", mode="inpaint", sampler="euler_a", steps=4, cfg=7.5,
         seed=14, strength=1.0),
    dict(name="inpaint_4ch_ddim_strength", folder="tiny-sdxl", mode="inpaint", sampler="ddim", steps=5, cfg=7.5,
         seed=15, strength=0.8),
    dict(name="inpaint_9ch_euler", folder="tiny-sdxl-inpaint", mode="inpaint", sampler="euler", steps=4,
         cfg=7.5, seed=16, strength=1.0),
    # Outpainting: inpainting on darkroom's extended canvas (tests/reference/sizes_reference.py).
    dict(name="outpaint_4ch_euler", folder="tiny-sdxl", mode="inpaint", sampler="euler", steps=4, cfg=7.5,
         seed=17, strength=1.0, width=80, height=48, outpaint=[0, 0, 16, 8], init="../sizes/source_64x40.png"),
    dict(name="outpaint_9ch_dpmpp_2m", folder="tiny-sdxl-inpaint", mode="inpaint", sampler="dpmpp_2m", steps=4,
         cfg=7.5, seed=18, strength=1.0, width=72, height=56, outpaint=[8, 16, 0, 0],
         init="../sizes/source_64x40.png"),
]

MODULE_PROMPTS = ["a photograph of an astronaut riding a horse", "", "red, green; blue!"]


def text_encoder_2():
    config = CLIPTextConfig(
        vocab_size=49408,
        # Wider than the first encoder (32): diffusers tells a single file's two encoders apart
        # by their width.
        hidden_size=40,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=24,
        # SDXL's text_encoder_2/config.json keeps the legacy ids: pooled row = argmax of the ids.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    model = CLIPTextModelWithProjection(config)
    # Embeddings at transformers' scale (0.02) would vanish next to the norms; keep them O(1).
    return round_weights(model, 50, 1.0)


def unet(in_channels, seed):
    model = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        norm_num_groups=32,
        cross_attention_dim=72,  # 32 + 40: both encoders' widths
        attention_head_dim=(2, 2, 4),
        transformer_layers_per_block=(1, 2, 3),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 24,
    )
    return round_weights(model, seed, 1.0)


def save_component(root, sub, model, weights_name):
    (root / sub).mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, root / sub / weights_name)
    model.save_config(root / sub) if hasattr(model, "save_config") else model.config.to_json_file(
        root / sub / "config.json")


def tokenizer(root, sub, pad):
    (root / sub).mkdir(parents=True)
    for f in ["vocab.json", "merges.txt"]:
        shutil.copyfile(FIX / "clip-tokenizer" / f, root / sub / f)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
               "unk_token": "<|endoftext|>"}
    (root / sub / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tok_config = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True,
                      errors="replace", add_prefix_space=False)
    (root / sub / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")


def assemble(name, te2, net):
    root = FIX / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "text_encoder").mkdir()
    shutil.copyfile(FIX / "clip/sd1/config.json", root / "text_encoder" / "config.json")
    shutil.copyfile(FIX / "clip/sd1/model.safetensors", root / "text_encoder" / "model.safetensors")
    save_component(root, "text_encoder_2", te2, "model.safetensors")
    tokenizer(root, "tokenizer", "<|endoftext|>")
    tokenizer(root, "tokenizer_2", "!")
    save_component(root, "unet", net, "diffusion_pytorch_model.safetensors")
    (root / "vae").mkdir()
    vae = json.loads((FIX / "sd/vae/config.json").read_text())
    vae.update(_class_name="AutoencoderKL", scaling_factor=0.13025, force_upcast=True)
    (root / "vae" / "config.json").write_text(json.dumps(vae, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(FIX / "sd/vae/model.safetensors", root / "vae" / "diffusion_pytorch_model.safetensors")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.19.0.dev0",
        "force_zeros_for_empty_prompt": True,
        "add_watermarker": None,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


# tiny-sd's manifest head, for the SDXL folder.
MANIFEST_HEAD = (SD_MANIFEST_HEAD
                 .replace("The tiny test model (tests/fixtures/tiny-sd) as a manifest, for download tests: the files are\n# served",
                          "The tiny SDXL test model (tests/fixtures/tiny-sdxl) as a manifest, for download tests: the\n# files are served")
                 .replace("pipeline_reference.py", "sdxl_reference.py")
                 .replace('"tiny-sd"', '"tiny-sdxl"').replace("Tiny SD (tests)", "Tiny SDXL (tests)")
                 .replace('family = "test"', 'family = "test-sdxl"').replace("SD 1.x layout", "SDXL layout")
                 .replace("darkroom/tiny-sd", "darkroom/tiny-sdxl"))


def modules(pipe):
    """The second encoder's penultimate states and pooled projection; the UNet with added conditions."""
    tensors = {}
    tok = pipe.tokenizer_2
    with torch.no_grad():
        for i, prompt in enumerate(MODULE_PROMPTS):
            ids = tok(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            out = pipe.text_encoder_2(ids, output_hidden_states=True)
            tensors[f"te2/{i}/ids"] = ids.float()
            tensors[f"te2/{i}/penultimate"] = out.hidden_states[-2]
            tensors[f"te2/{i}/pooled"] = out.text_embeds
        torch.manual_seed(60)
        sample = torch.randn(2, 4, 6, 8)
        context = torch.randn(2, 77, 72)
        text_embeds = torch.randn(2, 24)
        time_ids = torch.tensor([[48.0, 64.0, 0.0, 0.0, 48.0, 64.0], [1024.0, 768.0, 16.0, 8.0, 1024.0, 768.0]])
        timesteps = torch.tensor([999.0, 321.0])
        noise = pipe.unet(sample, timesteps, encoder_hidden_states=context,
                          added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
    tensors.update({"unet/sample": sample, "unet/context": context, "unet/text_embeds": text_embeds,
                    "unet/time_ids": time_ids, "unet/timesteps": timesteps, "unet/noise_pred": noise})
    return {k: v.contiguous() for k, v in tensors.items()}


def pipe_for(mode, components):
    cls = {"txt2img": StableDiffusionXLPipeline, "img2img": StableDiffusionXLImg2ImgPipeline,
           "inpaint": StableDiffusionXLInpaintPipeline}[mode]
    pipe = cls(**components, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(case, pipes, photo, mask):
    if "outpaint" in case:
        photo, mask = outpaint_canvas(Image.open(OUT / case["init"]).convert("RGB"), case["outpaint"])
    mode = case.get("mode", "txt2img")
    cls, overrides = SAMPLERS[case["sampler"]]
    base = pipes[case["folder"]]
    components = {k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")}
    components["scheduler"] = cls.from_config(base.scheduler.config, **overrides)
    pipe = pipe_for(mode, components)
    batch = case.get("batch", 1)
    width, height = case.get("width", WIDTH), case.get("height", HEIGHT)
    negative = case.get("negative")
    out = {}
    for kind in ["np", "latent"]:
        common = dict(
            prompt=[PROMPT] * batch,
            # No negative prompt: force_zeros_for_empty_prompt makes it zeros.
            negative_prompt=None if negative is None else [negative] * batch,
            num_inference_steps=case["steps"],
            guidance_scale=case["cfg"],
            output_type=kind,
            generator=[torch.Generator("cpu").manual_seed(case["seed"] + i) for i in range(batch)],
        )
        with torch.no_grad():
            if mode == "txt2img":
                result = pipe(height=height, width=width, **common)
            elif mode == "img2img":
                result = pipe(image=photo, strength=case["strength"], **common)
            else:
                result = pipe(image=photo, mask_image=mask, height=height, width=width,
                              strength=case["strength"], **common)
        images = result.images
        out[kind] = (images if kind == "latent" else torch.from_numpy(np.ascontiguousarray(images))).float()
    return out


def main():
    logging.disable(logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    te2 = text_encoder_2()
    assemble("tiny-sdxl", te2, unet(4, 70))
    assemble("tiny-sdxl-inpaint", te2, unet(9, 80))
    pipes = {name: StableDiffusionXLPipeline.from_pretrained(FIX / name, torch_dtype=torch.float32,
                                                             add_watermarker=False)
             for name in ["tiny-sdxl", "tiny-sdxl-inpaint"]}
    assert pipes["tiny-sdxl"].config.force_zeros_for_empty_prompt
    write_manifest("tiny-sdxl", MANIFEST_HEAD)
    save_file(modules(pipes["tiny-sdxl"]), OUT / "modules.safetensors",
              metadata={"source": "tests/reference/sdxl_reference.py"})

    photo = Image.open(FIX / "pipeline" / "init.png").convert("RGB")
    mask = Image.open(FIX / "pipeline" / "mask.png").convert("RGB")
    tensors, cases = {}, []
    for case in CASES:
        out = run(case, pipes, photo, mask)
        images = out["np"]
        tensors[case["name"] + "/image"] = images.contiguous()
        tensors[case["name"] + "/latents"] = out["latent"].contiguous()
        print(f"{case['name']:28s} {tuple(images.shape)} mean {images.mean():.3f} std {images.std():.3f} "
              f"latents std {out['latent'].std():.3f}")
        full = dict({"mode": "txt2img", "batch": 1, "prompt": PROMPT, "width": WIDTH, "height": HEIGHT,
                     "init": "../pipeline/init.png", "mask": "../pipeline/mask.png"}, **case)
        full["negative"] = case.get("negative", "")
        cases.append(full)
    save_file(tensors, OUT / "reference.safetensors", metadata={"source": "tests/reference/sdxl_reference.py"})
    (OUT / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    for name in ["tiny-sdxl", "tiny-sdxl-inpaint"]:
        size = sum(p.stat().st_size for p in (FIX / name).rglob("*") if p.is_file())
        print(name, f"{size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
