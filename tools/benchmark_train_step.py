"""Training-step speed and peak memory of LaViBridge at real size with random weights.

The GPU smoke of the project: SD1.5 UNet + VAE and T5-Large architectures, built from their
configs with random weights (no hub), saved with save_pretrained and loaded back through the
model's from_pretrained path, then a few optimizer steps at 512 px. Prints samples/s and peak
memory. ``--latents`` trains from precomputed latent parameters, as from ``diffengine
prep-latents`` shards, with the VAE encoder dropped. ``--size tiny`` runs the same loop on the
demo's tiny models (a CPU check of the script).

    python tools/benchmark_train_step.py --device cuda --dtype bfloat16 --batch-size 4 16
    python tools/benchmark_train_step.py --device cuda --dtype bfloat16 --batch-size 16 --latents
    python tools/benchmark_train_step.py --size tiny --device cpu --resolution 32 --iters 3
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
from mmengine.optim import OptimWrapper
from torch.optim import AdamW

from diffengine.engine import ParamGroupsOptimWrapperConstructor
from diffengine.models import LaViBridge
from diffengine.tools.demo_assets import make_tiny_sd, make_tiny_t5


def make_full_size_assets(root: Path) -> tuple[Path, Path]:
    """Random-weight T5-Large (encoder-decoder folder + tokenizer) and an SD1.5-shaped base model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    t5_dir = make_tiny_t5(root / "t5")  # for its tokenizer; the model is replaced below
    T5EncoderModel(T5Config(d_model=1024, d_ff=4096, d_kv=64, num_heads=16, num_layers=24,
                            vocab_size=32128)).save_pretrained(t5_dir)
    sd_dir = root / "sd"
    UNet2DConditionModel(cross_attention_dim=768).save_pretrained(sd_dir / "unet")
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                  down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4,
                  sample_size=512).save_pretrained(sd_dir / "vae")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  num_train_timesteps=1000).save_pretrained(sd_dir / "scheduler")
    return t5_dir, sd_dir


def main() -> None:
    """Parse options, build the model, time the steps, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16",
                        help="frozen weights and autocast dtype")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[4],
                        help="one or more batch sizes, timed in turn on the same model")
    parser.add_argument("--iters", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--latents", action="store_true",
                        help="batches of latent parameters (prep-latents shards) and no VAE encoder")
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if args.size == "full":
            t5_dir, sd_dir = make_full_size_assets(Path(tmp))
        else:
            t5_dir, sd_dir = make_tiny_t5(Path(tmp) / "t5"), make_tiny_sd(Path(tmp) / "sd")
        model = LaViBridge(str(t5_dir), str(sd_dir), weight_dtype=args.dtype,
                           gradient_checkpointing=args.gradient_checkpointing,
                           vae_encoder=not args.latents).to(device)
        print(f"built and loaded in {time.perf_counter() - start:.0f} s")
    optim = ParamGroupsOptimWrapperConstructor(
        dict(type=OptimWrapper, optimizer=dict(type=AdamW, lr=1e-4, weight_decay=1e-2),
             clip_grad=dict(max_norm=1.0)),
        dict(group_lr=dict(vision_lora=1e-4, text_lora=5e-6, adapter=1e-4)))(model)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"{args.size} size, dtype {args.dtype}, {args.resolution} px, "
          f"{'precomputed latents' if args.latents else 'pixels'}, trainable "
          f"{sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f} M")
    for batch_size in args.batch_size:
        time_steps(model, optim, device, dtype, batch_size, args)


def time_steps(model: LaViBridge, optim: OptimWrapper, device: torch.device, dtype: torch.dtype,
               batch_size: int, args: argparse.Namespace) -> None:
    """Warm up, then time ``args.iters`` optimizer steps at one batch size and print the figures."""
    batch = model.data_preprocessor({"inputs": {
        **_images_or_latents(model, batch_size, args),
        "text": ["a photo of a cat wearing a red hat"] * batch_size}}, True)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(batch["inputs"])["loss"]
        optim.update_params(loss)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    synchronize()
    elapsed = time.perf_counter() - start
    peak = (f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
            if device.type == "cuda" else "")
    print(f"batch {batch_size}: {args.iters * batch_size / elapsed:.2f} samples/s, "
          f"{elapsed / args.iters * 1000:.0f} ms/step{peak}")


def _images_or_latents(model: LaViBridge, batch_size: int, args: argparse.Namespace) -> dict:
    """Random uint8 pixels, or with ``--latents`` random latent parameters (mean, logvar) of that size."""
    if not args.latents:
        return {"pixel_values": torch.randint(0, 256, (batch_size, 3, args.resolution, args.resolution),
                                              dtype=torch.uint8)}
    config = model.vae.config
    side = args.resolution // 2 ** (len(config.block_out_channels) - 1)
    mean = torch.randn(batch_size, config.latent_channels, side, side)
    return {"latent_parameters": torch.cat([mean, torch.full_like(mean, -6.0)], dim=1)}


if __name__ == "__main__":
    main()
