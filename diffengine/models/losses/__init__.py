"""Training objectives: how latents are noised, what the denoiser predicts, and the loss."""
from .build import training_objective
from .ddpm import DDPMObjective, ddpm_training_scheduler
from .flow_matching import WEIGHTING_SCHEMES, FlowMatchingObjective
from .objective import NoisedLatents, TrainingObjective

__all__ = ["WEIGHTING_SCHEMES", "DDPMObjective", "FlowMatchingObjective", "NoisedLatents", "TrainingObjective",
           "ddpm_training_scheduler", "training_objective"]
