from diffengine.datasets import build_wds_dataloader

# LAION-style shards as img2dataset writes them; point `shards` at yours:
#   --cfg-options train_dataloader.shards='/data/laion/{00000..03400}.tar'
train_dataloader = dict(
    type=build_wds_dataloader,
    shards="data/laion/{00000..00099}.tar",
    batch_size=4,
    resolution=512,
    num_samples_per_epoch=1_000_000,
    seed=0,  # the stream's seed: change it for another data order; resume reuses it
    resampled=True,
    num_workers=8,
    shuffle_buffer=1000,
    center_crop=True,
    random_flip=True,
    persistent_workers=True,
    pin_memory=True,
)
