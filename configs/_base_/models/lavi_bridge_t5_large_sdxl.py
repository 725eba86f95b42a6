from diffengine.models import LaViBridge

# T5-Large + SDXL base 1.0's UNet (beyond the paper, whose UNet runs stop at SD1.4). SDXL takes,
# besides the 2048-wide context, a 1280-wide pooled text embedding (the adapter's pooled head:
# masked mean of its output, then a Linear) and six size/crop time ids from the loader
model = dict(
    type=LaViBridge,
    text_encoder="google-t5/t5-large",
    vision_model="stabilityai/stable-diffusion-xl-base-1.0",
    # int: (in + out) // 2, the rule behind the paper's widths; pooled: SDXL's text_embeds width
    adapter=dict(in_dim=1024, int_dim=1536, out_dim=2048, pooled_dim=1280),
    max_length=77,
    text_lora=dict(rank=32, alpha=32, dropout=0.1),
    vision_lora=dict(rank=32, alpha=32, dropout=0.1),
    caption_dropout=0.0,
    weight_dtype="auto",  # frozen weights in the autocast format on a GPU (bf16 or fp16), float32 on a CPU
    # a 2.6 B-parameter UNet at 1024 px (128 x 128 latents): recompute activations in the backward
    gradient_checkpointing=True,
    channels_last=False,  # NHWC measured 7-14 % slower for the SD1.5 UNet on an H200 (docs/benchmarks.md)
)
