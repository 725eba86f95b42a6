"""Speed options of the training step change speed, not results: channels-last, torch.compile and
the "auto" precision of the GPU configs."""
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffengine.engine import GuardedAmpOptimWrapper
from diffengine.models import LaViBridge
from diffengine.models.lora import set_lora_input_casting
from diffengine.precision import autocast_dtype_name, weight_dtype_name
from tests.helpers import fixed_batch

NO_DROPOUT = dict(rank=4, dropout=0.0)  # dropout masks follow memory layout; compare without them


def loss_and_grads(tiny_t5: str, tiny_sd: str, **options) -> tuple[LaViBridge, float, dict]:
    """A bridge built from the same seed, its loss on a fixed batch, noise and timesteps, and its gradients."""
    torch.manual_seed(0)
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=NO_DROPOUT, vision_lora=NO_DROPOUT,
                       **options)
    torch.manual_seed(7)
    loss = model(fixed_batch())["loss"]
    loss.backward()
    return model, loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(grads: dict, reference: dict, tolerance: float) -> None:
    assert grads.keys() == reference.keys()
    scale = max(g.abs().max().item() for g in reference.values())
    assert scale > 0
    for name, grad in grads.items():
        assert (grad - reference[name]).abs().max().item() <= tolerance * scale, name


@pytest.fixture(scope="module")
def eager(tiny_t5, tiny_sd):
    return loss_and_grads(tiny_t5, tiny_sd)


def test_channels_last_keeps_the_loss_and_gradients(tiny_t5, tiny_sd, eager, tmp_path):
    _, loss, grads = eager
    model, fast_loss, fast_grads = loss_and_grads(tiny_t5, tiny_sd, channels_last=True)
    conv = model.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert model.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast_loss == pytest.approx(loss, rel=1e-5)
    assert_same_gradients(fast_grads, grads, 1e-4)
    # a speed option: the bridge does not record it, so it loads for export in the plain layout
    assert "channels_last" not in json.loads((model.save_bridge(tmp_path / "b") / "bridge.json").read_text())


@pytest.mark.slow
def test_torch_compile_keeps_the_loss_gradients_and_parameter_names(tiny_t5, tiny_sd, eager):
    """``aot_eager`` runs torch.compile's graph capture and AOT autograd without generating C++
    (inductor needs minutes for a UNet on two cores); the backend is only an argument here."""
    reference, loss, grads = eager
    model, compiled_loss, compiled_grads = loss_and_grads(tiny_t5, tiny_sd,
                                                          torch_compile=dict(backend="aot_eager"))
    assert model.unet._compiled_call_impl is not None
    assert model.language.model._compiled_call_impl is not None
    assert compiled_loss == pytest.approx(loss, rel=1e-6)
    assert_same_gradients(compiled_grads, grads, 1e-5)
    # compiled in place: checkpoints and bridges keep their keys
    assert model.state_dict().keys() == reference.state_dict().keys()


@pytest.mark.parametrize(("cuda", "bf16", "weights", "autocast"), [
    (False, False, "float32", "bfloat16"),  # CPU: float32 weights (its half-precision matmuls are slow)
    (True, True, "bfloat16", "bfloat16"),  # Ampere and later
    (True, False, "float16", "float16"),  # V100, T4: float16 autocast, with the GradScaler's loss scaling
])
def test_auto_precision_follows_the_hardware(monkeypatch, cuda, bf16, weights, autocast):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    # MMEngine's AmpOptimWrapper insists on a GPU
    monkeypatch.setattr("mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available", lambda: True)
    assert (weight_dtype_name("auto"), autocast_dtype_name("auto")) == (weights, autocast)
    assert weight_dtype_name("float16") == "float16" and autocast_dtype_name(None) is None
    wrapper = GuardedAmpOptimWrapper(optimizer=torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]),
                                     dtype="auto")
    assert wrapper.cast_dtype == getattr(torch, autocast)


def test_a_bridge_records_the_weight_dtype_auto_chose(tiny_t5, tiny_sd):
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, weight_dtype="auto")
    assert model.bridge_config["weight_dtype"] == "float32" and model.unet.dtype == torch.float32
    with pytest.raises(ValueError, match="weight_dtype must be one of float32, bfloat16, float16 or auto"):
        LaViBridge(tiny_t5, tiny_sd, weight_dtype="half")


@pytest.mark.parametrize("options, expected", [
    (dict(mode="max-autotun"), "torch_compile.mode must be one of default, .*max-autotune.*, got 'max-autotun'"),
    (dict(mode="max-autotune", options={"triton.cudagraphs": False}),
     "torch_compile: give mode or options, not both"),
    (dict(fulgraph=True), "torch_compile.fulgraph: torch.compile has no option 'fulgraph'; it takes .*fullgraph"),
])
def test_torch_compile_options_are_checked_before_any_weight_loads(tiny_t5, tiny_sd, options, expected):
    with pytest.raises(ValueError, match=expected):
        LaViBridge.check_arguments(text_encoder=tiny_t5, vision_model=tiny_sd, torch_compile=options)
    LaViBridge.check_arguments(text_encoder=tiny_t5, vision_model=tiny_sd,
                               torch_compile=dict(mode="max-autotune", fullgraph=False))


class CountedCopies(TorchDispatchMode):
    """Counts the dtype copies (``aten._to_copy``) dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.copies += func is torch.ops.aten._to_copy.default
        return func(*args, **(kwargs or {}))


def test_lora_inputs_stay_in_the_autocast_dtype_under_autocast(tiny_t5, tiny_sd):
    """peft casts each LoRA input to the float32 LoRA weights, and autocast casts it straight back:
    under autocast the bridge skips that round trip (same loss and gradients, bit for bit, and at
    least one copy fewer per LoRA layer); without autocast the cast is back, as bfloat16 frozen
    weights need it."""
    torch.manual_seed(0)
    model = LaViBridge(tiny_t5, tiny_sd, max_length=16, text_lora=NO_DROPOUT, vision_lora=NO_DROPOUT,
                       weight_dtype="bfloat16")
    layers = model._lora_layers
    assert len(layers) > 10

    def step() -> tuple[torch.Tensor, dict, int]:
        model.zero_grad()
        torch.manual_seed(7)
        with CountedCopies() as counted, torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(fixed_batch())["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, \
            counted.copies

    loss, grads, copies = step()
    assert not any(layer.cast_input_dtype_enabled for layer in layers)
    with pytest.MonkeyPatch.context() as patch:  # peft's default: cast every LoRA input
        patch.setattr(model, "_match_lora_input_casting_to_autocast", lambda: None)
        set_lora_input_casting(layers, True)
        cast_loss, cast_grads, cast_copies = step()
    assert torch.equal(loss, cast_loss)
    assert grads.keys() == cast_grads.keys()
    assert all(torch.equal(grads[name], cast_grads[name]) for name in grads)
    assert cast_copies - copies >= len(layers)
    set_lora_input_casting(layers, False)
    torch.manual_seed(7)
    assert torch.isfinite(model(fixed_batch())["loss"])  # bfloat16 base layers, float32 LoRA: no dtype error
    assert all(layer.cast_input_dtype_enabled for layer in layers)
