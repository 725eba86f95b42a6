"""The shard check before any model loads: what it refuses, and what it must let through."""
import shutil

import pytest
from mmengine.config import Config

from diffengine.errors import ConfigError
from diffengine.tools.data_check import check_model_folders, check_shards


def config(shards, tiny_sd, weights=None, vae_encoder=False) -> Config:
    loader = dict(shards=shards, batch_size=2, resolution=32, num_workers=0, resampled=True)
    if weights is not None:
        loader["weights"] = weights
    return Config(dict(model=dict(vision_model=tiny_sd, vae_encoder=vae_encoder), train_dataloader=loader))


def test_an_unreadable_shard_among_latent_shards_is_left_to_the_loader(latent_shards, tiny_sd, tmp_path):
    for index in range(2):
        shutil.copy(latent_shards.replace("{00000..00003}", f"0000{index}"), tmp_path / f"0000{index}.tar")
    (tmp_path / "00002.tar").write_bytes(b"")  # the loader counts it as a tar error and reads on
    check_shards(config(f"{tmp_path}/{{00000..00002}}.tar", tiny_sd))


def test_a_source_of_weight_0_is_not_looked_at(latent_shards, demo_shards, tiny_sd):
    check_shards(config([latent_shards, demo_shards], tiny_sd, weights=[1.0, 0.0]))
    with pytest.raises(ConfigError, match="train_dataloader.shards mixes latent shards"):
        check_shards(config([latent_shards, demo_shards], tiny_sd, weights=[1.0, 1.0]))


def test_ranks_started_by_the_launcher_leave_the_scan_to_it(latent_shards, demo_shards, tiny_sd, monkeypatch):
    from diffengine.tools.launch import WORK_DIR_CHECKED_ENV

    monkeypatch.setenv(WORK_DIR_CHECKED_ENV, "1")
    check_shards(config([latent_shards, demo_shards], tiny_sd))


def test_a_tokenizer_or_vae_folder_is_checked_with_the_model_folders(tiny_t5, tiny_sd, tmp_path):
    (tmp_path / "empty").mkdir()
    stable_diffusion = dict(type="StableDiffusion", text_encoder=tiny_t5, vision_model=tiny_sd)
    check_model_folders(Config(dict(model=dict(**stable_diffusion, tokenizer=tiny_t5))))
    with pytest.raises(ConfigError, match=f"^model.tokenizer '{tmp_path}/no_tokenizer' does not exist"):
        check_model_folders(Config(dict(model=dict(**stable_diffusion, tokenizer=f"{tmp_path}/no_tokenizer"))))
    check_model_folders(Config(dict(model=dict(type="AutoencoderKLTrainer", vae=f"{tiny_sd}/vae"))))
    with pytest.raises(ConfigError, match=f"^model.vae {tmp_path}/empty has no config.json: an AutoencoderKL folder"):
        check_model_folders(Config(dict(model=dict(type="AutoencoderKLTrainer", vae=f"{tmp_path}/empty"))))
