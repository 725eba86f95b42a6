"""Every packaged config loads, and builds with tiny stand-ins for its hub models."""
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from diffengine.engine import DiffEngineRunner, ParamGroupsOptimWrapperConstructor
from diffengine.registry import MODELS
from diffengine.tools.config_lookup import list_configs

CONFIGS = list_configs()


def test_the_papers_three_combinations_demo_and_shapesbench_are_packaged():
    assert {"lavi_bridge_v15_laion", "lavi_bridge_llama2_v15_laion", "lavi_bridge_pixart_512_laion",
            "lavi_bridge_v15_laion_latents", "lavi_bridge_demo", "lavi_bridge_minilm_shapes",
            "lavi_bridge_tinyllama_shapes", "stable_diffusion_shapes_32", "autoencoder_kl_shapes_32"} <= set(CONFIGS)


def test_paper_config_keeps_the_papers_hyper_parameters():
    cfg = Config.fromfile(str(CONFIGS["lavi_bridge_v15_laion"]))
    assert cfg.model.text_encoder == "google-t5/t5-large"
    assert dict(cfg.model.adapter) == dict(in_dim=1024, int_dim=896, out_dim=768)
    assert cfg.model.max_length == 77
    for lora in (cfg.model.text_lora, cfg.model.vision_lora):
        assert (lora.rank, lora.alpha, lora.dropout) == (32, 32, 0.1)
    assert dict(cfg.optim_wrapper.paramwise_cfg.group_lr) == dict(
        vision_lora=1e-4, text_lora=5e-6, adapter=1e-4)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.betas, optimizer.weight_decay) == ((0.9, 0.999), 1e-2)
    assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
    assert cfg.train_dataloader.resolution == 512


# each model path of a shipped config and the session fixture of a tiny model of its family
# (with the subfolder holding it, where it is not the whole folder)
STAND_INS = {
    "google-t5/t5-large": "tiny_t5",
    "data/demo/t5": "tiny_t5",
    "meta-llama/Llama-2-7b-hf": "tiny_llama",
    "data/shapes/tiny_llama": "tiny_llama",
    "data/shapes/minilm": "tiny_bert",
    "data/shapes/untrained/stage1/text_encoder": "tiny_bert",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "tiny_sd",
    "data/demo/stage1": "tiny_sd",
    "data/shapes/stage1": "tiny_sd",
    "data/shapes/untrained/stage1": "tiny_sd",
    "data/shapes/untrained/vae": ("tiny_sd", "vae"),
    "PixArt-alpha/PixArt-XL-2-512x512": "tiny_pixart",
    "stabilityai/stable-diffusion-xl-base-1.0": "tiny_sdxl",
    "stabilityai/stable-diffusion-3.5-medium": "tiny_sd3",
    "black-forest-labs/FLUX.1-dev": "tiny_flux",
}
# the optimizer groups of each editor
GROUPS = {"LaViBridge": {"vision_lora", "text_lora", "adapter"},
          "StableDiffusion": {"unet", "text_encoder"}, "AutoencoderKLTrainer": {"vae"}}


def test_paper_combination_configs_keep_their_hyper_parameters():
    llama = Config.fromfile(str(CONFIGS["lavi_bridge_llama2_v15_laion"])).model
    assert (llama.text_encoder, llama.max_length, llama.pad_token, llama.weight_dtype) == (
        "meta-llama/Llama-2-7b-hf", 77, "<unk>", "bfloat16")
    assert dict(llama.adapter) == dict(in_dim=4096, int_dim=2432, out_dim=768)
    pixart = Config.fromfile(str(CONFIGS["lavi_bridge_pixart_512_laion"]))
    assert (pixart.model.vision_model, pixart.model.max_length, pixart.model.text_attention_mask) == (
        "PixArt-alpha/PixArt-XL-2-512x512", 120, True)
    assert dict(pixart.model.adapter) == dict(in_dim=1024, int_dim=2560, out_dim=4096)
    assert dict(pixart.optim_wrapper.paramwise_cfg.group_lr) == dict(
        vision_lora=2e-5, text_lora=5e-6, adapter=2e-5)
    for model in (llama, pixart.model):
        for lora in (model.text_lora, model.vision_lora):
            assert (lora.rank, lora.alpha, lora.dropout) == (32, 32, 0.1)


