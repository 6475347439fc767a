"""Language-model hyper-parameters as a frozen dataclass, plus the named configs of the released models."""

from __future__ import annotations

from dataclasses import dataclass

from ..configs import ConfigMixin
from ..errors import ConfigError
from ..validation import WEIGHT_BYTES, check_fields, choice, ensure_memory, int_tuple, real

PATTERNS = ("delay", "parallel", "unroll")  # the providers of wavecraft.lm.patterns
MAX_DELAY = 512  # steps a codebook may lag (the released models: at most 3)


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
        self.validate()

    def validate(self) -> None:
        """Check every field (types, ranges, divisibility, delays); ``ValueError`` naming the first bad one.

        Integral floats are stored as ``int`` and lists as tuples, so configs read from JSON compare equal.
        """
        check_fields(self, _INT_RANGES, _FLAGS)
        object.__setattr__(self, "max_period", real("max_period", self.max_period, 0.0, 1e12, open_lo=True))
        object.__setattr__(self, "positional_scale", real("positional_scale", self.positional_scale, 0.0, 1e6))
        object.__setattr__(self, "norm_eps", real("norm_eps", self.norm_eps, 0.0, 1.0, open_lo=True))
        choice("pattern", self.pattern, PATTERNS)
        object.__setattr__(self, "delays", int_tuple("delays", self.delays, 0, MAX_DELAY, 1, 1024))
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.pattern == "delay" and len(self.delays) != self.n_q:
            raise ConfigError(f"{len(self.delays)} delays for {self.n_q} codebooks")

    def num_weights(self) -> int:
        """Elements of the model's parameters (what :class:`~wavecraft.lm.model.LMModel` allocates)."""
        d = self.dim
        attention = 4 * d * d + (4 * d if self.bias_attn else 0)
        layer = attention + 2 * d + 2 * self.hidden_scale * d * d + 2 * d
        layer += (self.hidden_scale * d + d) if self.bias_ff else 0
        if self.cross_attention:
            layer += attention + 2 * d
        heads = self.n_q * (self.card * d + (self.card if self.bias_proj else 0))
        return self.n_q * (self.card + 1) * d + self.num_layers * layer + 2 * d + heads

    def check_memory(self, copies: int = 1) -> None:
        """``ValueError`` if ``copies`` float32 copies of the model's weights do not fit in available memory."""
        ensure_memory(copies * WEIGHT_BYTES * self.num_weights(), "this language model config")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def special_token(self) -> int:
        return self.card


#: Inclusive ranges of the integer fields: generous around the released models (musicgen-large: dim 2048, 48
#: layers), but bounded, so that a typo or a corrupt file is refused before anything is built.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "dim": (1, 16384), "num_heads": (1, 1024), "num_layers": (1, 1024), "hidden_scale": (1, 64), "n_q": (1, 1024),
    "card": (1, 2 ** 20),
}
_FLAGS = ("cross_attention", "causal", "bias_attn", "bias_ff", "bias_proj", "cross_attention_mask")

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
