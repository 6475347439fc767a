"""Validation of audio tensors and audio-related arguments, shared by the readers, writers and the codec."""

from __future__ import annotations

import numbers

import torch

from ..errors import InvalidAudioError


def check_audio(wav: torch.Tensor, *, name: str = "audio") -> torch.Tensor:
    """Raise :class:`InvalidAudioError` unless ``wav [..., T]`` is a tensor with samples and only finite values.

    Returns ``wav`` unchanged so the call can be used inline. ``name`` names the tensor in the message.
    """
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"{name} must be a torch.Tensor, got {type(wav).__name__}")
    if wav.dim() == 0 or wav.shape[-1] == 0 or wav.numel() == 0:
        raise InvalidAudioError(f"{name} has no samples (shape {tuple(wav.shape)})")
    # Integer tensors cannot hold NaN/inf; only floating (and complex) ones need the scan.
    if (wav.is_floating_point() or wav.is_complex()) and not bool(torch.isfinite(wav).all()):
        raise InvalidAudioError(f"{name} contains NaN or infinite values (shape {tuple(wav.shape)})")
    return wav


def check_float_audio(wav: torch.Tensor, *, name: str = "audio") -> torch.Tensor:
    """Like :func:`check_audio`, and also require a real floating-point dtype (samples in [-1, 1] convention)."""
    check_audio(wav, name=name)
    if not wav.is_floating_point():
        raise InvalidAudioError(f"{name} must be a floating-point tensor, got dtype {wav.dtype}")
    return wav


def as_channels_first(wav: torch.Tensor, *, name: str = "audio") -> torch.Tensor:
    """Return ``wav [C, T]`` from ``wav [T]`` (as mono) or ``wav [C, T]``; any other rank is an error."""
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"{name} must be a torch.Tensor, got {type(wav).__name__}")
    if wav.dim() == 1:
        return wav[None]
    if wav.dim() == 2:
        return wav
    raise InvalidAudioError(f"{name} must have shape [T] or [C, T], got {wav.dim()} dims {tuple(wav.shape)}")


def check_sample_rate(sample_rate: object, *, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as an ``int`` if it is a positive integer (``bool`` excluded), else raise."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or int(sample_rate) <= 0:
        raise InvalidAudioError(f"{name} must be a positive integer, got {sample_rate!r}")
    return int(sample_rate)


def frame_span(sample_rate: int, seek_time: float, duration: float) -> tuple[int, int]:
    """``(start, num_frames)`` in samples for a read of ``duration`` s (all if not > 0) from ``seek_time`` s.

    Both are floored, as AudioCraft does (``frame_offset = int(seek_time * sr)``): ``start`` is
    ``int(seek_time * sample_rate)`` and ``num_frames`` is ``int(duration * sample_rate)`` (the length ``pad=True``
    produces) or -1 for "to the end". ``seek_time`` is >= 0 here, so ``int`` is the floor.
    """
    start = int(seek_time * sample_rate)
    num_frames = int(duration * sample_rate) if 0 < duration < float("inf") else -1
    return start, num_frames
