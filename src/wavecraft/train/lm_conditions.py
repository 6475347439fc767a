"""Conditions while training the LM: frozen encoders run once per batch, trained projections run in the graph.

A batch carries :class:`RawConditions`: what the frozen parts produce (text encoder states, melody chroma),
before the conditioners' ``output_proj``. Dropout (classifier-free guidance and per-attribute) replaces rows of
these raw inputs by their null values, then :meth:`ConditionProjector.project` applies the trained projections and
the fuser, so the gradients reach the projections as in AudioCraft's training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..conditioning import ConditionFuser, SentenceConditioner, TextConditioner
from ..conditioning.chroma import ChromaConditioner
from ..lm.generate import Conditions


@dataclass
class RawConditions:
    """Per conditioner (in :attr:`ConditionProjector.names` order) the frozen encoder's output for a batch:
    ``(hidden [B, L, E], mask [B, L])`` for text, ``(chroma [B, F, n_chroma],)`` for melody."""

    parts: tuple[tuple[torch.Tensor, ...], ...]

    @property
    def batch_size(self) -> int:
        return self.parts[0][0].shape[0]

    def to(self, device: torch.device | str) -> RawConditions:
        return RawConditions(tuple(tuple(t.to(device) for t in part) for part in self.parts))


class ConditionProjector(nn.Module):
    """The conditioners of a model (text and/or chroma) and its fuser, split for training; see the module doc."""

    def __init__(self, conditioners: nn.ModuleDict, fuser: ConditionFuser) -> None:
        super().__init__()
        self.conditioners = conditioners
        self.fuser = fuser
        for name, module in conditioners.items():
            if not isinstance(module, TextConditioner | ChromaConditioner):
                raise TypeError(f"conditioner {name!r} ({type(module).__name__}) cannot be trained")
        # Text before waveform conditions, as at inference (this fixes the melody model's prefix order).
        self.names = sorted(conditioners.keys(), key=lambda n: isinstance(conditioners[n], ChromaConditioner))

    @property
    def has_melody(self) -> bool:
        return any(isinstance(m, ChromaConditioner) for m in self.conditioners.values())

    @torch.no_grad()
    def encode(self, texts: Sequence[str | None], wav: torch.Tensor | None = None,
               chroma: torch.Tensor | None = None) -> RawConditions:
        """Frozen part of the conditions for a batch: ``texts`` (``None`` = no text), and for melody models either
        ``wav [B, 1, T]`` at the model rate or precomputed ``chroma [B, F, n_chroma]``."""
        parts = []
        for name in self.names:
            module = self.conditioners[name]
            if isinstance(module, ChromaConditioner):
                if chroma is None:
                    if wav is None:
                        raise ValueError("a melody model needs the batch's waveform or chroma")
                    chroma = module.extract(wav)
                parts.append((chroma,))
            else:
                if isinstance(module, SentenceConditioner) and module.pooling == "mean":
                    # This encoder caches each caption's embedding from the first batch that holds it, and a batch
                    # pads its captions to the longest, which changes their rounding: a caption's embedding would
                    # depend on the step that first saw it, so a resumed run would drift from an uninterrupted one.
                    # Encoding each caption alone the first time makes it depend on the caption only.
                    for text in dict.fromkeys(texts):
                        module.encoder_states([text])
                parts.append(tuple(module.encoder_states(list(texts))))
        return RawConditions(tuple(parts))

    def null(self, raw: RawConditions) -> RawConditions:
        """The null conditions of ``raw``: no text (zero states, zero mask), and the null melody (the chroma of
        silence: all weight on the first bin, as the reference's empty melody)."""
        parts = []
        for name, part in zip(self.names, raw.parts, strict=True):
            if isinstance(self.conditioners[name], ChromaConditioner):
                silent = torch.zeros_like(part[0])
                silent[..., 0] = 1.0
                parts.append((silent,))
            else:
                parts.append(tuple(torch.zeros_like(t) for t in part))
        return RawConditions(tuple(parts))

    def dropout(self, raw: RawConditions, cfg_p: float, attribute_p: Mapping[str, float],
                generator: torch.Generator) -> RawConditions:
        """Classifier-free-guidance dropout (every condition of a row nulled together with probability ``cfg_p``),
        then attribute dropout (condition ``name`` of a row nulled with probability ``attribute_p[name]``)."""
        null = self.null(raw)
        rows = raw.batch_size
        drop_all = torch.rand(rows, generator=generator) < cfg_p
        parts = []
        for name, part, empty in zip(self.names, raw.parts, null.parts, strict=True):
            drop = drop_all | (torch.rand(rows, generator=generator) < attribute_p.get(name, 0.0))
            parts.append(tuple(torch.where(drop.to(t.device).view(-1, *([1] * (t.dim() - 1))), e, t)
                               for t, e in zip(part, empty, strict=True)))
        return RawConditions(tuple(parts))

    def project(self, raw: RawConditions) -> Conditions:
        """Trained projections and fusion: ``RawConditions -> Conditions`` (differentiable)."""
        projected = {}
        for name, part in zip(self.names, raw.parts, strict=True):
            module = self.conditioners[name]
            projected[name] = module.project(*part)
        return Conditions(*self.fuser.fuse(projected))
