"""Names shared by the CLI and the models, kept import-free so ``--help`` stays fast."""

INFERENCE_SCHEDULER_NAMES = ("unipc", "ddim", "dpm", "ddpm")
WEIGHT_DTYPE_NAMES = ("float32", "bfloat16", "float16")
