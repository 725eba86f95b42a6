from diffengine.datasets import build_wds_dataloader

# ShapesBench training shards written by `diffengine shapesbench` (diffengine/tools/shapes_assets.py)
train_dataloader = dict(
    type=build_wds_dataloader,
    shards="data/shapes/shards/{00000..00009}.tar",
    batch_size=64,
    resolution=32,
    num_samples_per_epoch=20480,
    seed=0,  # the stream's seed: change it for another data order; resume reuses it
    resampled=False,
    num_workers=1,
    shuffle_buffer=2048,
    center_crop=True,
    random_flip=False,
)
