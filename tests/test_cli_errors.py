"""Every user mistake on the training path: one line on stderr, exit status 2, before any compute."""
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from diffengine.datasets.latent_shards import LATENTS_RECORD
from diffengine.entry_point import main
from diffengine.errors import ConfigError, NonFiniteTrainingError, NoUsableSampleError, TrainingStopped
from tests.helpers import demo_cfg_options


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_t5, tiny_sd, demo_shards, latent_shards):
    """Bad inputs to point at: broken configs and checkpoints, a vision folder without vae/, and
    tiny_sd's latent shard beside a copy of tiny_sd whose VAE scales latents otherwise."""
    root = tmp_path_factory.mktemp("bad_inputs")
    shutil.copy(latent_shards.replace("{00000..00003}", "00000"), root / "latents.tar")
    shutil.copy(demo_shards.replace("{00000..00003}", "00000"), root / "images.tar")
    # latents.tar as another VAE, or another resolution, would have made it
    relabel_latents(root / "latents.tar", root / "latents_other_vae.tar", scaling_factor=0.5)
    relabel_latents(root / "latents.tar", root / "latents_64px.tar", resolution=64)
    shutil.copytree(tiny_sd, root / "rescaled_vae")
    vae_config = root / "rescaled_vae" / "vae" / "config.json"
    vae_config.write_text(json.dumps({**json.loads(vae_config.read_text()), "scaling_factor": 0.5}))
    (root / "syntax.py").write_text("model = dict(\n  type='LaViBridge',\n")
    (root / "raises.py").write_text("max_iters = 1 / 0\n")
    shutil.copytree(f"{tiny_sd}/unet", root / "no_vae" / "unet")
    (root / "truncated.pth").write_bytes(b"PK\x03\x04 cut short")
    (root / "empty.pth").write_bytes(b"")
    torch.save({"meta": {"iter": 2}, "state_dict": {}}, root / "iter_2.pth")  # as a finished 2-iteration run's
    # a run killed while its newest checkpoint was copied in: iter_3 cut short, iter_1 whole
    (root / "cut_run").mkdir()
    torch.save({"meta": {"iter": 1}, "state_dict": {}}, root / "cut_run" / "iter_1.pth")
    (root / "cut_run" / "iter_3.pth").write_bytes(b"PK\x03\x04 cut short")
    for name in ("empty", *(f"empty{index}" for index in range(4))):
        (root / f"{name}.tar").write_bytes(b"")
    (root / "bridge_of_layer_0").mkdir()
    (root / "bridge_of_layer_0" / "bridge.json").write_text(json.dumps({"hidden_layer": 0}))

    class Payload:
        def __reduce__(self):
            return (print, ("arbitrary code ran",))

    torch.save({"state_dict": {}, "payload": Payload()}, root / "unsafe.pth")
    return root


def relabel_latents(source: Path, target: Path, **record) -> None:
    """A copy of a latent shard with ``record`` in every sample's latents record."""
    with tarfile.open(source) as reader, tarfile.open(target, "w") as writer:
        for member in reader.getmembers():
            data = reader.extractfile(member).read()
            if member.name.endswith(".json"):
                meta = json.loads(data)
                meta[LATENTS_RECORD].update(record)
                data = json.dumps(meta).encode()
                member.size = len(data)
            writer.addfile(member, io.BytesIO(data))


