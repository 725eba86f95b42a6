#!/usr/bin/env bash
# GPU smoke of diffengine on one CUDA GPU: the demo (fp32 and --amp), then a real-size training
# step (SD1.5 UNet + T5-Large, random weights, bf16, 512 px). Prints wall times, samples/s and
# peak memory. Run from the repository root with diffengine importable:
#     bash tools/gpu_smoke.sh [WORK_DIR [STEP ...]]
# STEPs (default: all): demo demo_amp train_step_bf16_512 train_step_bf16_512_latents
#                       train_step_bf16_512_ckpt
set -uo pipefail
work=${1:-/tmp/diffengine_gpu_smoke}
steps=" ${*:2} "
py=${PYTHON:-python3}
mkdir -p "$work"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch, transformers, diffusers, peft, mmengine, webdataset; print('torch', torch.__version__, '| transformers', transformers.__version__, '| diffusers', diffusers.__version__, '| peft', peft.__version__, '| mmengine', mmengine.__version__)"

step() {  # step NAME COMMAND...: run (when selected), report wall time and exit status
    local name=$1; shift
    [[ "$steps" == "  " || "$steps" == *" $name "* ]] || return 0
    local start=$SECONDS
    "$@" > "$work/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - start)) s"
    grep -E "Iter\(train\) \[ *(20|300)/|demo finished|samples/s|peak memory|built and|trainable|Error|error:" \
        "$work/$name.log" | grep -v Warning | cut -c1-400 | tail -12
}

step demo $py -m diffengine demo --data-dir "$work/demo_data" --work-dir "$work/demo"
step demo_amp $py -m diffengine wds_train lavi_bridge_demo --amp --work-dir "$work/demo_amp" \
    --cfg-options "model.text_encoder=$work/demo_data/t5" "model.vision_model=$work/demo_data/sd" \
    "train_dataloader.shards=$work/demo_data/shards/{00000..00003}.tar"
step train_step_bf16_512 $py tools/benchmark_train_step.py --device cuda --dtype bfloat16 \
    --resolution 512 --batch-size 4 16 --iters 10
step train_step_bf16_512_latents $py tools/benchmark_train_step.py --device cuda --dtype bfloat16 \
    --resolution 512 --batch-size 16 --iters 10 --latents
step train_step_bf16_512_ckpt $py tools/benchmark_train_step.py --device cuda --dtype bfloat16 \
    --resolution 512 --batch-size 16 --iters 5 --gradient-checkpointing
