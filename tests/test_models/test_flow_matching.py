"""The flow-matching objective (SD3, Flux) equals diffusers' training examples on a fixed batch.

The reference functions restate what ``examples/dreambooth/train_dreambooth_lora_sd3.py`` and
``train_dreambooth_lora_flux.py`` (diffusers 0.3x) do in their training step, from their own
scheduler copy: latents ``(sample - shift_factor) * scaling_factor``; ``u`` from
``compute_density_for_timestep_sampling``, ``timesteps = scheduler.timesteps[(u * 1000).long()]``;
sigma looked up by timestep; ``noisy = (1 - sigma) x0 + sigma noise``; the transformer called
as the example calls it; the loss ``mean(weighting * (pred - (noise - x0))^2)`` per sample, then
over the batch (the SD3 example with ``--precondition_outputs 0``, the Flux one as it is).
"""
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
)
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from diffengine.models import LaViBridge
from diffengine.models.losses import FlowMatchingObjective, training_objective
from diffengine.models.vision import VISION_FAMILIES, TextConditioning
from diffengine.models.vision.families import FLUX_DISTILLED_GUIDANCE
from diffengine.models.vision.latents import encode_latents

BATCH, TOKENS = 3, 5


def _example_sigmas(scheduler: FlowMatchEulerDiscreteScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """The examples' ``get_sigmas``: each timestep's sigma, found by value in the schedule."""
    indices = [(scheduler.timesteps == t).nonzero().item() for t in timesteps]
    return scheduler.sigmas[indices].flatten().view(-1, 1, 1, 1)


def _example_loss(prediction, noise, latents, sigmas, scheme):
    weighting = compute_loss_weighting_for_sd3(weighting_scheme=scheme, sigmas=sigmas)
    target = noise - latents
    return torch.mean((weighting.float() * (prediction.float() - target.float()) ** 2).reshape(
        target.shape[0], -1), 1).mean()


def _example_sd3_step(transformer, scheduler, latents, noise, indices, text, scheme):
    timesteps = scheduler.timesteps[indices]
    sigmas = _example_sigmas(scheduler, timesteps)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    prediction = transformer(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=text.context,
                             pooled_projections=text.pooled, return_dict=False)[0]
    return _example_loss(prediction, noise, latents, sigmas, scheme)


def _example_flux_step(transformer, scheduler, latents, noise, indices, text, scheme):
    batch, channels, height, width = latents.shape
    image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, latents.device,
                                                       latents.dtype)
    timesteps = scheduler.timesteps[indices]
    sigmas = _example_sigmas(scheduler, timesteps)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    packed = FluxPipeline._pack_latents(noisy, batch_size=batch, num_channels_latents=channels, height=height,
                                        width=width)
    guidance = torch.tensor([FLUX_DISTILLED_GUIDANCE]).expand(batch)
    prediction = transformer(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                             pooled_projections=text.pooled, encoder_hidden_states=text.context,
                             txt_ids=torch.zeros(text.context.shape[1], 3), img_ids=image_ids,
                             return_dict=False)[0]
    # the example unpacks with the pixel size and the VAE's scale (2 for the tiny VAE)
    prediction = FluxPipeline._unpack_latents(prediction, height=height * 2, width=width * 2, vae_scale_factor=2)
    return _example_loss(prediction, noise, latents, sigmas, scheme)


FAMILIES = {"sd3": (SD3Transformer2DModel, _example_sd3_step), "flux": (FluxTransformer2DModel, _example_flux_step)}


@pytest.fixture
def base_models(tiny_sd3, tiny_flux):
    return {"sd3": tiny_sd3, "flux": tiny_flux}


@pytest.mark.parametrize("scheme", ["logit_normal", "none", "cosmap"])
@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_the_loss_equals_the_diffusers_examples_on_a_fixed_batch(base_models, name, scheme):
    vision_model = base_models[name]
    model_class, example_step = FAMILIES[name]
    transformer = model_class.from_pretrained(vision_model, subfolder="transformer")
    example_scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(vision_model, subfolder="scheduler")
    objective = training_objective(vision_model, flow_matching=dict(weighting_scheme=scheme))
    generator = torch.Generator().manual_seed(1)
    latents, noise = (torch.randn(BATCH, 4, 8, 8, generator=generator) for _ in range(2))
    text = TextConditioning(torch.randn(BATCH, TOKENS, 32, generator=generator), torch.ones(BATCH, TOKENS),
                            torch.randn(BATCH, 16, generator=generator))
    # the same density draws: our indices on the host equal the example's with the same seed
    torch.manual_seed(5)
    indices = objective.timestep_indices(BATCH, torch.device("cpu"))
    torch.manual_seed(5)
    u = compute_density_for_timestep_sampling(scheme, BATCH, logit_mean=0.0, logit_std=1.0, mode_scale=1.29)
    assert torch.equal(indices, (u * 1000).long())
    with torch.no_grad():
        noised = objective.noised_at(latents, noise, indices)
        ours = objective.loss(VISION_FAMILIES[name].predict(transformer, noised.noisy, noised.timesteps, text),
                              noised)
        reference = example_step(transformer, example_scheduler, latents, noise, indices, text, scheme)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=0)
    # the comparison can fail: the example at other timesteps gives another loss
    with torch.no_grad():
        other = example_step(transformer, example_scheduler, latents, noise, (indices + 300) % 1000, text, scheme)
    assert not torch.isclose(other, reference, rtol=1e-3)


