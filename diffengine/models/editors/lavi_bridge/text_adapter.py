"""The LaVi-Bridge text adapter: maps language-model hidden states to the vision model's context."""
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class LaViBridgeTextAdapter(ModelMixin, ConfigMixin):
    """LayerNorm -> FeedForward(GEGLU) -> LayerNorm -> FeedForward, as in the paper.

    Parameter names (``norm1``, ``ff1.net.0.proj``, ...) match the authors' released ``adapter/``
    folders so those load with ``from_pretrained`` unchanged.
    """

    @register_to_config
    def __init__(self, in_dim: int, int_dim: int, out_dim: int, mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim)
        self.ff1 = FeedForward(in_dim, int_dim, mult=mult, dropout=dropout, activation_fn="geglu")
        self.norm2 = nn.LayerNorm(int_dim)
        self.ff2 = FeedForward(int_dim, out_dim, mult=mult, dropout=dropout, activation_fn="geglu")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Return adapted hidden states of shape (batch, tokens, out_dim)."""
        return self.ff2(self.norm2(self.ff1(self.norm1(hidden_states))))
