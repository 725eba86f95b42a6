from diffengine.models import LaViBridge

# Llama-2-7B + Stable Diffusion 3.5 medium's MMDiT (beyond the paper). The adapter feeds the
# transformer's context embedder (joint_attention_dim 4096, T5-XXL's width) and its pooled head
# the 2048-wide pooled_projections (the two CLIPs' pooled outputs in SD3). Trained by flow
# matching as SD3 was: logit-normal timesteps on the scheduler's shift-3 table, velocity target
model = dict(
    type=LaViBridge,
    text_encoder="meta-llama/Llama-2-7b-hf",
    vision_model="stabilityai/stable-diffusion-3.5-medium",
    # int: (in + out) // 2, the rule behind the paper's widths; pooled: SD3's pooled_projection_dim
    adapter=dict(in_dim=4096, int_dim=4096, out_dim=4096, pooled_dim=2048),
    max_length=77,
    pad_token="<unk>",  # as the paper's Llama-2 run pads (see lavi_bridge_llama2_7b_v15)
    text_lora=dict(rank=32, alpha=32, dropout=0.1),
    # the paper's rule, every Linear of each Attention: the joint attention's projections of both
    # streams and SD3.5's image self-attention (attn2) in its first 13 layers
    vision_lora=dict(rank=32, alpha=32, dropout=0.1),
    flow_matching=dict(weighting_scheme="logit_normal", logit_mean=0.0, logit_std=1.0),
    caption_dropout=0.0,
    weight_dtype="bfloat16",  # both frozen models in bf16: 13.2 GB + 4.5 GB
    gradient_checkpointing=True,  # 4096 image tokens a sample at 1024 px
)
