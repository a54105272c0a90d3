"""Scheduler tables from diffusers, for darkroom-pipeline's schedulers to match.

For SD 1.5's scheduler config (and SD-Turbo's trailing Euler), each scheduler's timesteps and,
where it has them, sigmas after set_timesteps(n) for several step counts, plus the training
alphas_cumprod. Writes tests/fixtures/schedulers.safetensors (f64) with the configs as metadata.

    HF_HUB_OFFLINE=1 .venv/bin/python tests/reference/scheduler_reference.py
"""

import json
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json (PNDM's), shared by the others
# through from_config, as pipelines do when a user switches sampler.
SD15 = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
# stabilityai/sd-turbo scheduler/scheduler_config.json
TURBO = {**SD15, "timestep_spacing": "trailing", "prediction_type": "epsilon"}

SCHEDULERS = {
    "euler": (EulerDiscreteScheduler, SD15),
    "euler_a": (EulerAncestralDiscreteScheduler, SD15),
    "dpmpp_2m": (DPMSolverMultistepScheduler, SD15),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {**SD15, "use_karras_sigmas": True}),
    "ddim": (DDIMScheduler, SD15),
    "lcm": (LCMScheduler, SD15),
    "turbo": (EulerDiscreteScheduler, TURBO),
}
STEPS = [1, 2, 4, 20, 25, 50]
# A scheduler_config.json's `timestep_spacing` (current diffusers writes "leading" into every SD
# 1.x config it saves) reaches whichever scheduler from_config builds: keys "<spacing>/<name>/…".
SPACINGS = ["linspace", "leading", "trailing"]
SPACED = ["euler", "euler_a", "dpmpp_2m", "ddim"]
SPACED_STEPS = [1, 3, 4, 7, 20, 30]


def main():
    tensors = {}
    for name, (cls, config) in SCHEDULERS.items():
        scheduler = cls.from_config(config)
        if name == "euler":
            tensors["alphas_cumprod"] = scheduler.alphas_cumprod.double()
        for steps in STEPS:
            scheduler.set_timesteps(steps)
            tensors[f"{name}/{steps}/timesteps"] = scheduler.timesteps.double()
            if hasattr(scheduler, "sigmas") and scheduler.sigmas is not None:
                tensors[f"{name}/{steps}/sigmas"] = torch.as_tensor(scheduler.sigmas).double()
    for spacing in SPACINGS:
        for name in SPACED:
            cls, config = SCHEDULERS[name]
            scheduler = cls.from_config({**config, "timestep_spacing": spacing})
            for steps in SPACED_STEPS:
                scheduler.set_timesteps(steps)
                tensors[f"{spacing}/{name}/{steps}/timesteps"] = scheduler.timesteps.double()
                if hasattr(scheduler, "sigmas") and scheduler.sigmas is not None:
                    tensors[f"{spacing}/{name}/{steps}/sigmas"] = torch.as_tensor(scheduler.sigmas).double()
    metadata = {"configs": json.dumps({k: dict(cls.from_config(c).config) for k, (cls, c) in SCHEDULERS.items()}, default=str)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, ROOT / "tests" / "fixtures" / "schedulers.safetensors", metadata=metadata)
    print(len(tensors), "tables")


if __name__ == "__main__":
    main()
