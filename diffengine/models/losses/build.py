"""The training objective a base model's ``scheduler/`` calls for."""
import inspect

from diffusers import FlowMatchEulerDiscreteScheduler

from ..vision.families import load_diffusers_config
from ..vision.samplers import schedule_kind
from .ddpm import DDPMObjective, ddpm_training_scheduler
from .flow_matching import FlowMatchingObjective
from .objective import TrainingObjective


def training_objective(vision_model: str, prediction_type: str | None = None,
                       snr_gamma: float | None = None,
                       flow_matching: dict | None = None) -> TrainingObjective:
    """Flow matching for a ``FlowMatchEulerDiscreteScheduler`` (SD3, Flux), else the DDPM objective.

    ``prediction_type`` and ``snr_gamma`` are DDPM options, ``flow_matching`` (a dict of
    ``FlowMatchingObjective``'s options) the flow one's; each is refused for the other kind.
    """
    config = load_diffusers_config(vision_model, "scheduler", "scheduler_config.json")
    if schedule_kind(config) == "flow_matching":
        given = [name for name, value in (("prediction_type", prediction_type), ("snr_gamma", snr_gamma))
                 if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to DDPM schedules; {vision_model} trains by flow "
                             "matching (FlowMatchEulerDiscreteScheduler): set flow_matching=dict(...) instead")
        options = dict(flow_matching or {})
        unknown = set(options) - (set(inspect.signature(FlowMatchingObjective).parameters) - {"scheduler"})
        if unknown:
            raise ValueError(f"flow_matching takes weighting_scheme, logit_mean, logit_std and mode_scale; "
                             f"unknown: {', '.join(sorted(unknown))}")
        return FlowMatchingObjective(FlowMatchEulerDiscreteScheduler.from_config(config), **options)
    if flow_matching is not None:
        raise ValueError(f"flow_matching applies to flow-matching schedules (SD3, Flux); {vision_model}'s "
                         f"scheduler is {config.get('_class_name')}: use prediction_type and snr_gamma")
    return DDPMObjective(ddpm_training_scheduler(vision_model, prediction_type), snr_gamma)
