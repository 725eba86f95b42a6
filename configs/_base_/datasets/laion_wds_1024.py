from mmengine.config import read_base

with read_base():
    from .laion_wds_512 import train_dataloader

# the 512 px LAION stream at SDXL's 1024 px; each batch also carries the images' original sizes
# (img2dataset's original_width / original_height) and crop offsets, SDXL's time ids. Download
# with img2dataset at --image_size 1024 (or larger) so the crops are not upscaled.
# batch_size 4 per GPU is an estimate (not measured): see configs/lavi_bridge/README.md
train_dataloader = dict(train_dataloader, resolution=1024, batch_size=4)
