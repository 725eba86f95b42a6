"""Training from latent shards: the same loss as from the images, and without the VAE encoder."""
import json
from pathlib import Path

import pytest
import torch

from diffengine.datasets.latent_shards import first_latent_sample, vae_mismatch
from diffengine.entry_point import build_parser
from diffengine.models import LaViBridge
from diffengine.models.vision import batch_latents
from diffengine.tools.train import run
from tests.helpers import demo_cfg_options, fixed_batch, load, seeded_loss


def first_batch(tiny_bridge, shards: str) -> dict:
    """The loader's first batch of 4 (32 px, no flip), through the model's data preprocessor."""
    batch = next(iter(load(shards, batch_size=4, resolution=32, random_flip=False)))
    return tiny_bridge.data_preprocessor(batch)


def test_the_loss_from_a_latent_shard_equals_the_loss_from_its_image_shard(tiny_bridge, demo_shards,
                                                                           latent_shards):
    images, latents = first_batch(tiny_bridge, demo_shards), first_batch(tiny_bridge, latent_shards)
    assert images["data_samples"]["keys"] == latents["data_samples"]["keys"]
    # same random state: the same latent sample, noise and timesteps
    torch.manual_seed(3)
    from_pixels = batch_latents(tiny_bridge.vae, images["inputs"])
    torch.manual_seed(3)
    from_parameters = batch_latents(tiny_bridge.vae, latents["inputs"])
    torch.testing.assert_close(from_parameters, from_pixels, atol=1e-5, rtol=1e-5)
    loss = seeded_loss(tiny_bridge, images["inputs"])
    assert seeded_loss(tiny_bridge, latents["inputs"]) == pytest.approx(loss, rel=1e-5)
    assert seeded_loss(tiny_bridge, latents["inputs"], seed=8) != pytest.approx(loss, rel=1e-5)


def test_without_the_vae_encoder_pixels_are_refused_and_decoding_works(tiny_t5, tiny_sd, tmp_path):
    full = LaViBridge(tiny_t5, tiny_sd, max_length=16)
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, vae_encoder=False)
    assert model.vae.encoder is None and model.vae.quant_conv is None
    assert sum(p.numel() for p in model.vae.parameters()) < sum(p.numel() for p in full.vae.parameters())
    with pytest.raises(ValueError, match=r"vae_encoder=False and cannot encode a batch of pixels: train it "
                       r"from latent shards \(diffengine prep-latents\)"):
        model(fixed_batch())
    assert model.infer("a red circle", num_inference_steps=2, height=32, width=32)[0].size == (32, 32)
    # recorded in the bridge, rebuilt from it; export asks for the encoder back
    bridge = model.save_bridge(tmp_path / "bridge")
    assert json.loads((bridge / "bridge.json").read_text())["vae_encoder"] is False
    assert LaViBridge.from_bridge(bridge).vae.encoder is None
    assert LaViBridge.from_bridge(bridge, vae_encoder=True).vae.encoder is not None


@pytest.mark.slow
def test_a_bridge_without_vae_encoder_trains_from_latent_shards(tiny_t5, tiny_sd, latent_shards, tmp_path):
    options = [*demo_cfg_options(tiny_t5, tiny_sd, latent_shards, max_iters=2, checkpoint_interval=2),
               "model.vae_encoder=False", "train_dataloader.random_flip=True"]
    args = build_parser().parse_args(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path),
                                      "--cfg-options", *options])
    runner = run(args, wds=True)
    assert runner.iter == 2 and runner.model.vae.encoder is None
    assert torch.isfinite(torch.tensor(runner.message_hub.get_scalar("train/loss").current()))
    manifest = json.loads((tmp_path / "bridge" / "iter_2" / "bridge.json").read_text())
    assert manifest["vae_encoder"] is False
    assert (tmp_path / "samples" / "iter_2.png").is_file()  # sampling decodes without the encoder
    # flipping at random over latents without a flipped view: the run's log says they never flip
    log = next(tmp_path.glob("*/*.log")).read_text()
    assert "hold no flipped view (prep-latents without --flip): their samples are never flipped" in log


