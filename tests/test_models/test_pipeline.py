"""LaViBridgePipeline: the one inference path, LoRA merging, and the vision LoRA in stock diffusers."""
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from diffengine.models import LaViBridge, LaViBridgePipeline
from diffengine.models.lora import lora_layers

PROMPTS = ["a red circle on a white background", "a blue square"]
KWARGS = dict(num_inference_steps=2, height=32, width=32, output_type="np")


def unet_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 4, 16, 16, generator=generator), torch.randn(1, 16, 32, generator=generator)


def test_infer_is_the_pipeline_and_restores_train_mode(tiny_bridge, bridge_dir):
    expected = tiny_bridge.infer(PROMPTS, negative_prompt="blurry", seed=3, scheduler="ddim", **KWARGS)
    assert tiny_bridge.training
    pipeline = LaViBridgePipeline.from_model(tiny_bridge, "ddim")
    tiny_bridge.eval()
    by_seed = pipeline(PROMPTS, negative_prompt="blurry", seed=3, **KWARGS).images
    by_generator = pipeline(PROMPTS, negative_prompt=["blurry"] * 2,
                            generator=torch.Generator().manual_seed(3), **KWARGS).images
    np.testing.assert_array_equal(by_seed, expected)
    np.testing.assert_array_equal(by_generator, expected)


@pytest.mark.parametrize("language_model, options", [
    ("tiny_t5", {}), ("tiny_llama", dict(hidden_layer=-2, text_attention_mask=True))],
    ids=["t5", "llama-layer-2-masked"])
def test_encode_prompt_is_the_training_text_path(request, tiny_sd, language_model, options):
    model = LaViBridge(request.getfixturevalue(language_model), tiny_sd, max_length=16,
                       **options).eval()
    with torch.no_grad():
        expected = model.encode_text(PROMPTS)
        # a reloaded tokenizer may pad on the left: the pipeline pads right, as training does
        model.language.tokenizer.padding_side = "left"
        text = LaViBridgePipeline.from_model(model).encode_prompt(PROMPTS)
        assert torch.equal(text.context, expected.context) and torch.equal(text.mask, expected.mask)
        assert text.pooled is expected.pooled is None


def test_merged_lora_matches_unmerged(tiny_bridge, bridge_dir, tiny_sd):
    tiny_bridge.eval()
    ids, mask = tiny_bridge.language.tokenize(PROMPTS, tiny_bridge.device)
    sample, context = unet_inputs()

    def outputs() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return (tiny_bridge.language(ids, mask),
                    tiny_bridge.unet(sample, 10, encoder_hidden_states=context).sample)

    unmerged = outputs()
    LaViBridgePipeline.from_model(tiny_bridge).merge_lora()
    assert not lora_layers(tiny_bridge.language.model) and not lora_layers(tiny_bridge.unet)
    torch.testing.assert_close(outputs(), unmerged)
    # a plain UNet again: the base checkpoint's parameter names, but the LoRA's effect in its weights
    stock = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    assert tiny_bridge.unet.state_dict().keys() == stock.state_dict().keys()
    with torch.no_grad():
        assert not torch.allclose(stock(sample, 10, encoder_hidden_states=context).sample, unmerged[1])


def test_vision_lora_loads_into_a_stock_unet_with_diffusers_loader(tiny_bridge, bridge_dir, tiny_sd):
    folder = bridge_dir / "vision_lora"
    unet = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    # the bridge's keys have no "unet." prefix; the saved config keeps alpha and dropout
    unet.load_lora_adapter(str(folder), weight_name="adapter_model.safetensors", prefix=None,
                           metadata=LoraConfig.from_pretrained(folder).to_dict())
    sample, context = unet_inputs()
    tiny_bridge.eval()
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, 10, encoder_hidden_states=context).sample,
                                   tiny_bridge.unet(sample, 10, encoder_hidden_states=context).sample,
                                   rtol=0, atol=0)


def test_pipeline_rejects_bad_arguments(tiny_bridge):
    pipeline = LaViBridgePipeline.from_model(tiny_bridge)
    with pytest.raises(ValueError, match="either seed or generator"):
        pipeline("x", seed=1, generator=torch.Generator(), **KWARGS)
    with pytest.raises(ValueError, match="2 negative prompts for 1 prompts"):
        pipeline("x", negative_prompt=["a", "b"], **KWARGS)
    # torch.Generator would overflow (2**70), wrap around (-1) or read a float's bits
    for seed in (2**70, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"seed must be a whole number from 0 to 2\*\*64 - 1 .*got {seed!r}"):
            tiny_bridge.infer("x", seed=seed, **KWARGS)
    assert len(tiny_bridge.infer("x", seed=2**64 - 1, **KWARGS)) == 1


def test_every_sampler_predicts_what_the_bridge_trained_on_a_schedule_that_names_no_prediction_type(tiny_sd, tmp_path):
    # SD1.4's scheduler_config.json has no prediction_type: diffusers takes it by default, and
    # from_config drops such keys, so a v_prediction set on it must be passed on explicitly
    import json
    import shutil

    from diffengine.models.losses.ddpm import ddpm_training_scheduler
    from diffengine.models.vision.samplers import SAMPLERS_BY_SCHEDULE, inference_scheduler

    vision = shutil.copytree(tiny_sd, tmp_path / "sd14_like")
    config_file = vision / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    del config["prediction_type"]
    config_file.write_text(json.dumps(config))
    training = ddpm_training_scheduler(str(vision), "v_prediction")
    for name in SAMPLERS_BY_SCHEDULE["ddpm"]:
        assert inference_scheduler(name, training.config).config.prediction_type == "v_prediction", name
    assert inference_scheduler(None, ddpm_training_scheduler(str(vision)).config).config.prediction_type == "epsilon"
