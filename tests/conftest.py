"""Session-wide tiny models, built from configs and saved with save_pretrained (no hub access)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (still part of the README test command)")
    if config.option.durations is None:  # every run (CI's too) ends with where the time went
        config.option.durations = 15


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_t5
    return str(make_tiny_t5(tmp_path_factory.mktemp("t5")))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_llama
    return str(make_tiny_llama(tmp_path_factory.mktemp("llama")))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_bert
    return str(make_tiny_bert(tmp_path_factory.mktemp("bert")))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_sd
    return str(make_tiny_sd(tmp_path_factory.mktemp("sd")))


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory):
    """64 ShapesBench training images in 4 webdataset shards; returns the brace pattern."""
    from diffengine.datasets import write_wds_shards
    from diffengine.datasets.shapes import shape_samples
    out = tmp_path_factory.mktemp("shards")
    write_wds_shards(shape_samples(64, 32), out, maxcount=16, image_format="png", progress=False)
    return f"{out}/{{00000..00003}}.tar"


@pytest.fixture
def tiny_bridge(tiny_t5, tiny_sd):
    """A LaViBridge on tiny T5 + tiny SD with LoRA dropout off (T5 and adapter dropout stay on in train mode)."""
    from diffengine.models import LaViBridge
    return LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=dict(rank=4, dropout=0.0),
                      vision_lora=dict(rank=4, dropout=0.0))


@pytest.fixture
def bridge_dir(tiny_bridge, tmp_path):
    """A bridge folder of ``tiny_bridge`` with randomly perturbed (so non-trivial) bridge weights."""
    import torch
    with torch.no_grad():
        for p in tiny_bridge.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return tiny_bridge.save_bridge(tmp_path / "bridge", iteration=1)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_sdxl
    return str(make_tiny_sdxl(tmp_path_factory.mktemp("sdxl")))


@pytest.fixture(scope="session")
def tiny_pixart(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_pixart
    return str(make_tiny_pixart(tmp_path_factory.mktemp("pixart")))


def _prep_latents(tmp_path_factory, tiny_sd, demo_shards, *options):
    """``diffengine prep-latents`` of the demo shards with tiny_sd's VAE; returns the brace pattern."""
    from diffengine.entry_point import main
    out = tmp_path_factory.mktemp("latents")
    assert main(["prep-latents", demo_shards, str(out), "--vision-model", tiny_sd, "--resolution", "32",
                 "--batch-size", "5", "--no-progress", *options]) == 0
    return f"{out}/{{00000..00003}}.tar"


@pytest.fixture(scope="session")
def latent_shards(tmp_path_factory, tiny_sd, demo_shards):
    """The demo shards encoded by tiny_sd's VAE at 32 px (no flipped view)."""
    return _prep_latents(tmp_path_factory, tiny_sd, demo_shards)


@pytest.fixture(scope="session")
def flipped_latent_shards(tmp_path_factory, tiny_sd, demo_shards):
    """As ``latent_shards``, with the flipped view stored too (``--flip``)."""
    return _prep_latents(tmp_path_factory, tiny_sd, demo_shards, "--flip")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_sd3
    return str(make_tiny_sd3(tmp_path_factory.mktemp("sd3")))


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    from diffengine.tools.demo_assets import make_tiny_flux
    return str(make_tiny_flux(tmp_path_factory.mktemp("flux")))


@pytest.fixture(scope="session")
def flux_latent_shards(tmp_path_factory, tiny_flux, demo_shards):
    """The demo shards encoded by tiny_flux's VAE (which has a shift factor) at 32 px."""
    return _prep_latents(tmp_path_factory, tiny_flux, demo_shards)


@pytest.fixture
def disk_events(monkeypatch):
    """("fsync", path) and ("replace", source, target), in the order they happen."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", os.path.realpath(source), os.path.realpath(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events