DEMO = "lavi_bridge_demo"
# (case, config, command-line flags, extra --cfg-options, expected message part; {assets} filled in)
BAD_INPUTS = [
    ("config syntax error", "{assets}/syntax.py", [], [], "syntax.py:1: syntax error: '(' was never closed"),
    ("config that raises", "{assets}/raises.py", [], [], "raises.py: ZeroDivisionError: division by zero"),
    ("unknown model type", DEMO, [], ["model.type=LaViBrige"],
     "model.type: unknown type 'LaViBrige' (did you mean 'LaViBridge'?)"),
    ("model wrapper without its scope", DEMO, [], ["model_wrapper_cfg.type=ShardedLanguageModelDDP"],
     "model_wrapper_cfg.type: MMEngine finds 'ShardedLanguageModelDDP' only by its scoped name: write "
     "'diffengine.ShardedLanguageModelDDP'"),
    ("misspelt top-level key", DEMO, [], ["trian_cfg.max_iters=3"],
     "the config has no 'trian_cfg' (did you mean 'train_cfg'"),
    ("misspelt model option", DEMO, [], ["model.prediciton_type=epsilon"],
     "model.prediciton_type: LaViBridge has no option 'prediciton_type' (did you mean 'prediction_type'?)"),
    ("misspelt hook option", DEMO, [], ["default_hooks.checkpoint.intervall=5"],
     "default_hooks.checkpoint.intervall: CrashSafeCheckpointHook has no option 'intervall' "
     "(did you mean 'interval'?)"),
    ("misspelt LoRA option", DEMO, [], ["model.text_lora.rnk=4"],
     "text_lora takes rank, alpha and dropout; unknown: rnk"),
    ("option without =", DEMO, [], ["train_cfg.max_iters"], "--cfg-options 'train_cfg.max_iters': expected KEY=VALUE"),
    ("a dict in an option", DEMO, [], ["param_scheduler=[dict(type=LinearLR,end=10)]"],
     "dict(...) is not parsed: set its entries one by one (e.g. param_scheduler.0.end=100"),
    ("a lone dict in an option", DEMO, [], ["model.text_lora=dict(rank=4)"], "dict(...) is not parsed"),
    ("unbalanced brackets in an option", DEMO, [], ["train_dataloader.aspect_ratio_range=[0.5,2"],
     "--cfg-options 'train_dataloader.aspect_ratio_range=[0.5,2': unbalanced brackets: '[' is never closed"),
    ("batch size not a number", DEMO, [], ["train_dataloader.batch_size=abc"],
     "train_dataloader.batch_size must be int, got 'abc'"),
    ("zero iterations", DEMO, [], ["train_cfg.max_iters=0"], "train_cfg.max_iters must be >= 1, got 0"),
    ("bridge folders kept: none", DEMO, [], ["custom_hooks.1.max_keep=0"],
     "custom_hooks.1.max_keep must be >= 1, got 0"),
    ("validation every 0 iterations", DEMO, [], ["train_cfg.val_interval=0"],
     "train_cfg.val_interval must be >= 1, got 0"),
    # torch scales gradients by max_norm / norm: a negative bound would train uphill without an error
    ("negative gradient clip", DEMO, [], ["optim_wrapper.clip_grad.max_norm=-1"],
     "optim_wrapper.clip_grad.max_norm must be a number > 0, got -1"),
    ("misspelt gradient clip option", DEMO, [], ["optim_wrapper.clip_grad.max_nrom=1.0"],
     "optim_wrapper.clip_grad.max_nrom: clip_grad_norm_ has no option 'max_nrom' (did you mean 'max_norm'?)"),
    # gradients through float16 activations underflow without loss scaling, silently
    ("float16 weights without loss scaling", DEMO, [], ["model.weight_dtype=float16"],
     "model.weight_dtype=float16 needs loss scaling, which optim_wrapper.type=GuardedOptimWrapper lacks"),
    ("gradient clip by an unknown kind", DEMO, [], ["optim_wrapper.clip_grad.type=l1"],
     "optim_wrapper.clip_grad.type must be 'norm' or 'value', got 'l1'"),
    ("negative weight decay", DEMO, [], ["optim_wrapper.optimizer.weight_decay=-0.1"],
     "optim_wrapper.optimizer.weight_decay must be >= 0, got -0.1"),
    ("no gradient accumulation step", DEMO, [], ["optim_wrapper.accumulative_counts=0"],
     "optim_wrapper.accumulative_counts must be >= 1, got 0"),
    ("misspelt randomness option", DEMO, [], ["randomness.seeed=3"],
     "randomness.seeed: randomness has no option 'seeed' (did you mean 'seed'?); it takes deterministic, "
     "diff_rank_seed, seed"),
    ("misspelt log option", DEMO, [], ["log_processor.window_sise=5"],
     "log_processor.window_sise: log_processor has no option 'window_sise' (did you mean 'window_size'?)"),
    ("misspelt environment option", DEMO, [], ["env_cfg.dist_cfgs=3"],
     "env_cfg.dist_cfgs: env_cfg has no option 'dist_cfgs' (did you mean 'dist_cfg'?)"),
    ("a launcher without its environment", DEMO, ["--launcher", "slurm"], [],
     "--launcher slurm needs the environment its launcher sets (SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST "
     "missing): start the command under it"),
    ("a folder for the config", "{assets}", [], [], "config '{assets}' is a folder: give a config file in it"),
    ("an option for a list entry that is not there", DEMO, [], ["custom_hooks.9.interval=5"],
     "--cfg-options custom_hooks.9.interval: custom_hooks is a list of 5 (indices 0 to 4), not '9'"),
    ("a model's config.json for its folder", DEMO, [], ["model.vision_model={assets}/rescaled_vae/vae/config.json"],
     "model.vision_model {assets}/rescaled_vae/vae/config.json is a file: give the model's folder "
     "({assets}/rescaled_vae/vae)"),
    ("hook interval out of range", DEMO, [], ["default_hooks.logger.interval=0"],
     "default_hooks.logger.interval must be >= 1"),
    ("prediction type typo", DEMO, [], ["model.prediction_type=v-prediction"],
     "prediction_type must be one of epsilon, v_prediction (or None: the scheduler's own), got 'v-prediction'"),
    ("a bare model name that is no folder here, offline", DEMO, [], ["model.vision_model=stage1_typo"],
     "model.vision_model 'stage1_typo' is not a folder here, and the hub is off (HF_HUB_OFFLINE) with no cached "
     "model of that id: a typo, or a local folder elsewhere?"),
    ("missing model path", DEMO, [], ["model.text_encoder={assets}/no_such_model"],
     "no_such_model' does not exist"),
    ("vision folder as the language model", DEMO, [], ["model.text_encoder={assets}/no_vae"],
     "no_vae has no config.json: it is a diffusers base-model folder, not a transformers language model folder"),
    ("vision folder without vae/", DEMO, [], ["model.vision_model={assets}/no_vae"],
     "no_vae has no vae/, no scheduler/"),
    ("no shard file", DEMO, [], ["train_dataloader.shards={assets}/nothing/{{00000..00003}}.tar"],
     "train_dataloader.shards: shard spec"),
    ("image shards without the VAE encoder", DEMO, [], ["model.vae_encoder=False"],
     "model.vae_encoder=False trains from latent shards, but "),
    ("latent shards of another VAE", DEMO, [],
     ["train_dataloader.shards={assets}/latents.tar", "model.vision_model={assets}/rescaled_vae"],
     "model.vision_model's VAE differs (scaling_factor 0.18215 vs 0.5): encode the image shards again "
     "with `diffengine prep-latents --vision-model "),
    ("latent shards of another resolution", DEMO, [],
     ["train_dataloader.shards={assets}/latents.tar", "train_dataloader.resolution=64"],
     "latents.tar holds latents encoded at 32 px but train_dataloader.resolution is 64"),
    ("latent shards of another VAE after the first", DEMO, [],
     ["train_dataloader.shards=[{assets}/latents.tar,{assets}/latents_other_vae.tar]"],
     "latents_other_vae.tar holds latents of the VAE "),
    ("latent shards of another resolution after the first", DEMO, [],
     ["train_dataloader.shards=[{assets}/latents.tar,{assets}/latents_64px.tar]"],
     "latents_64px.tar holds latents encoded at 64 px but train_dataloader.resolution is 32"),
    ("random crops of latent shards", DEMO, [],
     ["train_dataloader.shards={assets}/latents.tar", "train_dataloader.center_crop=False"],
     "train_dataloader.center_crop=False takes random crops, but {assets}/latents.tar holds latents of centre "
     "crops (prep-latents): set center_crop=True, or train from the image shards"),
    ("latent shards beside image shards", DEMO, [],
     ["train_dataloader.shards=[{assets}/images.tar,{assets}/latents.tar]"],
     "train_dataloader.shards mixes latent shards ({assets}/latents.tar) with shards without latents "
     "({assets}/images.tar): a batch holds one kind"),
    ("a LoRA scaled to nothing", DEMO, [], ["model.text_lora.alpha=0"],
     "text_lora.alpha must be a number > 0 (None: the rank, a scale of 1), got 0"),
    ("a LoRA dropout past 1", DEMO, [], ["model.vision_lora.dropout=1.5"],
     "vision_lora.dropout must be a number from 0 to below 1, got 1.5"),
    ("torch_compile neither a flag nor options", DEMO, [], ["model.torch_compile=maybe"],
     "torch_compile must be True, False or a dict of torch.compile options, got 'maybe'"),
    ("no checkpoint kept", DEMO, [], ["default_hooks.checkpoint.max_keep_ckpts=0"],
     "default_hooks.checkpoint.max_keep_ckpts must be >= 1, got 0"),
    ("a sample grid of no prompt", DEMO, [], ["custom_hooks.3.prompts=[]"],
     "custom_hooks.3.prompts holds no prompt: give at least one, or drop the hook"),
    ("a negative seed", DEMO, [], ["randomness.seed=-1"],
     "randomness.seed must be a whole number from 0 to 2**32 - 1 (or None: a random one), got -1"),
    ("a negative shuffle buffer", DEMO, [], ["train_dataloader.shuffle_buffer=-1"],
     "train_dataloader.shuffle_buffer must be >= 0, got -1"),
    ("negative learning rate", DEMO, [], ["optim_wrapper.optimizer.lr=-1"],
     "optim_wrapper.optimizer.lr must be a number > 0, got -1"),
    ("negative group learning rate", DEMO, [], ["optim_wrapper.paramwise_cfg.group_lr.adapter=-1e-4"],
     "optim_wrapper.paramwise_cfg.group_lr.adapter must be a number > 0, got -0.0001"),
    ("resolution not a multiple of 8", DEMO, [], ["train_dataloader.resolution=30"],
     "train_dataloader.resolution must be a multiple of 8 pixels, got 30"),
    # every shard probed before compute: refused at once
    ("only an empty shard", DEMO, [], ["train_dataloader.shards={assets}/empty.tar"],
     "shards '{assets}/empty.tar': none of its 1 shard(s) reads as a tar archive, e.g. {assets}/empty.tar"),
    # more shards than the probe reads (training skips an unreadable one): found by the loader
    ("only empty shards", DEMO, [], ["train_dataloader.shards={assets}/empty{{0..3}}.tar"],
     "no usable sample in 4 shard(s) (rank 0, worker 0), e.g. "),
    ("only empty shards, read by a loader worker", DEMO, [],
     ["train_dataloader.shards={assets}/empty{{0..3}}.tar", "train_dataloader.num_workers=1"],
     "no usable sample in 4 shard(s) (rank 0, worker 0), e.g. "),
    ("checkpoints counted in epochs", DEMO, [], ["default_hooks.checkpoint.by_epoch=True"],
     "default_hooks.checkpoint: CrashSafeCheckpointHook counts epochs (by_epoch=True), but train_cfg counts "
     "iterations in one epoch, so it would act only at the end: set default_hooks.checkpoint.by_epoch=False"),
    ("learning-rate schedule in epochs", DEMO, [], ["param_scheduler.0.by_epoch=True"],
     "param_scheduler.0: ConstantLR counts epochs (by_epoch=True)"),
    ("schedule without a span", DEMO, [], ["param_scheduler.0.end=0"],
     "param_scheduler.0: begin=0 is not before end=0"),
    ("paramwise option the constructor ignores", DEMO, [], ["optim_wrapper.paramwise_cfg.bias_decay_mult=0"],
     "optim_wrapper.paramwise_cfg.bias_decay_mult: ParamGroupsOptimWrapperConstructor reads only group_lr"),
    ("a string where a list belongs", DEMO, [], ["train_dataloader.caption_json_fields=caption"],
     "train_dataloader.caption_json_fields must be a list, got the string 'caption' "
     "(write train_dataloader.caption_json_fields=[caption])"),
    ("hidden layer the language model lacks", DEMO, [], ["model.hidden_layer=99"],
     "hidden_layer=99 is out of range: "),
    ("sampler the pipelines lack", DEMO, [], ["custom_hooks.3.scheduler=euler"],
     "custom_hooks.3.scheduler must be one of unipc, ddim, dpm, ddpm, flow_euler (or None: the model's "
     "default), got 'euler'"),
    ("sampler the base model's schedule cannot use", DEMO, [], ["custom_hooks.3.scheduler=flow_euler"],
     "custom_hooks.3.scheduler 'flow_euler' does not sample this model's ddpm schedule: choose unipc, ddim, dpm, "
     "ddpm"),
    ("sample grid of a side no pipeline takes", DEMO, [], ["custom_hooks.3.height=500"],
     "custom_hooks.3.height must be a positive multiple of 8 pixels, got 500"),
    ("negative guidance in a sampling hook", DEMO, [], ["custom_hooks.3.guidance_scale=-3"],
     "custom_hooks.3.guidance_scale must be >= 0, got -3"),
    ("a sample grid seed torch.Generator cannot take", DEMO, [], ["custom_hooks.3.seed=-1"],
     "custom_hooks.3.seed must be a whole number from 0 to 2**64 - 1 (18446744073709551615), got -1"),
    ("a negative prompt that guidance would drop", DEMO, [],
     ["custom_hooks.3.negative_prompt=blurry", "custom_hooks.3.guidance_scale=1"],
     "custom_hooks.3.negative_prompt is used only with guidance_scale > 1 (classifier-free guidance), got "
     "guidance_scale=1"),
    ("a folder hook whose writer the model lacks", DEMO, [], ["custom_hooks.1.type=ModelFolderCheckpointHook"],
     "custom_hooks.1: ModelFolderCheckpointHook writes its folders with the model's save_pretrained(), which "
     "LaViBridge lacks: use BridgeCheckpointHook"),
    ("a learning rate held at 0 by its schedule", DEMO, [], ["param_scheduler.0.factor=0"],
     "param_scheduler.0.factor must be in (0, 1], got 0"),
    ("remote shards without an epoch length", DEMO, [],
     ["train_dataloader.shards=https://example.com/shard-{{0..3}}.tar", "train_dataloader.num_samples_per_epoch=None"],
     "train_dataloader.num_samples_per_epoch is required for remote shards such as "
     "'https://example.com/shard-0.tar': give the number of samples an epoch reads"),
    ("no bridge to continue", DEMO, [], ["model.bridge_path={assets}/no_such_bridge"],
     "no_such_bridge is not a bridge folder (no bridge.json)"),
    ("bridge trained under other settings", DEMO, [], ["model.bridge_path={assets}/bridge_of_layer_0"],
     "bridge_of_layer_0/bridge.json was trained with hidden_layer=0, this model has hidden_layer=-1: "
     "set model.hidden_layer=0 to continue that bridge"),
    ("no sample holds the image key", DEMO, [], ["train_dataloader.image_keys=jpg"],
     "with no image file of image_keys='jpg'); e.g. "),
    ("no sample has the caption key", DEMO, [],
     ["train_dataloader.caption_key=caption", "train_dataloader.caption_json_fields=[title]"],
     "with no caption: no .caption file (caption_key) and no title field in the .json (caption_json_fields)"),
    ("filters that reject every sample", DEMO, [], ["train_dataloader.min_caption_length=1000"],
     "with a caption shorter than min_caption_length=1000); e.g. "),
    ("aspect ratio range of one number", DEMO, [], ["train_dataloader.aspect_ratio_range=[0.5]"],
     "aspect_ratio_range must be [low, high] with 0 < low <= high, got [0.5]"),
    ("misspelt adapter option", DEMO, [], ["model.adapter.intdim=40"],
     "adapter.intdim: LaViBridgeTextAdapter has no option 'intdim'; it takes dropout, in_dim, int_dim, mult, "
     "out_dim, pooled_dim"),
    ("unknown optimizer group", DEMO, [], ["optim_wrapper.paramwise_cfg.group_lr.adaptr=0.1"],
     "group_lr names unknown parameter groups ['adaptr']"),
    ("missing resume checkpoint", DEMO, ["--resume", "{assets}/nothing.pth"], [],
     "nothing.pth: no such checkpoint file"),
    ("nothing to resume", DEMO, ["--resume"], [], "holds no checkpoint (iter_N.pth) to resume from"),
    ("truncated checkpoint", DEMO, ["--resume", "{assets}/truncated.pth"], [],
     "truncated.pth is unreadable (truncated"),
    ("empty checkpoint", DEMO, ["--resume", "{assets}/empty.pth"], [],
     "empty.pth is unreadable (truncated or not a checkpoint): the file is empty"),
    ("newest checkpoint unreadable", DEMO, ["--work-dir", "{assets}/cut_run", "--resume"], [],
     "; the newest readable one is {assets}/cut_run/iter_1.pth: resume it with --resume {assets}/cut_run/iter_1.pth"),
    ("unsafe checkpoint", DEMO, ["--resume", "{assets}/unsafe.pth"], [],
     "unsafe.pth was refused as unsafe: it holds objects other than tensors"),
    ("resuming a finished run", DEMO, ["--resume", "{assets}/iter_2.pth"], [],
     "iter_2.pth is at iteration 2 and train_cfg.max_iters=2: nothing is left to train; to train further, "
     "raise it (--cfg-options train_cfg.max_iters=N)"),
    ("work dir is a file", DEMO, ["--work-dir", "{assets}/syntax.py"], [], "syntax.py is not writable"),
]


