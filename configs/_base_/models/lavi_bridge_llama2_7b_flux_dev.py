from diffengine.models import LaViBridge

# Llama-2-7B + FLUX.1-dev's transformer (beyond the paper). The adapter feeds the context embedder
# (joint_attention_dim 4096, T5-XXL's width) and its pooled head the 768-wide pooled_projections
# (CLIP-L's pooled output in Flux). Trained by flow matching as diffusers' Flux LoRA example does:
# uniform timesteps ("none") on the unshifted table, velocity target, the guidance embedding at
# 3.5 (FluxPipeline's default, the same at inference); images pack into 2 x 2 latent patches
model = dict(
    type=LaViBridge,
    text_encoder="meta-llama/Llama-2-7b-hf",
    vision_model="black-forest-labs/FLUX.1-dev",
    adapter=dict(in_dim=4096, int_dim=4096, out_dim=4096, pooled_dim=768),
    max_length=77,
    pad_token="<unk>",  # as the paper's Llama-2 run pads (see lavi_bridge_llama2_7b_v15)
    text_lora=dict(rank=32, alpha=32, dropout=0.1),
    # every Linear of each FluxAttention: both streams' projections in the 19 double-stream blocks,
    # the joint to_q/k/v of the 38 single-stream blocks
    vision_lora=dict(rank=32, alpha=32, dropout=0.1),
    flow_matching=dict(weighting_scheme="none"),
    caption_dropout=0.0,
    weight_dtype="bfloat16",  # both frozen models in bf16: 13.2 GB + 23.8 GB
    gradient_checkpointing=True,  # 4096 image tokens a sample at 1024 px, 57 blocks
)
