"""Names shared by the CLI and the models, kept import-free so ``--help`` stays fast."""

INFERENCE_SCHEDULER_NAMES = ("unipc", "ddim", "dpm", "ddpm")
WEIGHT_DTYPE_NAMES = ("float32", "bfloat16", "float16")
# the training targets noised_latents implements (diffusers' "sample" is not one of them)
PREDICTION_TYPES = ("epsilon", "v_prediction")
