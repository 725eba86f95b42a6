"""The LaVi-Bridge text adapter: maps language-model hidden states to the vision model's context."""
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...vision import TextConditioning


def adapter_dims(lm_width: int, context_width: int, overrides: dict | None = None) -> dict:
    """The adapter's (in, int, out) dims by the paper's rule, LM width -> (LM + context) // 2 ->
    context width (its 896 / 2432 / 2560), with any of them given in ``overrides``."""
    dims = {"in_dim": lm_width, "out_dim": context_width, **(overrides or {})}
    dims.setdefault("int_dim", (dims["in_dim"] + dims["out_dim"]) // 2)
    return dims


class LaViBridgeTextAdapter(ModelMixin, ConfigMixin):
    """LayerNorm -> FeedForward(GEGLU) -> LayerNorm -> FeedForward, as in the paper.

    Parameter names (``norm1``, ``ff1.net.0.proj``, ...) match the authors' released ``adapter/``
    folders so those load with ``from_pretrained`` unchanged.

    ``pooled_dim`` adds a pooled head for denoisers that also take one text vector per prompt
    (SDXL's 1280-wide ``text_embeds``): the masked mean of the adapter's output over the real
    tokens, then a Linear to ``pooled_dim``. Why that and not a summary token: encoder LMs (T5)
    and decoder LMs (Llama) have no common "EOS summary" position (T5's EOS is not trained as
    one, a causal LM's last token sees everything but padding moves it), whereas the mean over
    real tokens is defined for every family and pools the very space the adapter is trained to
    make the denoiser's context. Without ``pooled_dim`` (SD1.5, PixArt) there is no such head,
    so older adapters and the authors' folders load unchanged.
    """

    @register_to_config
    def __init__(self, in_dim: int, int_dim: int, out_dim: int, mult: int = 4, dropout: float = 0.1,
                 pooled_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim)
        self.ff1 = FeedForward(in_dim, int_dim, mult=mult, dropout=dropout, activation_fn="geglu")
        self.norm2 = nn.LayerNorm(int_dim)
        self.ff2 = FeedForward(int_dim, out_dim, mult=mult, dropout=dropout, activation_fn="geglu")
        self.pooled_proj = nn.Linear(out_dim, pooled_dim) if pooled_dim is not None else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Return adapted hidden states of shape (batch, tokens, out_dim)."""
        return self.ff2(self.norm2(self.ff1(self.norm1(hidden_states))))

    def pool(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """The pooled embedding (batch, pooled_dim) of adapted states; None without a pooled head."""
        if self.pooled_proj is None:
            return None
        weights = mask.to(context.dtype).unsqueeze(-1)
        # clamp: an all-padding row (impossible with an EOS token) would divide by zero
        mean = (context * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.pooled_proj(mean)

    def conditioning(self, hidden_states: torch.Tensor, mask: torch.Tensor,
                     dtype: torch.dtype) -> TextConditioning:
        """LM hidden states and their mask -> the denoiser's text conditioning in ``dtype``."""
        context = self(hidden_states.to(self.dtype))
        pooled = self.pool(context, mask)
        return TextConditioning(context.to(dtype), mask, None if pooled is None else pooled.to(dtype))
