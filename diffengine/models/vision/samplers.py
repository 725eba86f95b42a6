"""The samplers inference may use, by the names the CLI and configs give them."""
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffengine.constants import INFERENCE_SCHEDULER_NAMES, MAX_SEED, PIXEL_MULTIPLE

from .families import load_diffusers_config

# the CLI's choices are INFERENCE_SCHEDULER_NAMES (import-free, for --help); a test keeps the two equal.
# Each kind of training schedule has its own samplers, the first being its default: unipc (as the
# paper) for DDPM schedules, and for flow-matching ones (SD3, Flux) the Euler sampler their
# diffusers pipelines ship
SAMPLERS_BY_SCHEDULE: dict[str, dict[str, type[SchedulerMixin]]] = {
    "ddpm": {"unipc": UniPCMultistepScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
             "ddpm": DDPMScheduler},
    "flow_matching": {"flow_euler": FlowMatchEulerDiscreteScheduler},
}
INFERENCE_SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    name: sampler for samplers in SAMPLERS_BY_SCHEDULE.values() for name, sampler in samplers.items()}


def schedule_kind(training_config) -> str:
    """``flow_matching`` for a ``FlowMatchEulerDiscreteScheduler`` training schedule, else ``ddpm``."""
    return ("flow_matching" if training_config.get("_class_name") == FlowMatchEulerDiscreteScheduler.__name__
            else "ddpm")


def inference_scheduler(name: str | None, training_config) -> SchedulerMixin:
    """The sampler ``name`` built from a training schedule's config; None: that schedule's default
    (``unipc`` for DDPM schedules, ``flow_euler`` for flow-matching ones)."""
    kind = schedule_kind(training_config)
    samplers = SAMPLERS_BY_SCHEDULE[kind]
    if name is None:
        name = next(iter(samplers))
    if name not in samplers:
        raise ValueError(f"scheduler {name!r} does not sample this model's {kind.replace('_', '-')} "
                         f"schedule: choose {', '.join(samplers)}")
    # from_config drops what the training config took by default (_use_default_values), and
    # a prediction_type set on such a config (a bridge's v_prediction on SD1.4, whose file names
    # none) would go with it: the sampler would denoise as epsilon
    explicit = {"prediction_type": training_config["prediction_type"]} if "prediction_type" in training_config else {}
    return samplers[name].from_config(training_config, **explicit)


def check_sampler(name: str | None, vision_model: str) -> None:
    """Raise ValueError when the sampler ``name`` cannot sample the training schedule of a local base
    model folder, read from its ``scheduler/`` config before any weights load."""
    if name is not None:
        inference_scheduler(name, load_diffusers_config(vision_model, "scheduler", "scheduler_config.json"))


def check_sampling_options(num_inference_steps: int = 1, guidance_scale: float = 0.0, height: int | None = None,
                           width: int | None = None, scheduler: str | None = None, seed: int | None = None,
                           negative_prompt: str | list[str] = "") -> None:
    """Raise ValueError for sampling options that a pipeline would refuse, or silently misuse, later."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        # torch.Generator's range: torch raises an overflow for more, and wraps -1 around silently
        raise ValueError(f"seed must be a whole number from 0 to 2**64 - 1 ({MAX_SEED}), got {seed!r}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if not guidance_scale >= 0:  # NaN too; a negative scale steers away from the prompt
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
    negatives = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
    if guidance_scale <= 1 and any(negatives):
        # every family's pipeline guides with the negative prompt only above 1, and drops it silently
        raise ValueError(f"negative_prompt is used only with guidance_scale > 1 (classifier-free guidance), "
                         f"got guidance_scale={guidance_scale}")
    for name, side in (("height", height), ("width", width)):
        if side is not None and (side < 1 or side % PIXEL_MULTIPLE):
            raise ValueError(f"{name} must be a positive multiple of {PIXEL_MULTIPLE} pixels, got {side}")
    if scheduler is not None and scheduler not in INFERENCE_SCHEDULER_NAMES:
        raise ValueError(f"scheduler must be one of {', '.join(INFERENCE_SCHEDULER_NAMES)} "
                         f"(or None: the model's default), got {scheduler!r}")
