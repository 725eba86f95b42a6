"""The flow-matching objective of SD3 and Flux, as diffusers' training examples for them define it.

``x_t = (1 - sigma) x_0 + sigma noise`` at a sigma of the base model's
``FlowMatchEulerDiscreteScheduler`` (SD3's table is shifted by its ``shift=3``; Flux's, which
shifts per resolution at inference, is not), drawn by the SD3 paper's timestep densities; the
denoiser predicts the velocity ``noise - x_0``.

The examples' ``--precondition_outputs`` (an x_0 loss, on by default in the SD3 LoRA example,
absent from the Flux one) is not offered: it equals this loss weighted by sigma^2, which neither
the SD3 paper nor Flux trains with.
"""
import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from .objective import NoisedLatents, TrainingObjective

# diffusers' names: logit_normal and mode draw timesteps non-uniformly; sigma_sqrt and cosmap draw
# them uniformly and weight the loss instead; none is uniform and unweighted
WEIGHTING_SCHEMES = ("logit_normal", "mode", "none", "sigma_sqrt", "cosmap")
LOSS_WEIGHTED_SCHEMES = ("sigma_sqrt", "cosmap")
# the options each density reads (the other schemes read none) and their defaults: a changed option
# its scheme does not read would be ignored without a word
SCHEME_OPTIONS = {"logit_normal": ("logit_mean", "logit_std"), "mode": ("mode_scale",)}
DENSITY_DEFAULTS = {"logit_mean": 0.0, "logit_std": 1.0, "mode_scale": 1.29}
# the largest mode_scale whose density u = 1 - x - s (cos^2(pi x / 2) - 1 + x) stays monotonic in [0, 1]
MAX_MODE_SCALE = 2 / (math.pi - 2)


class FlowMatchingObjective(TrainingObjective):
    """Rectified flow over a ``FlowMatchEulerDiscreteScheduler``'s training table.

    Args:
        scheduler: the base model's training schedule (its ``timesteps`` and ``sigmas``).
        weighting_scheme: one of ``WEIGHTING_SCHEMES`` (SD3's example: ``logit_normal``; Flux's:
            ``none``).
        logit_mean, logit_std: the logit-normal density's parameters (SD3: 0 and 1).
        mode_scale: the ``mode`` density's scale (SD3: 1.29).
    """

    def __init__(self, scheduler: FlowMatchEulerDiscreteScheduler, weighting_scheme: str = "logit_normal",
                 logit_mean: float = DENSITY_DEFAULTS["logit_mean"], logit_std: float = DENSITY_DEFAULTS["logit_std"],
                 mode_scale: float = DENSITY_DEFAULTS["mode_scale"]):
        if weighting_scheme not in WEIGHTING_SCHEMES:
            raise ValueError(f"flow_matching.weighting_scheme must be one of {', '.join(WEIGHTING_SCHEMES)}, "
                             f"got {weighting_scheme!r}")
        density = {"logit_mean": logit_mean, "logit_std": logit_std, "mode_scale": mode_scale}
        read = SCHEME_OPTIONS.get(weighting_scheme, ())
        ignored = [f"{name}={value}" for name, value in density.items()
                   if name not in read and value != DENSITY_DEFAULTS[name]]
        if ignored:
            readers = "; ".join(f"{', '.join(names)}: {scheme}" for scheme, names in SCHEME_OPTIONS.items())
            raise ValueError(f"flow_matching.{', '.join(ignored)} would be ignored by weighting_scheme "
                             f"{weighting_scheme!r} (read only by {readers})")
        if not logit_std > 0:
            raise ValueError(f"flow_matching.logit_std must be > 0, got {logit_std!r}")
        if not -1.0 <= mode_scale <= MAX_MODE_SCALE:
            raise ValueError(f"flow_matching.mode_scale must be in [-1, {MAX_MODE_SCALE:.3f}] (beyond, the mode "
                             f"density leaves [0, 1]), got {mode_scale!r}")
        self.scheduler = scheduler
        # the training table as built, kept apart: set_timesteps on the scheduler replaces its own
        self._timesteps = scheduler.timesteps.clone()
        self._sigmas = scheduler.sigmas[:len(scheduler.timesteps)].clone()
        self.options = {"weighting_scheme": weighting_scheme, "logit_mean": float(logit_mean),
                        "logit_std": float(logit_std), "mode_scale": float(mode_scale)}
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The training table's (timesteps, sigmas), copied to ``device`` once rather than every step."""
        if device not in self._tables:
            self._tables[device] = (self._timesteps.to(device, torch.float32),
                                    self._sigmas.to(device, torch.float32))
        return self._tables[device]

    def timestep_indices(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Indices into the training table, drawn from the weighting scheme's density on ``device``."""
        options = self.options
        u = compute_density_for_timestep_sampling(options["weighting_scheme"], batch_size,
                                                  logit_mean=options["logit_mean"],
                                                  logit_std=options["logit_std"],
                                                  mode_scale=options["mode_scale"], device=device)
        steps = self.scheduler.config.num_train_timesteps
        # u = 1.0 (a logit-normal draw far in the tail rounds to it in float32, a mode draw of 0
        # maps to it) would index one past the table
        return (u * steps).long().clamp(0, steps - 1)

    def noised(self, latents: torch.Tensor) -> NoisedLatents:
        """Noise and timesteps drawn on the latents' device (no host sync)."""
        noise = torch.randn_like(latents)
        return self.noised_at(latents, noise, self.timestep_indices(latents.shape[0], latents.device))

    def noised_at(self, latents: torch.Tensor, noise: torch.Tensor, indices: torch.Tensor) -> NoisedLatents:
        """``latents`` noised with ``noise`` at the table's entries ``indices``; the target is the velocity."""
        timesteps, sigmas = self._table(latents.device)
        sigma = sigmas[indices]
        broadcast = sigma.view(-1, *[1] * (latents.ndim - 1)).to(latents.dtype)
        noisy = (1.0 - broadcast) * latents + broadcast * noise
        weights = (compute_loss_weighting_for_sd3(self.options["weighting_scheme"], sigma)
                   if self.options["weighting_scheme"] in LOSS_WEIGHTED_SCHEMES else None)
        return NoisedLatents(noisy, timesteps[indices], noise - latents, weights)

    def record(self) -> dict:
        """``flow_matching``: the weighting scheme and the options its density reads."""
        scheme = self.options["weighting_scheme"]
        return {"flow_matching": {"weighting_scheme": scheme,
                                  **{name: self.options[name] for name in SCHEME_OPTIONS.get(scheme, ())}}}
