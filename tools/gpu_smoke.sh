#!/usr/bin/env bash
# GPU smoke of diffengine on one CUDA GPU: the demo (fp32 and --amp), then `diffengine bench gpu`
# at real size (SD1.5 UNet + T5-Large, random weights, 512 px): the paper's loop and the bf16
# fast defaults from pixels and from latents at batch 1, 16 and the largest that fits, then
# batch 16 with gradient checkpointing. Prints wall times and the bench tables (samples/s, peak
# memory, MFU); the JSON files land in WORK_DIR. Run from the repository root with diffengine importable:
#     bash tools/gpu_smoke.sh [WORK_DIR [STEP ...]]
# Last, host syncs: the demo trained on the LAION configs' fast path under
# torch.cuda.set_sync_debug_mode("warn"), listing the places that synchronized (expected: only the
# reads at log intervals, DeferredRuntimeInfoHook and the optimizer wrapper).
# STEPs (default: all): demo demo_amp bench_gpu bench_gpu_ckpt sync_check
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
    grep -E "Iter\(train\) \[ *(20|300)/|demo finished|^\||models written|Error|error:" \
        "$work/$name.log" | grep -v Warning | cut -c1-400 | tail -16
}

step demo $py -m diffengine demo --data-dir "$work/demo_data" --work-dir "$work/demo" --overwrite
step demo_amp $py -m diffengine wds_train lavi_bridge_demo --amp --work-dir "$work/demo_amp" --overwrite \
    --cfg-options "model.text_encoder=$work/demo_data/t5" "model.vision_model=$work/demo_data/stage1" \
    "train_dataloader.shards=$work/demo_data/shards/{00000..00001}.tar"
step bench_gpu $py -m diffengine bench gpu --out "$work/bench_gpu.json" --overwrite
step bench_gpu_ckpt $py -m diffengine bench gpu --gradient-checkpointing --no-paper --inputs pixels \
    --batch-sizes 16 --iters 5 --out "$work/bench_gpu_ckpt.json" --overwrite
step sync_check $py -c "import sys, torch; torch.cuda.set_sync_debug_mode('warn'); \
from diffengine.entry_point import main; sys.exit(main(sys.argv[1:]))" \
    wds_train lavi_bridge_demo --amp --work-dir "$work/sync_check" --overwrite --cfg-options \
    "model.text_encoder=$work/demo_data/t5" "model.vision_model=$work/demo_data/stage1" \
    "train_dataloader.shards=$work/demo_data/shards/{00000..00001}.tar" train_cfg.max_iters=30 \
    default_hooks.logger.interval=10 "custom_hooks=[]" \
    optim_wrapper.optimizer.fused=True optim_wrapper.host_read_interval=50
[[ -f "$work/sync_check.log" ]] && echo "places that synchronized (Python shows each once):" && \
    grep "called a synchronizing" "$work/sync_check.log" | sed 's/: UserWarning.*//' | sort -u | head -20
