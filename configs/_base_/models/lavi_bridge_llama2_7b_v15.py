from diffengine.models import LaViBridge

# Llama-2-7B + SD1.5 UNet, the paper's second combination (the authors' train/llama2_unet.py; the
# paper used SD1.4: set model.vision_model="CompVis/stable-diffusion-v1-4")
model = dict(
    type=LaViBridge,
    text_encoder="meta-llama/Llama-2-7b-hf",
    vision_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
    adapter=dict(in_dim=4096, int_dim=2432, out_dim=768),
    max_length=77,
    # the authors set tokenizer.pad_token = "[PAD]", a token Llama's vocabulary lacks, which their
    # slow LlamaTokenizer encodes as <unk> (id 0): pad with <unk> to feed the LM the same ids
    pad_token="<unk>",
    text_lora=dict(rank=32, alpha=32, dropout=0.1),
    vision_lora=dict(rank=32, alpha=32, dropout=0.1),
    caption_dropout=0.0,
    # the frozen 7B LM in bfloat16 is about 13 GB instead of 26 GB; LoRA and adapter train in float32
    weight_dtype="bfloat16",
    gradient_checkpointing=False,
    channels_last=False,  # NHWC measured 7-14 % slower for the SD1.5 UNet on an H200 (docs/benchmarks.md)
)