@pytest.mark.parametrize(("shards", "options", "warned"), [
    ("latent_shards", ["train_dataloader.random_flip=True"], True), ("latent_shards", [], False),
    ("flipped_latent_shards", ["train_dataloader.random_flip=True"], False),
    ("demo_shards", ["train_dataloader.random_flip=True", "model.vae_encoder=True"], False)])
def test_random_flip_over_latents_without_a_flipped_view_is_a_warning(request, tiny_t5, tiny_sd, tmp_path,
                                                                       shards, options, warned):
    from diffengine.tools.train import prepare_config

    shard_dir = request.getfixturevalue(shards)
    args = build_parser().parse_args(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--cfg-options",
                                      *demo_cfg_options(tiny_t5, tiny_sd, shard_dir), "model.vae_encoder=False",
                                      *options])
    _, warnings = prepare_config(args, wds=True)
    first = Path(shard_dir).parent / "00000.tar"
    assert warnings == ([f"train_dataloader.random_flip=True, but 4 latent shard(s) such as {first} "
                         "hold no flipped view (prep-latents without --flip): their samples are never flipped; "
                         "re-encode with --flip, or set random_flip=False"] if warned else [])


def test_latents_of_another_vae_with_as_many_channels_are_told_apart(flux_latent_shards, tiny_flux, tiny_sd3):
    # Flux's and SD3's VAEs both make 16 channels (the tiny ones 4): only their recorded factors
    # tell them apart
    record, parameters = first_latent_sample(flux_latent_shards.replace("{00000..00003}", "00000"))
    assert record["vae"] == f"{tiny_flux}/vae" and parameters.shape[0] == 2 * 4

    def vae_config(base_model: str) -> dict:
        return json.loads((Path(base_model) / "vae" / "config.json").read_text())

    assert vae_mismatch(record, parameters, vae_config(tiny_flux)) is None
    assert vae_mismatch(record, parameters, vae_config(tiny_sd3)) == (
        "scaling_factor 0.3611 vs 1.5305; shift_factor 0.1159 vs 0.0609")
    assert vae_mismatch({}, parameters[:2], vae_config(tiny_flux)) == "latent channels 1 vs 4"


def test_the_launcher_of_several_workers_says_the_shards_warnings(tiny_t5, tiny_sd, latent_shards, tmp_path,
                                                                   monkeypatch, capsys):
    from diffengine.entry_point import main

    # the workers do not check the shards again (checks_for_the_job): the launching process says it
    monkeypatch.setattr("diffengine.entry_point.launch_workers", lambda argv, nproc, report_errors=True: 0)
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    assert main(["wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path), "--cfg-options",
                 *demo_cfg_options(tiny_t5, tiny_sd, latent_shards), "model.vae_encoder=False",
                 "train_dataloader.random_flip=True"]) == 0
    assert "diffengine: warning: train_dataloader.random_flip=True, but 4 latent shard(s)" in capsys.readouterr().err


def test_latents_of_another_vae_are_refused_for_a_vision_model_named_by_hub_id(latent_shards, tiny_sd, monkeypatch):
    # every packaged LAION config names its vision model by hub id: its vae/config.json is read from
    # the hub (or its cache) as a local folder's is, so SD1.5 latents do not train SDXL silently
    from diffengine.errors import ConfigError
    from diffengine.tools.data_check import _check_latents_fit

    hub_id = "stabilityai/stable-diffusion-xl-base-1.0"
    sdxl_vae = {**json.loads((Path(tiny_sd) / "vae" / "config.json").read_text()), "scaling_factor": 0.13025}
    monkeypatch.setattr("diffengine.models.vision.families.load_diffusers_config",
                        lambda model, subfolder: sdxl_vae if (model, subfolder) == (hub_id, "vae") else None)
    record, parameters = first_latent_sample(latent_shards.replace("{00000..00003}", "00000"))
    with pytest.raises(ConfigError, match=r"model.vision_model's VAE differs \(scaling_factor 0.18\d* vs 0.13"):
        _check_latents_fit("00000.tar", record, parameters, {"vision_model": hub_id}, 32)
