"""Language-model hyper-parameters as a frozen dataclass, plus the named configs of the released models."""

from __future__ import annotations

from dataclasses import dataclass

from ..configs import ConfigMixin


@dataclass(frozen=True)
class LMConfig(ConfigMixin):
    """The MusicGen transformer: summed codebook embeddings → pre-norm layers → one head per codebook.

    ``card`` is the codebook size; token id ``card`` is the special (empty / BOS) token. ``pattern`` and
    ``delays`` describe how codebooks are interleaved in time (see :mod:`wavecraft.lm.patterns`).
    """

    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    hidden_scale: int = 4
    n_q: int = 4
    card: int = 2048
    cross_attention: bool = True
    causal: bool = True
    bias_attn: bool = False
    bias_ff: bool = False
    bias_proj: bool = False
    max_period: float = 10000.0
    positional_scale: float = 1.0
    norm_eps: float = 1e-5
    #: Key padding mask in cross-attention. AudioCraft has none (padded text positions are zero vectors that still
    #: take softmax mass); transformers masks them. Each checkpoint layout keeps its reference's behaviour.
    cross_attention_mask: bool = False
    pattern: str = "delay"
    delays: tuple[int, ...] = (0, 1, 2, 3)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.pattern == "delay" and len(self.delays) != self.n_q:
            raise ValueError(f"{len(self.delays)} delays for {self.n_q} codebooks")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def special_token(self) -> int:
        return self.card


STEREO_DELAYS = (0, 0, 1, 1, 2, 2, 3, 3)

#: Transformer sizes of the released checkpoints (weights are loaded separately).
lm_configs: dict[str, LMConfig] = {
    "musicgen-small": LMConfig(dim=1024, num_heads=16, num_layers=24),
    "musicgen-medium": LMConfig(dim=1536, num_heads=24, num_layers=48),
    "musicgen-large": LMConfig(dim=2048, num_heads=32, num_layers=48),
    "musicgen-melody": LMConfig(dim=1536, num_heads=24, num_layers=48, cross_attention=False),
    "musicgen-stereo-small": LMConfig(dim=1024, num_heads=16, num_layers=24, n_q=8, delays=STEREO_DELAYS),
    "audiogen-medium": LMConfig(dim=1536, num_heads=24, num_layers=48),
    "debug": LMConfig(dim=64, num_heads=2, num_layers=2, card=64),
}
