"""How projected conditions enter the language model: prepended, as cross-attention source, or summed per frame."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .attributes import ConditionTensor

FUSE_METHODS = ("cross", "prepend", "sum")


class ConditionFuser:
    """Routes each named condition to ``cross``, ``prepend`` or ``sum`` (AudioCraft's ``fuser`` config section).

    Conditions are taken in the order given (text conditioners first, then waveform ones, as AudioCraft's
    provider orders them). Each ``prepend`` goes in front of what is already there, so a melody model's prefix
    is ``[self_wav, description]``; ``cross`` conditions are concatenated along time. ``sum`` conditions are one
    vector per codec frame, added to the LM input of the step that predicts that frame (several are added up).
    The official checkpoints use ``cross`` and ``prepend``; ``sum`` is how wavecraft's shipped model takes its
    melody, because a frame-aligned chroma is learned in far fewer steps than a prefix the model has to align.
    """

    def __init__(self, fuse2cond: Mapping[str, list[str]]) -> None:
        unknown = [m for m, names in fuse2cond.items() if names and m not in FUSE_METHODS]
        if unknown:
            raise ValueError(f"condition fusion {unknown} is not supported (only {', '.join(FUSE_METHODS)})")
        self.cond2fuse = {name: method for method, names in fuse2cond.items() for name in names}

    @property
    def has_cross(self) -> bool:
        return "cross" in self.cond2fuse.values()

    def fuse(self, conditions: Mapping[str, ConditionTensor]) -> tuple[torch.Tensor | None, ...]:
        """``{name: (emb [B, L, D], mask [B, L])}`` -> ``(prefix [B, P, D], cross_src [B, L', D],
        cross_mask [B, L'], summed [B, F, D])`` (``None`` where no condition goes).

        Prefix positions carry no mask: padded text positions are zero vectors that are attended, in AudioCraft
        and transformers alike.
        """
        prefix = cross = cross_mask = summed = None
        for name, (emb, mask) in conditions.items():
            method = self.cond2fuse.get(name)
            if method == "prepend":
                prefix = emb if prefix is None else torch.cat([emb, prefix], dim=1)
            elif method == "cross":
                cross = emb if cross is None else torch.cat([cross, emb], dim=1)
                cross_mask = mask if cross_mask is None else torch.cat([cross_mask, mask], dim=1)
            elif method == "sum":
                if summed is not None and summed.shape[1] != emb.shape[1]:
                    raise ValueError(f"summed condition {name!r} has {emb.shape[1]} frames, others {summed.shape[1]}")
                summed = emb if summed is None else summed + emb
        return prefix, cross, cross_mask, summed
