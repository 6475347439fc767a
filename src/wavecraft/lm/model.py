"""The MusicGen language model: the plain transformer of :mod:`wavecraft.lm.transformer` plus incremental decoding
through the backends that :mod:`wavecraft.lm.decode_runner` chooses among.

The names the package has always imported from here stay here (re-exported): :class:`LMModel`,
:class:`DecodeState`, the layers and :func:`sin_embedding`.
"""

from __future__ import annotations

import torch

from . import decode_runner
from .config import LMConfig
from .decode_runner import CompiledStep, DecodeState
from .transformer import (
    CrossAttention,
    KVCache,
    SelfAttention,
    Transformer,
    TransformerLayer,
    TransformerLM,
    band_mask,
    causal_mask,
    sin_embedding,
)

__all__ = ["CrossAttention", "DecodeState", "KVCache", "LMModel", "SelfAttention", "Transformer",
           "TransformerLayer", "band_mask", "causal_mask", "sin_embedding"]


class LMModel(TransformerLM):
    """Codes in, next-step logits out: ``forward`` over a whole sequence (:class:`TransformerLM`), ``step`` for
    decoding one or a few positions at a time with a :class:`DecodeState` from :meth:`new_state`.

    Shapes: ``forward(sequence [B, K, S], ...) -> logits [B, K, S, card]`` where ``sequence`` is already laid out
    by a codebook pattern, and ``logits[:, :, s]`` predicts step ``s + 1``.
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__(cfg)
        self._compiled_step: CompiledStep | None = None

    def compile_decoding(self, mode: str | None = None) -> None:
        """Run one-step decoding calls through ``torch.compile`` (see :func:`decode_runner.compile_step`)."""
        self._compiled_step = decode_runner.compile_step(self, mode)

    @property
    def compiled(self) -> bool:
        return self._compiled_step is not None

    def new_state(self, batch: int, max_len: int, cross_src: torch.Tensor | None = None,
                  cross_mask: torch.Tensor | None = None, summed: torch.Tensor | None = None) -> DecodeState:
        """Preallocate caches for ``max_len`` positions (prefix included) and the cross-attention keys/values.

        ``cross_src [B, L, D]``; ``cross_mask [B, L]`` (1 = real token) is used only if the config asks for it.
        Prepended conditions are never masked: neither reference masks padded prefix positions.
        ``summed [B, F, D]``: a condition aligned with the codec frames (see :class:`DecodeState`).
        """
        return decode_runner.new_state(self, batch, max_len, cross_src, cross_mask, summed, compiled=self.compiled)

    def step(self, sequence: torch.Tensor, state: DecodeState, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Run the next ``S`` steps incrementally: ``sequence [B, K, S] -> logits [B, K, S, card]``.

        ``prefix [B, P, D]`` (prepended conditions) goes in front on the first call; its positions are not
        returned. Positions continue from ``state.pos``.
        """
        return decode_runner.step(self, sequence, state, prefix, self._compiled_step)
