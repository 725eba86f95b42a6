from diffengine.models import LaViBridge

# tiny T5 + tiny SD UNet written by `diffengine demo` (diffengine/tools/demo_assets.py)
model = dict(
    type=LaViBridge,
    text_encoder="data/demo/t5",
    vision_model="data/demo/sd",
    adapter=dict(in_dim=32, int_dim=32, out_dim=32),
    max_length=32,
    text_lora=dict(rank=4, alpha=4, dropout=0.0),
    vision_lora=dict(rank=4, alpha=4, dropout=0.0),
    caption_dropout=0.1,
)
