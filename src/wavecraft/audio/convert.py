"""Channel and sample-rate conversion of audio tensors."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ..errors import InvalidAudioError
from .checks import check_audio, check_memory, check_sample_rate, short_repr

__all__ = ["check_audio", "convert_audio", "convert_audio_channels", "resample"]

# soxr quality preset: 'HQ' is transparent for 16-bit audio and clearly faster than 'VHQ'.
_SOXR_QUALITY = "HQ"
# Peak memory of a resampling, in float32 copies of its output: soxr's own buffer, the transposed copy handed back
# to torch, and slack for soxr's filter state.
_RESAMPLE_OUTPUT_COPIES = 3


#: Highest rate audio is resampled to (the top PCM rate of audio hardware and formats): a typo such as 1e9 Hz
#: would otherwise ask for gigabytes per second of input.
MAX_RESAMPLE_RATE = 768_000


def _check_channels_first(wav: torch.Tensor, name: str) -> None:
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"{name} must be a torch.Tensor, got {type(wav).__name__}")
    if wav.layout != torch.strided or wav.device.type == "meta":
        raise InvalidAudioError(f"{name} must be a dense tensor with data, got layout {wav.layout} on {wav.device}")
    if wav.dim() < 2:
        raise InvalidAudioError(f"{name} must have shape [..., C, T], got {tuple(wav.shape)}")
    if wav.shape[-2] == 0:
        raise InvalidAudioError(f"{name} has no channels (shape {tuple(wav.shape)})")


def _check_channel_count(channels: object, name: str) -> int:
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels <= 0:
        raise InvalidAudioError(f"{name} must be a positive integer, got {short_repr(channels)}")
    return int(channels)


def convert_audio_channels(wav: torch.Tensor, channels: int = 2) -> torch.Tensor:
    """Change the channel count of ``wav [..., C, T]`` to ``channels``, returning ``wav [..., channels, T]``.

    Rules: same count -> unchanged; target mono -> mean over channels; mono source -> replicated; more source
    channels than wanted -> the first ``channels`` are kept. Upmixing a non-mono source is ambiguous and raises
    :class:`InvalidAudioError`.
    """
    _check_channels_first(wav, "audio")
    channels = _check_channel_count(channels, "channels")
    *batch, src_channels, length = wav.shape
    if src_channels == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if src_channels == 1:
        check_memory(wav[..., :1, :].numel() * channels * wav.element_size(), f"upmixing audio to {channels} channels")
        # contiguous() so callers get a real tensor they may write into, not a stride-0 view.
        return wav.expand(*batch, channels, length).contiguous()
    if src_channels > channels:
        return wav[..., :channels, :]
    raise InvalidAudioError(f"cannot upmix audio from {src_channels} to {channels} channels (only mono can be upmixed)")


def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample ``wav [..., T]`` from ``from_rate`` to ``to_rate`` with soxr; returns float32 ``wav [..., T']``.

    ``T'`` is about ``T * to_rate / from_rate`` (soxr rounds it). Runs on CPU (soxr is a C library) and moves
    the result back to ``wav``'s device; it does not propagate gradients. Audio with NaN or infinite values, and
    an output too big for the available memory, raise :class:`InvalidAudioError` before any resampling.
    """
    from_rate = check_sample_rate(from_rate, name="from_rate")
    to_rate = check_sample_rate(to_rate, name="to_rate")
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"audio must be a torch.Tensor, got {type(wav).__name__}")
    if wav.layout != torch.strided or wav.device.type == "meta":
        raise InvalidAudioError(f"audio must be a dense tensor with data, got layout {wav.layout} on {wav.device}")
    if wav.dim() == 0:
        raise InvalidAudioError("audio must have a time dimension [..., T], got a 0-dim tensor")
    if not wav.is_floating_point():
        raise InvalidAudioError(f"audio must be a floating-point tensor, got dtype {wav.dtype}")
    if from_rate == to_rate:
        return wav.to(torch.float32)
    if to_rate > MAX_RESAMPLE_RATE:
        raise InvalidAudioError(f"to_rate must be at most {MAX_RESAMPLE_RATE} Hz to resample to, got {to_rate}")
    *lead, length = wav.shape
    new_length = length * to_rate // from_rate + 1  # soxr's length, rounded up
    check_memory(_RESAMPLE_OUTPUT_COPIES * 4 * new_length * math.prod(lead),
                 f"resampling audio of shape {tuple(wav.shape)} from {from_rate} Hz to {to_rate} Hz")
    import soxr

    # soxr takes [T, N] (time first, any number of channels): fold every leading dim into N.
    flat = wav.detach().to("cpu", torch.float32).reshape(-1, length)
    if flat.shape[0] == 0 or length == 0:
        new_length = round(length * to_rate / from_rate)
        return torch.zeros(*lead, new_length, dtype=torch.float32, device=wav.device)
    # soxr smears a NaN over the filter length and returns garbage without a word: refuse it here.
    if not bool(torch.isfinite(flat).all()):
        raise InvalidAudioError(f"audio contains NaN or infinite values (shape {tuple(wav.shape)}), cannot resample")
    out = soxr.resample(np.ascontiguousarray(flat.numpy().T), from_rate, to_rate, quality=_SOXR_QUALITY)
    if out.shape[0] == 0:  # a few samples downsampled by a huge ratio: nothing is left
        return torch.zeros(*lead, 0, dtype=torch.float32, device=wav.device)
    out = np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(out.shape[0], -1).T)
    return torch.from_numpy(out).reshape(*lead, out.shape[-1]).to(wav.device)


def convert_audio(wav: torch.Tensor, from_rate: int, to_rate: int, to_channels: int) -> torch.Tensor:
    """Resample ``wav [..., C, T]`` to ``to_rate`` and convert it to ``to_channels``: float32 ``wav [..., C', T']``.

    Downmixing and channel selection commute with (linear) resampling, so channels are reduced first when that
    makes less audio to resample. The result is on ``wav``'s device.
    """
    _check_channels_first(wav, "audio")
    from_rate = check_sample_rate(from_rate, name="from_rate")
    to_rate = check_sample_rate(to_rate, name="to_rate")
    to_channels = _check_channel_count(to_channels, "to_channels")
    if not wav.is_floating_point():
        raise InvalidAudioError(f"audio must be a floating-point tensor, got dtype {wav.dtype}")
    if to_channels < wav.shape[-2]:
        wav = convert_audio_channels(wav, to_channels)
    wav = resample(wav, from_rate, to_rate)
    return convert_audio_channels(wav, to_channels)
