"""Data loading: webdataset shards of image-caption pairs, image transforms and a shard writer."""
from .shard_writer import samples_from_annotation_file, samples_from_image_folder, write_wds_shards
from .skip_accounting import get_skip_counts
from .transforms import ImageTransform
from .wds_loader import build_wds_dataloader

__all__ = [
    "ImageTransform",
    "build_wds_dataloader",
    "get_skip_counts",
    "samples_from_annotation_file",
    "samples_from_image_folder",
    "write_wds_shards",
]
