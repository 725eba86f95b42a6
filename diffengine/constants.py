"""Names shared by the CLI and the models, kept import-free so ``--help`` stays fast."""

# unipc, ddim, dpm and ddpm sample DDPM schedules (SD, SDXL, PixArt), flow_euler flow-matching ones (SD3, Flux)
INFERENCE_SCHEDULER_NAMES = ("unipc", "ddim", "dpm", "ddpm", "flow_euler")
WEIGHT_DTYPE_NAMES = ("float32", "bfloat16", "float16")
# the multiple every diffusers pipeline asks of an image side (SD's VAE downsamples 8x)
PIXEL_MULTIPLE = 8
# the training targets DDPMObjective implements (diffusers' "sample" is not one of them)
PREDICTION_TYPES = ("epsilon", "v_prediction")
# the paper authors' released pairings that `convert-official` understands
OFFICIAL_COMBO_NAMES = ("t5_unet", "llama2_unet", "t5_transformer")

# a torch.Generator takes seeds up to 2**64 - 1; a larger one overflows only when the first image is made
MAX_SEED = 2**64 - 1

# the sampler settings every ShapesBench row is scored with, fixed before any result was seen
SHAPESBENCH_STEPS = 25
SHAPESBENCH_GUIDANCE = 5.0

# a work dir's layout: MMEngine's pointer to the newest checkpoint, and the model folders written
# beside each checkpoint (WORK_DIR/<folder>/iter_N/, WORK_DIR/<folder>/last_<folder>)
LAST_CHECKPOINT = "last_checkpoint"
BRIDGE_FOLDER = "bridge"
PRETRAINED_FOLDER = "pretrained"
SAMPLES_FOLDER = "samples"
# a bridge folder's manifest: every LaViBridge argument, the iteration, the version
BRIDGE_MANIFEST = "bridge.json"
