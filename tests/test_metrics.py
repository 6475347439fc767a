"""Chroma cosine similarity on synthetic signals with known answers."""

from __future__ import annotations

import pytest
import torch

from wavecraft.metrics import chroma_cosine_similarity

SR = 32000


def tone(freq: float, seconds: float = 2.0) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    return (0.5 * torch.sin(2 * torch.pi * freq * t))[None, None]


def test_identical_is_one():
    x = tone(261.63)  # C4
    assert chroma_cosine_similarity(x, x, SR) == pytest.approx(1.0)


def test_different_pitch_class_is_zero():
    assert chroma_cosine_similarity(tone(261.63), tone(369.99), SR) == pytest.approx(0.0)  # C vs F#


def test_octave_and_rate_invariance():
    """The same pitch class an octave up matches perfectly, also when given at 48 kHz."""
    assert chroma_cosine_similarity(tone(261.63), tone(523.25), SR) == pytest.approx(1.0)
    t = torch.arange(96000) / 48000
    c4, c5 = (0.5 * torch.sin(2 * torch.pi * f * t)[None, None] for f in (261.63, 523.25))
    assert chroma_cosine_similarity(c4, c5, 48000) == pytest.approx(1.0)


def test_half_matching_frames():
    a = torch.cat([tone(261.63, 2.048), tone(261.63, 2.048)], dim=-1)
    b = torch.cat([tone(261.63, 2.048), tone(369.99, 2.048)], dim=-1)
    assert chroma_cosine_similarity(b, a, SR) == pytest.approx(0.5, abs=0.08)


def test_sizes_restrict_frames():
    a = torch.cat([tone(261.63, 2.048), tone(261.63, 2.048)], dim=-1)
    b = torch.cat([tone(261.63, 2.048), tone(369.99, 2.048)], dim=-1)
    assert chroma_cosine_similarity(b, a, SR, sizes=torch.tensor([int(1.5 * SR)])) == pytest.approx(1.0, abs=0.1)


def test_shape_mismatch():
    with pytest.raises(ValueError):
        chroma_cosine_similarity(tone(100), tone(100, 1.0), SR)


def test_rendered_pitch_classes_tells_a_pitch_faithful_codec_from_a_monotone_one():
    from wavecraft.codec.compression import EnCodec
    from wavecraft.metrics.pitch import rendered_pitch_classes

    codec = EnCodec.from_config("debug").eval()
    # a perfect codec (decode returns what encode got), then one that renders every note as an A
    codec.encode = lambda wav: (wav, None)  # type: ignore[method-assign]
    codec.decode = lambda codes, scale=None: codes  # type: ignore[method-assign]
    assert rendered_pitch_classes(codec) == list(range(12))
    note_a = 0.3 * torch.sin(2 * torch.pi * 440.0 * torch.arange(64000) / 32000)
    codec.decode = lambda codes, scale=None: note_a.expand_as(codes)  # type: ignore[method-assign]
    assert rendered_pitch_classes(codec) == [9] * 12
