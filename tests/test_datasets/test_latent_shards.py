"""The loader on latent shards: stored flipped views, refused mixes, a resolution mismatch."""
import pytest
import torch

from diffengine.datasets.collate import collate_batch
from tests.helpers import load


def batches(shards: str, **kwargs) -> dict[str, torch.Tensor]:
    """Every sample's tensor by key (pixels or latent parameters), 32 px, shuffle and flip seeded."""
    loader = load(shards, batch_size=4, resolution=32, **kwargs)
    return {key: tensor for batch in loader
            for key, tensor in zip(batch["data_samples"]["keys"], next(iter(batch["inputs"].values())), strict=True)}


def test_random_flip_takes_the_stored_flipped_view_when_the_image_would_flip(demo_shards, flipped_latent_shards,
                                                                             latent_shards):
    images, flipped_images = batches(demo_shards, random_flip=False), batches(demo_shards, random_flip=True)
    plain, drawn = batches(flipped_latent_shards, random_flip=False), batches(flipped_latent_shards, random_flip=True)
    image_flips = {key for key in images if not torch.equal(images[key], flipped_images[key])}
    latent_flips = {key for key in plain if not torch.equal(plain[key], drawn[key])}
    assert 16 < len(image_flips) < 48  # about half of 64
    assert latent_flips == image_flips  # the same draw: a sample flips alike from either kind of shard
    # without a stored flipped view there is nothing to flip to
    unflipped, stored = batches(latent_shards, random_flip=True), batches(latent_shards, random_flip=False)
    assert all(torch.equal(unflipped[key], stored[key]) for key in stored)


def test_a_batch_of_image_and_latent_samples_is_refused(demo_shards, latent_shards):
    image = {"pixel_values": torch.zeros(3, 2, 2, dtype=torch.uint8), "text": "a", "__key__": "i", "__position__": 1}
    latent = {"latent_parameters": torch.zeros(8, 1, 1), "text": "b", "__key__": "l", "__position__": 2}
    with pytest.raises(ValueError, match=r"a batch mixes 1 latent sample\(s\) \(prep-latents shards\) with 1 "
                       r"image sample\(s\)"):
        collate_batch([image, latent])
    mixed = [demo_shards.replace("{00000..00003}", "00000"), latent_shards.replace("{00000..00003}", "00001")]
    with pytest.raises(ValueError, match="a batch mixes"):
        list(load(mixed, batch_size=32, resolution=32))


def test_latent_shards_at_another_resolution_are_refused(latent_shards):
    with pytest.raises(ValueError, match=r"was encoded at 32 px but resolution is 64: set "
                       r"resolution=32"):
        next(iter(load(latent_shards, resolution=64)))