def test_sd3_samples_the_shifted_table_and_flux_the_plain_one(tiny_sd3, tiny_flux):
    sd3, flux = (training_objective(path) for path in (tiny_sd3, tiny_flux))
    middle = torch.tensor([500])
    sd3.scheduler.set_timesteps(4)  # an inference schedule set on it leaves the training table alone
    # shift 3: sigma = 3 s / (1 + 2 s) at s = 0.5 -> 0.75; Flux shifts per resolution at inference only
    assert sd3.noised_at(torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), middle).noisy.mean().item() == \
        pytest.approx(0.75, abs=1e-3)
    assert flux.noised_at(torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), middle).noisy.mean().item() == \
        pytest.approx(0.5, abs=1e-3)
    # the logit-normal density: its indices concentrate around the middle of the table
    torch.manual_seed(0)
    indices = sd3.timestep_indices(4096, torch.device("cpu")).float()
    assert 450 < indices.mean() < 550 and indices.std() < 250
    assert indices.min() >= 0 and indices.max() <= 999


def test_latents_are_shifted_then_scaled_as_the_examples_do(tiny_sd3):
    vae = AutoencoderKL.from_pretrained(tiny_sd3, subfolder="vae")
    assert vae.config.shift_factor is not None
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.manual_seed(3)
    ours = encode_latents(vae, pixels)
    torch.manual_seed(3)
    with torch.no_grad():
        example = (vae.encode(pixels).latent_dist.sample() - vae.config.shift_factor) * vae.config.scaling_factor
    torch.testing.assert_close(ours, example)


def test_options_of_the_other_objective_are_refused_in_one_line(tiny_sd, tiny_sd3, tiny_t5):
    for kwargs, match in ((dict(prediction_type="epsilon"), "prediction_type apply to DDPM schedules"),
                          (dict(snr_gamma=5.0), "snr_gamma apply to DDPM schedules"),
                          (dict(flow_matching=dict(weighting_scheme="uniform")), "weighting_scheme must be one of"),
                          (dict(flow_matching=dict(shift=2.0)), "unknown: shift"),
                          (dict(flow_matching=dict(weighting_scheme="mode", mode_scale=2.0)),
                           r"mode_scale must be in \[-1, 1.752\]"),
                          # an option the scheme's density does not read, changed: ignored before
                          (dict(flow_matching=dict(weighting_scheme="cosmap", logit_std=2.0, mode_scale=1.0)),
                           r"^flow_matching.logit_std=2.0, mode_scale=1.0 would be ignored by weighting_scheme "
                           r"'cosmap' \(read only by logit_mean, logit_std: logit_normal; mode_scale: mode\)$"),
                          (dict(flow_matching=dict(weighting_scheme="mode", logit_mean=0.5)),
                           "logit_mean=0.5 would be ignored by weighting_scheme 'mode'")):
        with pytest.raises(ValueError, match=match) as error:
            LaViBridge(tiny_t5, tiny_sd3, **kwargs)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="flow_matching applies to flow-matching schedules"):
        training_objective(tiny_sd, flow_matching={})
    assert isinstance(training_objective(tiny_sd3), FlowMatchingObjective)


@pytest.mark.parametrize(("scheme", "read"), [("logit_normal", {"logit_mean": 0.3, "logit_std": 0.8}),
                                              ("mode", {"mode_scale": 1.0}), ("cosmap", {})])
def test_a_bridge_records_the_options_its_scheme_reads_and_rebuilds_from_them(tiny_sd3, scheme, read):
    objective = training_objective(tiny_sd3, flow_matching=dict(weighting_scheme=scheme, **read))
    record = objective.record()
    assert record == {"flow_matching": {"weighting_scheme": scheme, **read}}
    assert training_objective(tiny_sd3, flow_matching=record["flow_matching"]).options == objective.options
