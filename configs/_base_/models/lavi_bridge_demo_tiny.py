from diffengine.models import LaViBridge

# a tiny random T5 encoder and ShapesBench's stage-1 model, written by `diffengine demo`
# (diffengine/tools/demo_assets.py); the adapter's widths follow from the two (32 -> 48 -> 64)
model = dict(
    type=LaViBridge,
    text_encoder="data/demo/t5",
    vision_model="data/demo/stage1",
    # the demo T5's 46-piece tokenizer spells ShapesBench captions in up to 24 tokens
    max_length=24,
    text_lora=dict(rank=8, dropout=0.0),
    vision_lora=dict(rank=8, dropout=0.0),
    caption_dropout=0.1,
)
