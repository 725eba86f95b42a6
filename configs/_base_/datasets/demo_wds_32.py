from diffengine.datasets import build_wds_dataloader

# ShapesBench training images written by `diffengine demo` (2 shards of 1024, 32 px); no loader
# worker: on two CPU cores it only takes time from the step
train_dataloader = dict(
    type=build_wds_dataloader,
    shards="data/demo/shards/{00000..00001}.tar",
    batch_size=32,
    resolution=32,
    num_samples_per_epoch=2048,
    seed=0,  # the stream's seed: change it for another data order; resume reuses it
    resampled=False,
    num_workers=0,
    shuffle_buffer=1024,
    center_crop=True,
    random_flip=False,
)
