"""What a generation is conditioned on, per batch item."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: A projected condition: ``(embeddings [B, L, D], mask [B, L])``, mask 1 for real positions.
ConditionTensor = tuple[torch.Tensor, torch.Tensor]


@dataclass
class WavCondition:
    """A waveform condition (e.g. a melody): ``wav [1, C, T]`` with its valid ``length`` and ``sample_rate``."""

    wav: torch.Tensor
    length: int
    sample_rate: int
    path: str | None = None


@dataclass
class ConditioningAttributes:
    """Conditions of one batch item: ``text`` by conditioner name (``None`` = no text), ``wav`` likewise."""

    text: dict[str, str | None] = field(default_factory=dict)
    wav: dict[str, WavCondition] = field(default_factory=dict)
