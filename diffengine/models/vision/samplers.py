"""The samplers inference may use, by the names the CLI and configs give them."""
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# the CLI's choices are INFERENCE_SCHEDULER_NAMES (import-free, for --help); a test keeps the two equal
INFERENCE_SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "unipc": UniPCMultistepScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
    "ddpm": DDPMScheduler,
}


def inference_scheduler(name: str, training_config) -> SchedulerMixin:
    """The sampler ``name`` (``unipc``, ``ddim``, ``dpm``, ``ddpm``) built from a training schedule's config."""
    if name not in INFERENCE_SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(INFERENCE_SCHEDULERS)}, got '{name}'")
    return INFERENCE_SCHEDULERS[name].from_config(training_config)
