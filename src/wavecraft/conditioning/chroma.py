"""Chroma features and the melody conditioner of MusicGen-Melody.

The recipe of the reference: power spectrogram (Hann window, n_fft = 2**radix2_exp, hop n_fft/4, centred with
reflect padding, normalised by the window energy), a 12-bin chroma filter bank (librosa's construction), inf-norm
per frame, and — with ``argmax`` — a one-hot of the strongest bin per frame. Silent frames are all zero and so
become bin 0, which is also what the null melody of classifier-free guidance is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..validation import flag, integer, real
from .attributes import ConditionTensor

MAX_CHROMA_FRAMES = 65536  # chroma or codec frames of one condition window (30 s is 235 chroma, 1500 codec frames)


def chroma_filterbank(sample_rate: int, n_fft: int, n_chroma: int = 12, tuning: float = 0.0, ctroct: float = 5.0,
                      octwidth: float | None = 2.0, base_c: bool = True) -> torch.Tensor:
    """``[n_chroma, n_fft // 2 + 1]`` weights mapping an STFT power spectrum to pitch classes.

    Each FFT bin contributes to the chroma bins around its (fractional) pitch class with a Gaussian of one bin's
    width, columns are L2-normalised, and a Gaussian over octaves centred on ``ctroct`` (C5) weights the range.
    Same construction (and numbers) as ``librosa.filters.chroma``.
    """
    frequencies = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    bins = n_chroma * np.log2(frequencies / (a440 / 16))  # fractional pitch class counted from C0-ish
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))  # the DC bin, placed 1.5 octaves below
    widths = np.concatenate((np.maximum(bins[1:] - bins[:-1], 1.0), [1]))
    distance = np.subtract.outer(bins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half  # wrap into [-6, 6)
    weights = np.exp(-0.5 * (2 * distance / np.tile(widths, (n_chroma, 1))) ** 2)
    norms = np.sqrt((weights ** 2).sum(axis=0, keepdims=True))
    tiny = np.finfo(weights.dtype).tiny
    weights = weights / np.where(norms < tiny, 1.0, norms)
    if octwidth is not None:
        weights *= np.tile(np.exp(-0.5 * (((bins / n_chroma - ctroct) / octwidth) ** 2)), (n_chroma, 1))
    if base_c:
        weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)
    return torch.from_numpy(np.ascontiguousarray(weights[:, : int(1 + n_fft / 2)], dtype=np.float32))


class _Spectrogram(nn.Module):
    """Holds the Hann window as the checkpoint stores it (``chroma.spec.window``)."""

    def __init__(self, n_fft: int) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(n_fft))


class ChromaExtractor(nn.Module):
    """``wav [B, 1, T] -> chroma [B, frames, n_chroma]`` with ``frames = 1 + max(T, n_fft) // hop``."""

    def __init__(self, sample_rate: int, n_chroma: int = 12, radix2_exp: int = 14, argmax: bool = True) -> None:
        super().__init__()
        # Checked first: radix2_exp and n_chroma size the filter bank (n_chroma x 2 ** radix2_exp) built below.
        sample_rate = integer("sample_rate", sample_rate, 1000, 768000)
        n_chroma = integer("n_chroma", n_chroma, 1, 48)
        radix2_exp = integer("radix2_exp", radix2_exp, 6, 16)
        self.sample_rate = sample_rate
        self.n_fft = 2 ** radix2_exp
        self.hop = self.n_fft // 4
        self.argmax = flag("argmax", argmax)
        self.spec = _Spectrogram(self.n_fft)
        self.register_buffer("fbanks", chroma_filterbank(sample_rate, self.n_fft, n_chroma), persistent=False)

    def power_spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, 1, T] -> [B, n_fft // 2 + 1, frames]``; inputs shorter than ``n_fft`` are zero-padded around."""
        x = wav.squeeze(1)
        if x.shape[-1] < self.n_fft:
            pad = self.n_fft - x.shape[-1]
            x = F.pad(x, (pad // 2, pad - pad // 2))
        window = self.spec.window.to(x)
        spec = torch.stft(x, self.n_fft, self.hop, self.n_fft, window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
        spec = spec / window.pow(2).sum().sqrt()
        return spec.abs().pow(2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        raw = torch.einsum("cf,bft->bct", self.fbanks.to(wav), self.power_spectrogram(wav))
        chroma = F.normalize(raw, p=math.inf, dim=-2, eps=1e-6).transpose(1, 2)
        if self.argmax:
            chroma = F.one_hot(chroma.argmax(-1), chroma.shape[-1]).to(chroma.dtype)
        return chroma


class ChromaConditioner(nn.Module):
    """Melody condition: chroma of the (optionally source-separated) waveform, projected to the LM width.

    At inference every chroma is tiled or cut to the frame count of ``duration`` seconds (235 for 30 s) and all
    positions are kept (no mask), as the reference does once ``get_pretrained`` loaded it.
    With ``frame_rate`` (the codec's; for the ``sum`` fusion) the projection is resampled to one vector per codec
    frame — the nearest chroma frame to each frame's centre — giving ``[B, frames, D]`` for ``duration`` seconds.
    ``stem_separator`` (off by default) maps ``(wav [B, 1, T], sample_rate) -> wav`` before the chroma, e.g.
    :func:`demucs_vocals_and_other`, which keeps the melodic stems as AudioCraft does.
    """

    def __init__(self, output_dim: int, sample_rate: int, duration: float, n_chroma: int = 12, radix2_exp: int = 14,
                 argmax: bool = True, frame_rate: float | None = None) -> None:
        super().__init__()
        output_dim = integer("output_dim", output_dim, 1, 16384)
        self.sample_rate = sample_rate
        self.chroma = ChromaExtractor(sample_rate, n_chroma, radix2_exp, argmax)
        self.output_proj = nn.Linear(n_chroma, output_dim)
        self.set_window(duration, frame_rate)
        self.stem_separator: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    def set_window(self, duration: float, frame_rate: float | None = None) -> None:
        """Size the condition for ``duration`` seconds: ``chroma_len`` chroma frames, and with the codec's
        ``frame_rate`` (``sum`` fusion) one projected vector per codec frame (``frames``)."""
        duration = real("duration", duration, 0.0, 3600.0, open_lo=True)
        if frame_rate is not None:
            frame_rate = real("frame_rate", frame_rate, 0.0, float(self.sample_rate), open_lo=True)
        # The frames of a ``duration`` s clip, which the extractor first pads to n_fft if shorter (as AudioCraft).
        chroma_len = 1 + max(int(self.sample_rate * duration), self.chroma.n_fft) // self.chroma.hop
        frames = 0 if frame_rate is None else int(round(duration * frame_rate))
        self.chroma_len = integer("chroma_len", chroma_len, 1, MAX_CHROMA_FRAMES)
        self.frame_rate = frame_rate
        self.frames = integer("frames", frames, 0, MAX_CHROMA_FRAMES)

    def extract(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, 1, T]`` (model sample rate, zero-padded batch) ``-> chroma [B, chroma_len, n_chroma]``."""
        if self.stem_separator is not None:
            wav = self.stem_separator(wav, self.sample_rate)
        chroma = self.chroma(wav)
        frames = chroma.shape[1]
        if frames < self.chroma_len:
            chroma = chroma.repeat(1, math.ceil(self.chroma_len / frames), 1)
        return chroma[:, : self.chroma_len]

    def frame_index(self) -> torch.Tensor:
        """``[frames]``: for each codec frame, the chroma frame nearest to its centre (chroma frames are centred)."""
        if self.frame_rate is None:
            raise ValueError("this chroma conditioner has no codec frame rate")
        centres = (torch.arange(self.frames, dtype=torch.float64) + 0.5) / self.frame_rate
        return (centres * self.sample_rate / self.chroma.hop).round().long().clamp(max=self.chroma_len - 1)

    def project(self, chroma: torch.Tensor) -> ConditionTensor:
        """``chroma [B, chroma_len, n_chroma] -> ([B, L, D], mask [B, L])``; ``L`` is ``frames`` with a frame rate."""
        if self.frame_rate is not None:
            chroma = chroma[:, self.frame_index().to(chroma.device).clamp(max=chroma.shape[1] - 1)]
        emb = self.output_proj(chroma.to(self.output_proj.weight))
        return emb, torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)

    def forward(self, wav: torch.Tensor) -> ConditionTensor:
        return self.project(self.extract(wav))


def demucs_vocals_and_other(model_name: str = "htdemucs") -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A stem separator for :class:`ChromaConditioner` keeping vocals + other (drums and bass removed).

    Needs the optional ``demucs`` package and its weights (downloaded by demucs, or in its cache).
    """
    try:
        from demucs.apply import apply_model
        from demucs.pretrained import get_model
    except ImportError:
        from ..errors import CheckpointError
        raise CheckpointError("stem separation needs the `demucs` package (pip install demucs)") from None
    model = get_model(model_name).eval()
    keep = [model.sources.index(s) for s in ("vocals", "other")]

    def separate(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        from ..audio import convert_audio
        x = convert_audio(wav, sample_rate, model.samplerate, model.audio_channels)
        stems = apply_model(model, x, device=x.device)
        mixed = stems[:, keep].sum(dim=1)
        return convert_audio(mixed, model.samplerate, sample_rate, 1)

    return separate
