from mmengine.config import read_base

with read_base():
    from .laion_wds_512 import train_dataloader

# Latent shards that `diffengine prep-latents` wrote from the LAION image shards, at 512 px with
# the flipped view stored (--flip), so that random_flip still applies; there is no random crop
# (the images were center-cropped before encoding). A sample is a few kB of .npy instead of a JPEG
# to decode and resize, so fewer workers keep up:
#   diffengine prep-latents '/data/laion/{00000..03400}.tar' /data/laion_latents \
#       --vision-model stable-diffusion-v1-5/stable-diffusion-v1-5 --resolution 512 --flip
train_dataloader.update(shards="data/laion_latents/{00000..00099}.tar", num_workers=4)