@pytest.mark.parametrize("config, flags, cfg_options, expected", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(config, flags, cfg_options, expected, assets, tmp_path,
                                          tiny_t5, tiny_sd, demo_shards, capsys):
    config, flags, cfg_options = (config.format(assets=assets), [f.format(assets=assets) for f in flags],
                                  [o.format(assets=assets) for o in cfg_options])
    argv = ["wds_train", config, "--work-dir", str(tmp_path / "work"), *flags,
            "--cfg-options", *demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=2), *cfg_options]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("diffengine: error:")]
    assert len(errors) == 1 and expected.replace("{assets}", str(assets)) in errors[0], errors


@pytest.fixture(scope="module")
def pixart_16px(tiny_pixart, tmp_path_factory):
    """tiny_pixart with a VAE of SD's scale (8): its 2 x 2 latent patches need sides in multiples of 16 px."""
    from diffusers import AutoencoderKL

    from diffengine.models import LaViBridge

    vision = shutil.copytree(tiny_pixart, tmp_path_factory.mktemp("pixart") / "pixart_vae_scale_8")
    vae = AutoencoderKL.from_pretrained(vision / "vae")
    torch.manual_seed(0)
    AutoencoderKL.from_config({**vae.config, "block_out_channels": [8] * 4,
                               "down_block_types": vae.config.down_block_types * 2,
                               "up_block_types": vae.config.up_block_types * 2}).save_pretrained(vision / "vae")
    assert LaViBridge.image_side_multiple(str(vision)) == 16
    return vision


