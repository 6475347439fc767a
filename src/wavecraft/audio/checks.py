"""Validation of audio tensors and audio-related arguments, shared by the readers, writers and the codec."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch

from ..errors import InvalidAudioError

# libsndfile (and so every writer here) stores the sample rate in a C int.
MAX_SAMPLE_RATE = 2**31 - 1
# Sample indices are clamped here so that ``seek_time * sample_rate`` never overflows an int64 downstream.
_MAX_FRAME = 2**62
# check_memory lets one allocation take at most this share of the available memory: the rest of the process (and
# the machine) still needs room, and going near the limit means swapping or the OOM killer, not an error message.
MEMORY_FRACTION = 0.5


def short_repr(value: object) -> str:
    """``repr(value)`` cut to one short line, for error messages about arbitrary user values."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def check_audio(wav: torch.Tensor, *, name: str = "audio") -> torch.Tensor:
    """Raise :class:`InvalidAudioError` unless ``wav [..., T]`` is a tensor with samples and only finite values.

    Returns ``wav`` unchanged so the call can be used inline. ``name`` names the tensor in the message.
    """
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"{name} must be a torch.Tensor, got {type(wav).__name__}")
    # Sparse and meta tensors cannot be scanned or turned into samples: refuse them here, not deep in torch.
    if wav.layout != torch.strided or wav.device.type == "meta":
        raise InvalidAudioError(f"{name} must be a dense tensor with data, got layout {wav.layout} on {wav.device}")
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
    """Return ``sample_rate`` as an ``int`` if it is an integer in [1, MAX_SAMPLE_RATE] (``bool`` excluded)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or int(sample_rate) <= 0:
        raise InvalidAudioError(f"{name} must be a positive integer, got {short_repr(sample_rate)}")
    if int(sample_rate) > MAX_SAMPLE_RATE:
        raise InvalidAudioError(f"{name} must be at most {MAX_SAMPLE_RATE} Hz, got {int(sample_rate)}")
    return int(sample_rate)


def check_number(value: object, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """Return ``value`` as a float if it is a real number (``bool`` excluded), not NaN, within [low, high].

    A one-element real tensor counts as its number, as ``float()`` would take it.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool \
            and not value.is_complex() and value.device.type != "meta":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidAudioError(f"{name} must be a number, got {short_repr(value)}")
    number = float(value)
    if math.isnan(number):
        raise InvalidAudioError(f"{name} must not be NaN")
    if not low <= number <= high:
        raise InvalidAudioError(f"{name} must be between {low:g} and {high:g}, got {number:g}")
    return number


def check_flag(value: object, name: str) -> bool:
    """Return ``value`` as a bool if it is a bool (also numpy's) or the integer 0 or 1; raise otherwise.

    A string such as ``"false"`` is truthy, so accepting any object would silently invert the user's intent.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise InvalidAudioError(f"{name} must be True or False, got {short_repr(value)}")


def available_memory() -> int:
    """Bytes this process may still allocate: ``MemAvailable`` from /proc/meminfo, capped by ``RLIMIT_AS``.

    Falls back to the free physical pages (``sysconf``) where /proc is missing.
    """
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            available = 2**62
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            available = min(available, soft)
    except (ImportError, OSError, ValueError):
        pass
    return available


def check_memory(num_bytes: float, what: str) -> None:
    """Raise :class:`InvalidAudioError` before allocating ``num_bytes`` for ``what`` if they would take more than
    ``MEMORY_FRACTION`` of the available memory.

    A huge request (a typo in a rate or duration) then fails with a clear message instead of thrashing the machine
    or dying inside the allocator.
    """
    available = available_memory()
    if num_bytes > MEMORY_FRACTION * available:
        raise InvalidAudioError(f"{what} would need {num_bytes / 2**30:.3g} GiB of memory, more than "
                                f"{MEMORY_FRACTION:.0%} of the {available / 2**30:.3g} GiB available")


def frame_span(sample_rate: int, seek_time: float, duration: float) -> tuple[int, int]:
    """``(start, num_frames)`` in samples for a read of ``duration`` s (all if not > 0) from ``seek_time`` s.

    Both are floored, as AudioCraft does (``frame_offset = int(seek_time * sr)``): ``start`` is
    ``int(seek_time * sample_rate)`` and ``num_frames`` is ``int(duration * sample_rate)`` (the length ``pad=True``
    produces) or -1 for "to the end". ``seek_time`` is >= 0 here, so ``int`` is the floor. Both are clamped to
    2**62 so that absurd times stay integers any backend can handle.
    """
    start = int(min(seek_time * sample_rate, _MAX_FRAME))
    num_frames = int(min(duration * sample_rate, _MAX_FRAME)) if 0 < duration < float("inf") else -1
    return start, num_frames
