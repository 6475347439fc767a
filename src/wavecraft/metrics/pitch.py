"""Whether a codec renders pitch: harmonic test notes through encode/decode, and the pitch class that comes out.

A codec can reconstruct the overall spectrum of music well enough to fool a mel distance and still render every
note at the same pitch (a decoder that has learned only its own frame-rate harmonics); this check catches that.
"""

from __future__ import annotations

import math

import torch

from ..codec.compression import CompressionModel
from .features import chroma_profile

C4_HZ = 261.63


def harmonic_note(f0: float, seconds: float, sample_rate: int, harmonics: int = 5) -> torch.Tensor:
    """A steady note ``[1, T]``: ``harmonics`` partials of ``f0`` with amplitudes ``0.3 / h``."""
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    partials = [0.3 / h * torch.sin(2 * math.pi * f0 * h * t) for h in range(1, harmonics + 1)
                if f0 * h < sample_rate / 2]
    return torch.stack(partials).sum(0)[None]


@torch.inference_mode()
def rendered_pitch_classes(codec: CompressionModel, seconds: float = 2.0) -> list[int]:
    """The strongest pitch class (0 = C) of each of the 12 notes C4..B4 after ``codec``'s encode + decode.

    A codec that renders pitch returns ``[0, 1, ..., 11]``.
    """
    rate = codec.sample_rate
    notes = torch.stack([harmonic_note(C4_HZ * 2 ** (k / 12), seconds, rate) for k in range(12)])
    notes = notes.expand(-1, codec.channels, -1).to(next(codec.parameters()).device)
    codes, scale = codec.encode(notes)
    decoded = codec.decode(codes, scale)[..., :notes.shape[-1]]
    return [int(chroma_profile(clip, rate).argmax()) for clip in decoded]