def test_sdxl_config_is_t5_large_to_sdxl_base_at_1024_px_on_the_fast_path():
    cfg = Config.fromfile(str(CONFIGS["lavi_bridge_t5_sdxl_laion"]))
    model = cfg.model
    assert (model.text_encoder, model.vision_model) == ("google-t5/t5-large",
                                                        "stabilityai/stable-diffusion-xl-base-1.0")
    assert dict(model.adapter) == dict(in_dim=1024, int_dim=1536, out_dim=2048, pooled_dim=1280)
    assert (model.weight_dtype, model.channels_last, model.gradient_checkpointing) == ("auto", False, True)
    assert cfg.optim_wrapper.dtype == "auto" and cfg.train_dataloader.resolution == 1024
    samplers = [h for h in cfg.custom_hooks if "prompts" in h]
    assert samplers and all((h.height, h.width) == (1024, 1024) for h in samplers)


@pytest.mark.parametrize(("name", "vision_model", "pooled_dim", "weighting_scheme", "sampling"), [
    ("lavi_bridge_llama2_sd35_medium_laion", "stabilityai/stable-diffusion-3.5-medium", 2048, "logit_normal",
     (40, 4.5)),
    ("lavi_bridge_llama2_flux_dev_laion", "black-forest-labs/FLUX.1-dev", 768, "none", (28, 1.0))])
def test_flow_matching_configs_bridge_llama_2_at_1024_px(name, vision_model, pooled_dim, weighting_scheme,
                                                         sampling):
    cfg = Config.fromfile(str(CONFIGS[name]))
    model = cfg.model
    assert (model.text_encoder, model.vision_model, model.pad_token) == ("meta-llama/Llama-2-7b-hf", vision_model,
                                                                         "<unk>")
    # the adapter rule: 4096 -> (4096 + 4096) // 2 -> joint_attention_dim 4096, and the pooled width
    assert dict(model.adapter) == dict(in_dim=4096, int_dim=4096, out_dim=4096, pooled_dim=pooled_dim)
    assert model.flow_matching.weighting_scheme == weighting_scheme
    assert (model.weight_dtype, model.gradient_checkpointing) == ("bfloat16", True)
    assert cfg.optim_wrapper.dtype == "auto" and cfg.train_dataloader.resolution == 1024
    samplers = [h for h in cfg.custom_hooks if "prompts" in h]
    assert samplers and all((h.height, h.width, h.get("scheduler")) == (1024, 1024, None) for h in samplers)
    assert all((h.num_inference_steps, h.guidance_scale) == sampling for h in samplers)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_with_tiny_stand_ins(name, request, demo_shards, monkeypatch):
    # the GPU configs' mixed-precision wrapper insists on a GPU; without one its GradScaler is off
    monkeypatch.setattr("mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available", lambda: True)
    cfg = Config.fromfile(str(CONFIGS[name]))
    init_default_scope(cfg.get("default_scope", "diffengine"))
    for key in ("text_encoder", "vision_model", "vae"):
        if key in cfg.model:
            fixture, *subfolder = ((STAND_INS[cfg.model[key]],) if isinstance(
                STAND_INS[cfg.model[key]], str) else STAND_INS[cfg.model[key]])
            cfg.model[key] = "/".join([request.getfixturevalue(fixture), *subfolder])
    if "adapter" in cfg.model:
        cfg.model.adapter = None
    model = MODELS.build(cfg.model)
    optim_cfg = cfg.optim_wrapper.copy()
    constructor = optim_cfg.pop("constructor")
    assert constructor is ParamGroupsOptimWrapperConstructor
    paramwise = optim_cfg.pop("paramwise_cfg", None)
    optim_wrapper = constructor(optim_cfg, paramwise)(model)
    assert {g["name"] for g in optim_wrapper.optimizer.param_groups} == GROUPS[type(model).__name__]
    # a config that trains from latent shards gets the demo shards encoded by the tiny VAE
    shards = demo_shards if cfg.model.get("vae_encoder", True) else request.getfixturevalue("latent_shards")
    loader_cfg = dict(cfg.train_dataloader, shards=shards, num_workers=0,
                      num_samples_per_epoch=64, batch_size=2, resolution=32)
    batch = next(iter(DiffEngineRunner.build_dataloader(loader_cfg)))
    losses = model(model.data_preprocessor(batch)["inputs"])
    assert all(loss.ndim == 0 for loss in losses.values())


def test_missing_shards_are_a_clear_error():
    cfg = Config.fromfile(str(CONFIGS["lavi_bridge_v15_laion"]))
    with pytest.raises(FileNotFoundError, match="data/laion"):
        DiffEngineRunner.build_dataloader(dict(cfg.train_dataloader, num_workers=0))


def test_a_yaml_config_loads_as_mmengine_reads_it(tmp_path):
    # the Python syntax pre-check is for .py configs only (it called every YAML config a syntax error)
    from diffengine.tools.train import load_config_file

    (tmp_path / "run.yaml").write_text("train_cfg:\n  max_iters: 3\n")
    assert load_config_file(tmp_path / "run.yaml").train_cfg == {"max_iters": 3}
