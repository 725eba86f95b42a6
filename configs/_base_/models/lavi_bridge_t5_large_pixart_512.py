from diffengine.models import LaViBridge

# T5-Large + PixArt-alpha XL-2 512 transformer, the paper's third combination (the authors'
# train/t5_transformer.py)
model = dict(
    type=LaViBridge,
    text_encoder="google-t5/t5-large",
    vision_model="PixArt-alpha/PixArt-XL-2-512x512",
    # out: the transformer's caption_channels (its caption projection takes T5-XXL's width)
    adapter=dict(in_dim=1024, int_dim=2560, out_dim=4096),
    # PixArt's caption length; the padding mask goes to T5 and to the transformer
    max_length=120,
    text_attention_mask=True,
    text_lora=dict(rank=32, alpha=32, dropout=0.1),
    vision_lora=dict(rank=32, alpha=32, dropout=0.1),
    caption_dropout=0.0,
    weight_dtype="auto",  # frozen weights in the autocast format on a GPU (bf16 or fp16), float32 on a CPU
    gradient_checkpointing=False,
    channels_last=False,  # NHWC measured 7-14 % slower for the SD1.5 UNet on an H200 (docs/benchmarks.md)
)