def patch_error(option: str, side: int, vision: Path) -> str:
    """What every command says of an image side that ``vision`` (pixart_16px) cannot patch."""
    return f"{option} must be a multiple of 16 pixels for {vision} (its denoiser's latent patch x its VAE's scale), " \
           f"got {side}"


@pytest.mark.parametrize("key, side", [("train_dataloader.resolution", 24), ("custom_hooks.3.height", 24),
                                       ("custom_hooks.3.width", 40)])
def test_an_image_size_the_denoiser_cannot_patch_is_refused_before_any_model_loads(key, side, tiny_t5, pixart_16px,
                                                                                  demo_shards, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.setattr("diffengine.engine.DiffEngineRunner.from_cfg", lambda *a: pytest.fail("a runner was built"))
    argv = ["wds_train", DEMO, "--work-dir", str(tmp_path / "work"), "--cfg-options",
            *demo_cfg_options(tiny_t5, str(pixart_16px), demo_shards, max_iters=2), "model.adapter=None",
            "train_dataloader.resolution=32", f"{key}={side}"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith(patch_error(key, side, pixart_16px))


@pytest.mark.parametrize("command, option, side", [
    (["infer", "{bridge}", "a prompt", "--vision-model", "{vision}", "--height", "24"], "--height", 24),
    (["infer", "{bridge}", "a prompt", "--vision-model", "{vision}", "--width", "40"], "--width", 40),
    (["prep-latents", "{shards}", "{out}", "--vision-model", "{vision}", "--resolution", "24"], "--resolution", 24)])
def test_infer_and_prep_latents_refuse_a_size_the_denoiser_cannot_patch_before_loading(
        command, option, side, assets, pixart_16px, demo_shards, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("diffengine.models.LaViBridge.from_bridge", lambda *a, **k: pytest.fail("loaded"))
    monkeypatch.setattr("diffengine.tools.prep_latents._encode_shards", lambda *a: pytest.fail("encoded"))
    argv = [part.format(bridge=assets / "bridge_of_layer_0", vision=pixart_16px, shards=demo_shards,
                        out=tmp_path / "latents") for part in command]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith(patch_error(option, side, pixart_16px))


def test_the_pipeline_refuses_a_size_its_denoiser_cannot_patch(tiny_t5, pixart_16px):
    from diffengine.models import LaViBridge

    model = LaViBridge(tiny_t5, str(pixart_16px), max_length=16)
    with pytest.raises(ValueError, match="^width must be a multiple of 16 pixels for PixArtTransformer2DModel "):
        model.infer("a red circle", num_inference_steps=1, height=32, width=24)
    assert model.infer("a red circle", num_inference_steps=2, height=32, width=16)[0].size == (16, 32)
    with pytest.raises(ValueError, match="^negative_prompt is used only with guidance_scale > 1"):
        model.infer("a red circle", negative_prompt="blurry", guidance_scale=1.0, num_inference_steps=2)


@pytest.mark.parametrize("value", ["abc", "0", "-2"])
def test_bad_process_count_is_one_line(value, monkeypatch, capsys):
    monkeypatch.setenv("NPROC_PER_NODE", value)
    assert main(["wds_train", "lavi_bridge_demo"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"diffengine: error: environment variable NPROC_PER_NODE={value!r}: expected a whole number "
        ">= 1 (processes per node, one per GPU)")


@pytest.mark.parametrize("name, value", [("WORLD_SIZE", "4"), ("RANK", "2")])
def test_a_rank_or_world_size_without_a_launcher_is_one_line(name, value, monkeypatch, capsys):
    # the shard loader would have read that rank's share of the data only, without a word
    monkeypatch.setenv(name, value)
    assert main(["wds_train", "lavi_bridge_demo"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"diffengine: error: environment variable {name}={value}, but this process was started without a launcher: "
        "unset it, add --launcher pytorch under torchrun, or set NPROC_PER_NODE to train on several devices")


def test_more_processes_than_visible_gpus_is_one_line_before_any_launch(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("diffengine.entry_point.launch_workers", lambda *a, **k: pytest.fail("launched"))
    monkeypatch.setenv("NPROC_PER_NODE", "8")
    assert main(["wds_train", "lavi_bridge_demo"]) == 2
    assert capsys.readouterr().err.strip() == (
        "diffengine: error: environment variable NPROC_PER_NODE=8: this machine shows 2 CUDA device(s) "
        "(CUDA_VISIBLE_DEVICES decides which), one per process: set NPROC_PER_NODE=2 or less")


@pytest.mark.parametrize("environment, expected", [
    (dict(NNODES="0"), "NNODES='0': expected a whole number >= 1 (nodes), or an elastic range MIN:MAX"),
    (dict(NNODES="abc"), "NNODES='abc': expected a whole number >= 1 (nodes), or an elastic range MIN:MAX"),
    (dict(NNODES="4:2"), "NNODES='4:2': expected a whole number >= 1 (nodes), or an elastic range MIN:MAX"),
    (dict(NNODES="2", NODE_RANK="2"), "NODE_RANK='2': expected a whole number from 0 to 1 (this node's place "
                                      "among NNODES=2)"),
    (dict(NNODES="1:3", NODE_RANK="x"), "NODE_RANK='x': expected a whole number from 0 to 2 (this node's place "
                                        "among NNODES=1:3)"),
    (dict(NNODES="2", MASTER_PORT="99999"), "MASTER_PORT='99999': expected a port number from 1 to 65535"),
    (dict(NNODES="2", NODE_RANK="\u00b2"), "NODE_RANK='\u00b2': expected a whole number from 0 to 1 (this "
                                           "node's place among NNODES=2)"),
    (dict(NNODES="2", NODE_RANK="1"), "MASTER_ADDR is not set: NODE_RANK=1 of NNODES=2 needs node 0's address "
                                      "(without it, this node would wait for node 0 on its own machine until the "
                                      "rendezvous times out)"),
], ids=["no-nodes", "nodes-not-a-number", "empty-range", "rank-past-the-nodes", "rank-not-a-number",
        "port-out-of-range", "rank-a-superscript-digit", "node-1-without-master-address"])
def test_bad_node_environment_is_one_line_before_any_launch(environment, expected, monkeypatch, capsys):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["wds_train", "lavi_bridge_demo"]) == 2
    assert capsys.readouterr().err.strip() == f"diffengine: error: environment variable {expected}"


def test_a_rendezvous_port_in_use_on_node_0_is_one_line(monkeypatch, capsys):
    import socket

    with socket.socket() as other_job:
        other_job.bind(("", 0))
        other_job.listen()
        port = other_job.getsockname()[1]
        monkeypatch.setenv("NNODES", "2")
        monkeypatch.setenv("MASTER_PORT", str(port))
        assert main(["wds_train", "lavi_bridge_demo"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"diffengine: error: environment variable MASTER_PORT={port}: the port is in use (another job?) on this "
        "machine, where node 0 serves the rendezvous: choose a free port")


@pytest.mark.parametrize("error, reported", [
    (OSError("Error no file named config.json found in directory m"), True),
    (OSError(28, "No space left on device"), False),
], ids=["model-folder", "full-disk"])
def test_a_model_folder_error_is_one_line_and_a_disk_error_keeps_its_traceback(error, reported, tmp_path,
                                                                               monkeypatch, capsys):
    from diffengine.tools import bench

    def fail(args):
        raise error

    monkeypatch.setattr(bench, "run_flops", fail)
    argv = ["bench", "flops", "--out", str(tmp_path / "flops.json")]
    if reported:  # from_pretrained's errors carry no errno
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == ("diffengine: error: Error no file named config.json found in "
                                                   "directory m")
    else:
        with pytest.raises(OSError, match="No space left on device"):
            main(argv)


def test_debug_shows_the_traceback(assets):
    with pytest.raises(Exception, match="syntax error"):
        main(["wds_train", f"{assets}/syntax.py", "--debug"])


@pytest.mark.parametrize("steps", ["0", "-3", "many"])
def test_infer_refuses_a_step_count_below_one(steps, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "some_bridge", "a prompt", "--steps", steps])
    assert exit_info.value.code == 2
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("command, expected", [
    (["infer", "some_bridge", "a prompt", "--height", "30"], "--height: must be a multiple of 8 pixels, got 30"),
    (["prep-latents", "shards.tar", "out", "--vision-model", "m", "--resolution", "500"],
     "--resolution: must be a multiple of 8 pixels, got 500"),
    (["infer", "some_bridge", "a prompt", "--guidance", "-5"], "--guidance: must be >= 0, got -5"),
    (["infer", "some_bridge", "a prompt", "--guidance", "nan"], "--guidance: must be >= 0, got nan"),
    (["eval", "some_bridge", "--benchmark", "shapes", "--guidance", "-5"], "--guidance: must be >= 0, got -5"),
    (["infer", "some_bridge", "a prompt", "--seed", str(2**70)],
     f"--seed: must be from 0 to 2**64 - 1 ({2**64 - 1}), got {2**70}"),
    (["eval", "some_bridge", "--benchmark", "shapes", "--seed", "-1"],
     f"--seed: must be from 0 to 2**64 - 1 ({2**64 - 1}), got -1")])
def test_image_sides_guidance_and_seeds_are_checked_by_the_parser(command, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err


def test_options_mmengine_reads_itself_are_accepted():
    from mmengine.config import Config

    from diffengine.tools.config_check import check_config, check_epoch_counting
    from diffengine.tools.train import _registries

    cfg = Config(dict(
        train_cfg=dict(type="StreamingIterBasedTrainLoop", max_iters=10),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=-1, by_epoch=False,
                                           priority="VERY_LOW")),
        param_scheduler=[dict(type="LinearLR", start_factor=0.1, by_epoch=True, convert_to_iter_based=True)],
        compile=True))
    check_config(cfg, _registries())
    check_epoch_counting(cfg, _registries())


def test_a_schedule_written_without_by_epoch_counts_epochs_and_is_refused():
    from mmengine.config import Config
    from mmengine.hooks import CheckpointHook

    from diffengine.tools.config_check import check_epoch_counting
    from diffengine.tools.train import _registries

    cfg = Config(dict(train_cfg=dict(type="StreamingIterBasedTrainLoop", max_iters=10),
                      param_scheduler=[dict(type="LinearLR", start_factor=0.01, end=100)]))
    with pytest.raises(ConfigError, match=r"param_scheduler.0: LinearLR counts epochs \(by_epoch=True\)"):
        check_epoch_counting(cfg, _registries())
    check_epoch_counting(Config(dict(param_scheduler=cfg.param_scheduler)), _registries())  # epoch loop

    class IterationCheckpointHook(CheckpointHook):
        def __init__(self, interval: int = 5, **kwargs):
            super().__init__(interval=interval, by_epoch=False, **kwargs)

    # a user's subclass may fix by_epoch itself: only an explicit by_epoch=True is refused for it
    check_epoch_counting(Config(dict(train_cfg=cfg.train_cfg, default_hooks=dict(
        checkpoint=dict(type=IterationCheckpointHook)))), _registries())


def test_only_the_sampling_hooks_options_are_checked_as_sampling_options():
    from mmengine.config import Config
    from mmengine.hooks import Hook

    from diffengine.tools.config_check import check_training_values

    class CosineHook(Hook):
        def __init__(self, scheduler: str = "cosine", num_inference_steps: int | None = None):
            pass

    check_training_values(Config(dict(custom_hooks=[dict(type=CosineHook, scheduler="cosine",
                                                          num_inference_steps=None)])))


def test_a_loader_workers_error_reaches_the_launcher_as_its_message_alone(assets, tiny_t5, tiny_sd, tmp_path,
                                                                           monkeypatch):
    from diffengine.tools.launch import WORKER_ERROR_FILE_ENV
    from diffengine.tools.train import main as worker_main

    monkeypatch.setenv(WORKER_ERROR_FILE_ENV, str(tmp_path / "error"))
    options = [*demo_cfg_options(tiny_t5, tiny_sd, f"{assets}/empty{{0..3}}.tar", max_iters=2),
               "train_dataloader.num_workers=1"]  # the error is raised in a DataLoader worker
    with pytest.raises(SystemExit) as exit_info:
        worker_main([DEMO, "--wds", "--work-dir", str(tmp_path / "work"), "--cfg-options", *options])
    assert exit_info.value.code == 2
    status, message = (tmp_path / "error").read_text().split("\n", 1)
    assert status == "2"
    assert message.startswith("no usable sample in 4 shard(s) (rank 0, worker 0), e.g. ") and "Traceback" not in message


def test_one_process_on_each_of_several_nodes_is_launched_with_torchrun(tiny_t5, tiny_sd, demo_shards, tmp_path,
                                                                        monkeypatch):
    launched = []
    monkeypatch.setattr("diffengine.entry_point.launch_workers",
                        lambda argv, nproc, report_errors=True: launched.append(nproc) or 0)
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.delenv("NPROC_PER_NODE", raising=False)
    assert main(["wds_train", DEMO, "--work-dir", str(tmp_path / "work"), "--cfg-options",
                 *demo_cfg_options(tiny_t5, tiny_sd, demo_shards)]) == 0
    assert launched == [1]


@pytest.mark.parametrize("command, expected", [
    (["infer", "{bridge}", "a prompt", "--device", "gpu"], "--device gpu: not a torch device (cpu, cuda, cuda:1, ...)"),
    (["eval", "{bridge}", "--benchmark", "shapes", "--device", "gpu"], "--device gpu: not a torch device"),
    (["infer", "{bridge}", "a prompt", "--out", "{assets}/syntax.py"], "syntax.py: cannot create this folder"),
    (["eval", "{bridge}", "--benchmark", "shapes", "--out", "{assets}/syntax.py/scores.json"],
     "syntax.py: cannot create this folder"),
    (["infer", "{bridge}", "a prompt", "--negative-prompt", "blurry", "--guidance", "1"],
     "--negative-prompt is used only with --guidance > 1 (classifier-free guidance), got --guidance 1.0"),
    (["eval", "{bridge}", "--metric", "clip_score", "--training-prompts"],
     "--training-prompts chooses ShapesBench's prompts (--benchmark shapes)"),
])
def test_device_and_output_are_checked_before_any_model_loads(command, expected, assets, capsys, monkeypatch):
    for loader in ("diffengine.tools.infer.load_bridge_model", "diffengine.tools.eval.load_text_to_image_model"):
        monkeypatch.setattr(loader, lambda *a: pytest.fail("loaded"))
    command = [part.format(assets=assets, bridge=assets / "bridge_of_layer_0") for part in command]
    assert main(command) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_any_model_loads(assets, capsys, monkeypatch):
    monkeypatch.setattr("diffengine.tools.infer.load_bridge_model", lambda *a: pytest.fail("loaded"))
    assert main(["infer", str(assets / "bridge_of_layer_0"), "a prompt", "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available here (use --device cpu)" in capsys.readouterr().err


def test_a_cuda_device_past_the_visible_ones_is_refused_before_any_model_loads(assets, capsys, monkeypatch):
    monkeypatch.setattr("diffengine.tools.infer.load_bridge_model", lambda *a: pytest.fail("loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["infer", str(assets / "bridge_of_layer_0"), "a prompt", "--device", "cuda:1"]) == 2
    assert ("--device cuda:1: this machine shows 1 CUDA device(s), cuda:0 to cuda:0 (CUDA_VISIBLE_DEVICES decides "
            "which)") in capsys.readouterr().err


# the launching process reads NPROC_PER_NODE x NNODES; a worker that torchrun started, WORLD_SIZE
WORKER_ENVIRONMENT = {"WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": "29500"}


@pytest.mark.parametrize("environment, workers", [({}, 8), ({"NPROC_PER_NODE": "2", "NNODES": "2"}, 2),
                                                  (WORKER_ENVIRONMENT, 1)])
def test_too_few_shards_for_the_readers_is_found_before_any_model_loads(environment, workers, tiny_t5, tiny_sd,
                                                                        demo_shards, tmp_path, monkeypatch):
    from diffengine.tools.train import prepare_config, train_arguments

    for key in ("WORLD_SIZE", "NPROC_PER_NODE", "NNODES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    launcher = ["--launcher", "pytorch"] if "WORLD_SIZE" in environment else []
    args = train_arguments(DEMO, "--work-dir", str(tmp_path / "work"), *launcher, "--cfg-options",
                           *demo_cfg_options(tiny_t5, tiny_sd, demo_shards), f"train_dataloader.num_workers={workers}")
    # the demo shards are 4; prepare_config builds no model
    with pytest.raises(ConfigError, match="4 shard\\(s\\) cannot give each of world_size x num_workers = 8 readers"):
        prepare_config(args, wds=True)


def test_options_that_reject_every_sample_are_found_before_any_model_loads(tiny_t5, tiny_sd, demo_shards, tmp_path):
    from diffengine.tools.train import prepare_config, train_arguments

    args = train_arguments(DEMO, "--work-dir", str(tmp_path / "work"), "--cfg-options",
                           *demo_cfg_options(tiny_t5, tiny_sd, demo_shards), "train_dataloader.image_keys=webp")
    # prepare_config builds no model
    with pytest.raises(ConfigError, match="none of the .* samples of the first 3 shard\\(s\\) is usable"):
        prepare_config(args, wds=True)


def test_a_schedule_that_max_iters_cuts_short_is_a_warning_not_an_error():
    from mmengine.config import Config
    from mmengine.optim import LinearLR

    from diffengine.tools.config_check import check_schedules, schedules_cut_short

    cfg = Config(dict(train_cfg=dict(max_iters=1000),
                      param_scheduler=[dict(type=LinearLR, start_factor=0.1, by_epoch=False, end=2000),
                                       dict(type="ConstantLR", by_epoch=False, begin=1000),
                                       dict(type="ConstantLR", by_epoch=False, begin=100, end=1000)]))
    check_schedules(cfg)
    assert schedules_cut_short(cfg) == [
        "param_scheduler.0: LinearLR ends at iteration 2000, after train_cfg.max_iters=1000: training stops "
        "1000 of its 2000 iterations in",
        "param_scheduler.1: ConstantLR begins at iteration 1000, not before train_cfg.max_iters=1000: it never "
        "acts in this run"]


@pytest.mark.parametrize("scheduler, expected", [
    (dict(type="ConstantLR", factor=0), "param_scheduler.0.factor must be in (0, 1], got 0"),
    (dict(type="LinearLR", start_factor=0, end=10), "param_scheduler.0.start_factor must be in (0, 1], got 0"),
    (dict(type="LinearLR", start_factor=0.1, end_factor=1.5, end=10),
     "param_scheduler.0.end_factor must be in [0, 1], got 1.5"),
    (dict(type="CosineAnnealingLR", eta_min=-1e-5, T_max=10), "param_scheduler.0.eta_min must be >= 0, got -1e-05"),
    (dict(type="CosineAnnealingLR", eta_min=0.0, eta_min_ratio=0.1, T_max=10),
     "param_scheduler.0: give eta_min or eta_min_ratio, not both"),
    (dict(type="LinearLR", start_factor=0.1, end_factor=0, end=10), None),  # a decay to 0 trains
])
def test_a_schedule_that_would_train_nothing_uphill_or_fail_later_is_refused(scheduler, expected):
    from mmengine.config import Config

    from diffengine.tools.config_check import check_schedules

    cfg = Config(dict(train_cfg=dict(max_iters=10), param_scheduler=[dict(by_epoch=False, **scheduler)]))
    if expected is None:
        check_schedules(cfg)
        return
    with pytest.raises(ConfigError) as error:
        check_schedules(cfg)
    assert str(error.value) == expected


def test_model_folders_are_checked_by_the_launching_process(tiny_t5, tiny_sd, demo_shards, tmp_path):
    from diffengine.tools.train import prepare_config, train_arguments

    args = train_arguments(DEMO, "--work-dir", str(tmp_path / "work"), "--cfg-options",
                           *demo_cfg_options(tiny_t5, tiny_sd, demo_shards), f"model.vision_model={tiny_t5}")
    # prepare_config builds no model: what NPROC_PER_NODE > 1 runs before starting the workers
    with pytest.raises(ConfigError, match="model.vision_model .* has no unet/ or transformer/, no vae/, no scheduler/"):
        prepare_config(args, wds=True)


@pytest.mark.parametrize("error, status", [
    (ConfigError("bad option"), 2), (NoUsableSampleError("no sample"), 2),
    (NonFiniteTrainingError("10 optimizer steps in a row"), 1), (TrainingStopped("stopped", 15), 143)])
def test_a_workers_reported_error_reaches_the_launcher_with_its_status(error, status, tmp_path, monkeypatch):
    from diffengine.errors import error_of_status, exit_status
    from diffengine.tools.launch import WORKER_ERROR_FILE_ENV, pass_to_launcher

    monkeypatch.setenv(WORKER_ERROR_FILE_ENV, str(tmp_path / "error"))
    pass_to_launcher(error)
    pass_to_launcher(ConfigError("a later worker's error"))  # the first one is kept
    written, message = (tmp_path / "error").read_text().split("\n", 1)
    relayed = error_of_status(int(written), message)
    assert (exit_status(relayed), str(relayed)) == (status, str(error))


def test_resume_and_overwrite_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["wds_train", DEMO, "--resume", "--overwrite"])
    assert exit_info.value.code == 2
    assert "argument --overwrite: not allowed with argument --resume" in capsys.readouterr().err


@pytest.mark.parametrize("command, expected", [
    (["export", "{bridge}", "{file}/pipeline"],
     "OUT_DIR {file}/pipeline: cannot create this folder ({file} is a file)"),
    (["convert-official", "{assets}/official", "{file}/bridge", "--combo", "t5_unet"],
     "OUT_BRIDGE_DIR {file}/bridge: cannot create this folder ({file} is a file)"),
    (["shapesbench", "run", "--docs", "{file}/docs"], "--docs {file}/docs: cannot create this folder"),
    (["shapesbench", "probe", "--docs", "{file}/docs"], "--docs {file}/docs: cannot create this folder"),
    (["copy-cfg", DEMO, "{file}/configs"], "[Errno 20] Not a directory:")])
def test_an_output_folder_under_a_file_is_one_line_before_any_work(command, expected, assets, bridge_dir, capsys,
                                                                    monkeypatch):
    for work in ("diffengine.tools.infer.load_bridge_model", "diffengine.tools.shapes_assets.write_shape_shards",
                 "diffengine.tools.shapesbench.language_model_folder",
                 "diffengine.models.editors.lavi_bridge.official_weights.convert_official_checkpoint"):
        monkeypatch.setattr(work, lambda *a, **k: pytest.fail("started its work"))
    file = assets / "syntax.py"
    argv = [arg.format(bridge=bridge_dir, file=file, assets=assets) for arg in command]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"diffengine: error: {expected.format(file=file)}")


def test_a_bridge_folder_missing_files_names_them_before_models_load(assets, tmp_path, capsys):
    # bridge.json alone, recording no model that exists here: the files are named first
    assert main(["infer", str(assets / "bridge_of_layer_0"), "a red circle", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"diffengine: error: bridge folder {assets / 'bridge_of_layer_0'} lacks adapter/config.json, "
        "adapter/diffusion_pytorch_model.safetensors: it was not written whole (or its files were moved)")


@pytest.mark.parametrize("command, expected", [
    (["eval", "{bridge}", "--benchmark", "shapes", "--prompts", "p.txt"],
     "--prompts: for --metric clip_score; --benchmark shapes scores ShapesBench's own prompts with its judge"),
    (["eval", "{bridge}", "--benchmark", "shapes", "--batch-size", "4"],
     "--batch-size: for --metric clip_score; --benchmark shapes scores ShapesBench's own prompts with its judge"),
    (["eval", "{bridge}", "--benchmark", "shapes", "--seed", str(2**64 - 2)],
     f"--seed {2**64 - 2}: image j of a prompt uses seed + j, and seed + 3 is above 2**64 - 1 ({2**64 - 1})"),
    (["eval", "{pipeline}", "--benchmark", "shapes", "--text-encoder", "t5", "--dtype", "bfloat16"],
     "--text-encoder and --dtype: rebuild a bridge's base models; {pipeline} is a diffusers pipeline folder, "
     "loaded whole"),
    (["eval", "{export}", "--benchmark", "shapes"],
     "{export} is a LaViBridgePipeline folder: eval scores bridge folders, work dirs and StableDiffusionPipeline "
     "folders; score the bridge folder (or work dir) it was exported from"),
])
def test_options_a_command_would_ignore_are_refused_before_models_load(command, expected, assets, tmp_path, capsys):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    (tmp_path / "export").mkdir()  # what diffengine export writes: loaded as SD, its bridge would be left out
    (tmp_path / "export" / "model_index.json").write_text('{"_class_name": "LaViBridgePipeline"}')
    names = {"bridge": assets / "bridge_of_layer_0", "pipeline": tmp_path / "pipeline", "export": tmp_path / "export"}
    assert main([arg.format(**names) for arg in command]) == 2
    assert capsys.readouterr().err.strip() == f"diffengine: error: {expected.format(**names)}"


@pytest.mark.parametrize("command, function, expected", [
    (["wds_train", DEMO], "_train",
     "diffengine: interrupted (Ctrl-C); a training run continues from its last checkpoint with --resume"),
    (["infer", "bridge", "a red circle"], "_infer", "diffengine: interrupted (Ctrl-C)"),
])
def test_ctrl_c_is_one_line_and_exit_130(command, function, expected, monkeypatch, capsys):
    import diffengine.entry_point as entry_point

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(entry_point, function, interrupted)
    assert main(command) == 130
    assert capsys.readouterr().err.strip() == expected
    with pytest.raises(KeyboardInterrupt):
        main([*command, "--debug"])


@pytest.mark.parametrize(("option", "expected"), [
    ("model.hidden_layer=99", "hidden_layer=99 is out of range: "),
    ("model.caption_dropout=2", "caption_dropout must be in [0, 1) (1 would drop every caption), got 2"),
    ("model.caption_dropout=1.0", "caption_dropout must be in [0, 1) (1 would drop every caption), got 1.0"),
    ("model.weight_dtype=float64", "weight_dtype must be one of "),
    ("model.text_lora.alpha=0", "text_lora.alpha must be a number > 0"),
    ("model.adapter.out_dim=7", "adapter out_dim=7 does not match the vision model's cross_attention_dim=32 "),
    ("model.prediction_type=sample", "prediction_type"),
    ("model.max_length=0", "max_length must be >= 1, got 0"),
    ("model.pad_token=<no_such_token>", "pad_token '<no_such_token>' is not in the vocabulary of "),
], ids=["hidden_layer", "caption_dropout", "caption_dropout_1", "weight_dtype", "lora_alpha", "adapter",
        "prediction_type", "max_length", "pad_token"])
def test_a_bad_model_option_is_refused_before_a_runner_starts(option, expected, tiny_t5, tiny_sd, demo_shards,
                                                              tmp_path, monkeypatch, capsys):
    from diffengine.engine import DiffEngineRunner

    def never(cfg):
        raise AssertionError("a runner was built")

    monkeypatch.setattr(DiffEngineRunner, "from_cfg", never)
    argv = ["wds_train", DEMO, "--work-dir", str(tmp_path / "work"),
            "--cfg-options", *demo_cfg_options(tiny_t5, tiny_sd, demo_shards, max_iters=2), option]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("diffengine: error: ") and expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "work").exists()  # no log folder of a run that never started


def test_auto_weights_that_are_float16_on_this_gpu_need_loss_scaling(tiny_t5, tiny_sd, demo_shards, tmp_path,
                                                                      monkeypatch):
    from diffengine import precision
    from diffengine.tools.train import prepare_config, train_arguments

    # a GPU without bfloat16 (V100, T4): "auto" is float16 there
    monkeypatch.setattr(precision, "weight_dtype_name", lambda name: "float16" if name == "auto" else name)
    args = train_arguments(DEMO, "--work-dir", str(tmp_path / "work"), "--cfg-options",
                           *demo_cfg_options(tiny_t5, tiny_sd, demo_shards), "model.weight_dtype=auto")
    with pytest.raises(ConfigError, match=r"^model.weight_dtype=auto, float16 on this GPU, needs loss scaling, "
                                          r"which optim_wrapper.type=GuardedOptimWrapper lacks"):
        prepare_config(args, wds=True)
