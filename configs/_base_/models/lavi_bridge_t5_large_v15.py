from diffengine.models import LaViBridge

# T5-Large + SD1.5 UNet, the paper's first combination (the paper used SD1.4: set
# model.vision_model="CompVis/stable-diffusion-v1-4")
model = dict(
    type=LaViBridge,
    text_encoder="google-t5/t5-large",
    vision_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
    adapter=dict(in_dim=1024, int_dim=896, out_dim=768),
    max_length=77,
    text_lora=dict(rank=32, alpha=32, dropout=0.1),
    vision_lora=dict(rank=32, alpha=32, dropout=0.1),
    caption_dropout=0.0,
    weight_dtype="auto",  # frozen weights in the autocast format on a GPU (bf16 or fp16), float32 on a CPU
    gradient_checkpointing=False,
    channels_last=False,  # NHWC measured 7-14 % slower for the SD1.5 UNet on an H200 (docs/benchmarks.md)
)
