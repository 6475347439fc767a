"""Volume normalization of waveforms: peak, clip, RMS and ITU-R BS.1770 loudness strategies."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ..errors import InvalidAudioError
from .checks import as_channels_first, check_flag, check_float_audio, check_number, check_sample_rate
from .convert import resample

logger = logging.getLogger(__name__)

STRATEGIES = ("peak", "clip", "rms", "loudness", "none", "")

# BS.1770 gating block length in seconds; pyloudnorm refuses shorter signals.
_LOUDNESS_BLOCK_S = 0.4
# pyloudnorm only knows the channel weights of a 5-channel layout (L, R, C, Ls, Rs).
_LOUDNESS_MAX_CHANNELS = 5
# pyloudnorm's K-weighting filters blow up at some low rates (e.g. 2 kHz); lower rates are upsampled to this.
_LOUDNESS_MIN_RATE = 8000
# Above this, loudness is measured on a copy resampled to it: the gating block (0.4 s) at, say, 2 GHz would be a
# billion samples, while K-weighted loudness of audible content is the same at any rate this high.
_LOUDNESS_MAX_RATE = 384_000
# Inputs with a larger peak are scaled down before RMS/loudness: their squares would overflow even float64.
_PRESCALE_PEAK = 1e100
# Headrooms (dB) beyond this either silence 16-bit output entirely or clip everything: treat them as typos.
MAX_HEADROOM_DB = 120.0


def _headroom_db(db: object, name: str) -> float:
    """``db`` as a float if it is a finite number of dB within +-MAX_HEADROOM_DB, else InvalidAudioError."""
    return check_number(db, f"{name} (dB)", -MAX_HEADROOM_DB, MAX_HEADROOM_DB)


def _db_to_amplitude(db: object, name: str) -> float:
    return 10.0 ** (-_headroom_db(db, name) / 20.0)


def _where(stem_name: str | None) -> str:
    return f" ({stem_name})" if stem_name else ""


def loudness_lufs(wav: torch.Tensor, sample_rate: int) -> float:
    """Integrated loudness of ``wav [C, T]`` (or ``[T]``) in LUFS, per ITU-R BS.1770-4, measured with pyloudnorm.

    Up to 5 channels (L, R, C, Ls, Rs weighting). A clip shorter than one 400 ms gating block is tiled
    (repeated end to end) up to one block, which keeps the loudness of stationary content and lets short clips
    be measured at all. Audio below 8 kHz is upsampled to 8 kHz first (pyloudnorm's filters are unstable there).
    Silence (every block under the -70 LUFS gate) measures ``-inf``.
    """
    import pyloudnorm

    sample_rate = check_sample_rate(sample_rate)
    wav = as_channels_first(check_float_audio(wav))
    channels, length = wav.shape
    if channels > _LOUDNESS_MAX_CHANNELS:
        raise InvalidAudioError(f"loudness can be measured for at most {_LOUDNESS_MAX_CHANNELS} channels, "
                                f"got {channels}")
    if sample_rate < _LOUDNESS_MIN_RATE:
        # The K-weighting shelf (1.5 kHz) has no stable design this close to Nyquist: measure an upsampled copy,
        # which has the same content and so the same loudness.
        wav, sample_rate = resample(wav, sample_rate, _LOUDNESS_MIN_RATE), _LOUDNESS_MIN_RATE
        length = wav.shape[-1]
    elif sample_rate > _LOUDNESS_MAX_RATE:
        wav, sample_rate = resample(wav, sample_rate, _LOUDNESS_MAX_RATE), _LOUDNESS_MAX_RATE
        length = wav.shape[-1]
        if length == 0:  # a few samples at a huge rate: nothing left to measure
            return -math.inf
    data = wav.detach().to("cpu", torch.float64).numpy().T  # pyloudnorm wants [T, C]
    block = math.ceil(_LOUDNESS_BLOCK_S * sample_rate)
    if length < block:
        data = np.tile(data, (math.ceil(block / length), 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        lufs = float(pyloudnorm.Meter(sample_rate, block_size=_LOUDNESS_BLOCK_S).integrated_loudness(data))
    return lufs


def normalize_loudness(
    wav: torch.Tensor,
    sample_rate: int,
    loudness_headroom_db: float = 14,
    loudness_compressor: bool = False,
    energy_floor: float = 2e-3,
) -> torch.Tensor:
    """Scale ``wav [C, T]`` so its integrated loudness is ``-loudness_headroom_db`` LUFS; same shape returned.

    Audio whose RMS is under ``energy_floor`` (near silence) is returned unchanged: its loudness estimate is
    meaningless and the gain would blow up the noise floor. The same holds when the loudness cannot be measured
    (e.g. only sub-sonic content, which K-weighting removes). With ``loudness_compressor`` the scaled signal goes
    through ``tanh`` to tame peaks. No clipping is done here (see :func:`normalize_audio`).
    """
    check_float_audio(wav)
    sample_rate = check_sample_rate(sample_rate)
    headroom = _headroom_db(loudness_headroom_db, "loudness_headroom_db")
    loudness_compressor = check_flag(loudness_compressor, "loudness_compressor")
    energy_floor = check_number(energy_floor, "energy_floor", 0.0, math.inf)
    energy = float(wav.detach().double().pow(2).mean().sqrt())
    if energy < energy_floor:
        return wav
    input_lufs = loudness_lufs(wav, sample_rate)
    if not math.isfinite(input_lufs):
        return wav
    gain = 10.0 ** ((-headroom - input_lufs) / 20.0)
    out = wav * gain
    if loudness_compressor:
        out = torch.tanh(out)
    return out


def _clip(wav: torch.Tensor, log_clipping: bool, stem_name: str | None) -> torch.Tensor:
    """Clamp to [-1, 1], logging a warning first when that changes samples and ``log_clipping`` is set."""
    peak = float(wav.detach().abs().max())
    if peak > 1 and log_clipping:
        logger.warning("Clipping audio%s: peak %.3f is above 1, samples are clamped to [-1, 1]",
                       _where(stem_name), peak)
    return wav.clamp(-1, 1) if peak > 1 else wav


def normalize_audio(
    wav: torch.Tensor,
    normalize: bool = True,
    strategy: str = "peak",
    peak_clip_headroom_db: float = 1,
    rms_headroom_db: float = 18,
    loudness_headroom_db: float = 14,
    loudness_compressor: bool = False,
    log_clipping: bool = False,
    sample_rate: int | None = None,
    stem_name: str | None = None,
) -> torch.Tensor:
    """Normalize ``wav [C, T]`` (or ``[T]``) with one of the strategies; returns a tensor of the same shape.

    - ``'peak'``: scale so the peak is ``-peak_clip_headroom_db`` dBFS (only down, if ``normalize`` is False).
    - ``'clip'``: clamp to ``±10 ** (-peak_clip_headroom_db / 20)``.
    - ``'rms'``: scale so the RMS of the mono mix is ``-rms_headroom_db`` dBFS (only down, if ``normalize`` is
      False), then clamp to [-1, 1].
    - ``'loudness'``: :func:`normalize_loudness` to ``-loudness_headroom_db`` LUFS (needs ``sample_rate``), then
      clamp to [-1, 1].
    - ``'none'`` / ``''``: unchanged; a peak above 1 raises :class:`InvalidAudioError` since it would wrap or clip
      when written.

    Silent input is returned unchanged by every strategy. ``log_clipping`` logs a warning when the final clamp
    changes samples; ``stem_name`` names the audio in that warning and in errors. The input is never modified in
    place; it may be returned as is when nothing changes.
    """
    stem_name = None if stem_name is None else str(stem_name)
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise InvalidAudioError(f"unknown normalization strategy {strategy!r}{_where(stem_name)}; expected one of "
                                f"{', '.join(repr(s) for s in STRATEGIES)}")
    check_float_audio(wav, name=f"audio{_where(stem_name)}")
    mono = wav.dim() == 1
    wav = as_channels_first(wav, name=f"audio{_where(stem_name)}")
    # Every argument is checked whatever the strategy, so a bad value never passes unnoticed because it was unused.
    normalize = check_flag(normalize, "normalize")
    loudness_compressor = check_flag(loudness_compressor, "loudness_compressor")
    log_clipping = check_flag(log_clipping, "log_clipping")
    scale_peak = _db_to_amplitude(peak_clip_headroom_db, "peak_clip_headroom_db")
    scale_rms = _db_to_amplitude(rms_headroom_db, "rms_headroom_db")
    _headroom_db(loudness_headroom_db, "loudness_headroom_db")
    if sample_rate is not None:
        sample_rate = check_sample_rate(sample_rate)
    peak = float(wav.detach().abs().max())
    if strategy in ("rms", "loudness") and peak > _PRESCALE_PEAK:
        # Both strategies set a level whatever the input's scale, so divide out an absurd one before squaring
        # samples (which would overflow float64 to inf and make the gain 0 or NaN).
        wav, peak = wav / peak, 1.0

    if strategy == "peak":
        if peak > 0:
            rescaling = scale_peak / peak
            if normalize or rescaling < 1:
                wav = wav * rescaling
    elif strategy == "clip":
        wav = wav.clamp(-scale_peak, scale_peak)
    elif strategy == "rms":
        rms = float(wav.detach().mean(dim=0).double().pow(2).mean().sqrt())
        if rms > 0:
            rescaling = scale_rms / rms
            if normalize or rescaling < 1:
                wav = wav * rescaling
        wav = _clip(wav, log_clipping, stem_name)
    elif strategy == "loudness":
        if sample_rate is None:
            raise InvalidAudioError(f"strategy 'loudness' needs the sample_rate{_where(stem_name)}")
        wav = normalize_loudness(wav, sample_rate, loudness_headroom_db, loudness_compressor)
        wav = _clip(wav, log_clipping, stem_name)
    elif peak > 1:  # 'none' or ''
        raise InvalidAudioError(f"audio peak {peak:.4f} is above 1 with normalization strategy {strategy!r}"
                                f"{_where(stem_name)}; use 'peak', 'clip', 'rms' or 'loudness'")
    # Finite but huge input (e.g. float64 near 1e300) can overflow the energy or gain to inf/NaN; writing that
    # would turn every sample into -1.0, so it is an error rather than a silent wreck.
    if strategy in ("rms", "loudness") and not bool(torch.isfinite(wav).all()):
        raise InvalidAudioError(f"normalization with strategy {strategy!r} overflowed to NaN or infinite values"
                                f"{_where(stem_name)}: the input (peak {peak:.3g}) is out of any audio range")
    return wav[0] if mono else wav
