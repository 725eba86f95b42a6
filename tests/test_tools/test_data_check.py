"""The shard check before any model loads: what it refuses, and what it must let through."""
import shutil

import pytest
from mmengine.config import Config

from diffengine.errors import ConfigError
from diffengine.tools.data_check import check_shards


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
