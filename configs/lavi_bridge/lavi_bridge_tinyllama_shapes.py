from mmengine.config import read_base

with read_base():
    # everything as the MiniLM run but the language model: a 2-layer Llama that
    # `diffengine shapesbench run` pretrains on text (diffengine/tools/shapes_assets.py)
    from .lavi_bridge_minilm_shapes import *

model.update(text_encoder="data/shapes/tiny_llama")
