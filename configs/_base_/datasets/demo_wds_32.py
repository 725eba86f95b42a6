from diffengine.datasets import build_wds_dataloader

# the synthetic shapes written by `diffengine demo` (4 shards of 128 images)
train_dataloader = dict(
    type=build_wds_dataloader,
    shards="data/demo/shards/{00000..00003}.tar",
    batch_size=8,
    resolution=32,
    num_samples_per_epoch=512,
    seed=0,  # the stream's seed: change it for another data order; resume reuses it
    resampled=False,
    num_workers=2,
    shuffle_buffer=256,
    center_crop=True,
    random_flip=False,
)
