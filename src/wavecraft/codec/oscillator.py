"""The oscillator codec's encoder and decoder: semitone-band analysis in, a bank of tuned oscillators out.

Why not SEANet for the small shipped codec: a convolutional decoder is time-invariant, so a steady note whose
codes repeat frame after frame comes out periodic in the hop (20 ms), i.e. as harmonics of the 50 Hz frame rate;
rendering its real pitch needs the note's phase in the codes, which EnCodec learns only with a discriminator and
long training. Trained on a CPU for hours, the SEANet codec rendered all 12 notes C4..B4 as G (400/800 Hz).

Here pitch is in the structure instead:

* :class:`SemitoneEncoder` reads log energies of semitone-wide bands (C1 upwards, two STFT frames per codec
  frame), so pitch is explicit in its input, then a small ConvNeXt stack at the frame rate maps them to the
  latent the residual VQ quantizes.
* :class:`OscillatorDecoder` maps the latent to one amplitude per semitone oscillator (equal temperament,
  A4 = 440 Hz, up to Nyquist) and one gain per band of a fixed noise bank (drums, breath), both per frame and
  interpolated linearly to the sample rate. The oscillators' phases follow the absolute sample index, so steady
  notes keep their pitch and consecutive frames join without clicks. The noise bank is generated from a fixed
  seed and looped, so decoding is deterministic.

Synthesis needs no sine at run time: each block of 16 frames is one batched matmul of the gains against a
precomputed sin/cos table of the oscillators, rotated to the block's starting phase.

Harmonics of a tempered note land on or near oscillators (octaves exactly, fifths within 2 cents, thirds within
14), which is why a semitone bank renders harmonic tones. Shapes: encoder ``wav [B, 1, T] -> [B, D, ceil(T/hop)]``,
decoder ``z [B, D, F] -> wav [B, 1, F * hop]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodecConfig
from .conv import pad1d

LOWEST_MIDI = 24  # C1, 32.7 Hz
NOISE_LOOP_SECONDS = 1.0
_BLOCK_FRAMES = 16  # frames synthesized per block (bounds memory on long clips and the size of the phase table)


def oscillator_frequencies(sample_rate: int) -> torch.Tensor:
    """``[N]`` Hz: equal-tempered semitones from C1 up to the last one below Nyquist."""
    top = math.floor(69 + 12 * math.log2(sample_rate / 2 / 440.0))
    midi = torch.arange(LOWEST_MIDI, top + 1, dtype=torch.float64)
    return 440.0 * 2 ** ((midi - 69) / 12)


def semitone_band_matrix(freqs: torch.Tensor, sample_rate: int, n_fft: int) -> torch.Tensor:
    """``[N, n_fft // 2 + 1]`` 0/1 matrix: the STFT bins within a quarter tone of each frequency (at least the
    nearest bin, for low notes narrower than a bin)."""
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, hi = freqs * 2 ** (-1 / 24), freqs * 2 ** (1 / 24)
    matrix = ((bins[None] >= lo[:, None]) & (bins[None] < hi[:, None])).float()
    nearest = (freqs / (sample_rate / n_fft)).round().long()
    empty = matrix.sum(1) == 0
    matrix[empty, nearest[empty]] = 1.0
    return matrix


class ConvNeXtBlock(nn.Module):
    """``x + scale * MLP(LayerNorm(depthwise_conv7(x)))`` on ``[B, C, F]`` (ConvNeXt, 1-D)."""

    def __init__(self, dim: int, expansion: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, expansion * dim)
        self.down = nn.Linear(expansion * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(F.gelu(self.up(self.norm(self.dwconv(x).transpose(1, 2)))))
        return x + (self.scale * y).transpose(1, 2)


def _stack(in_channels: int, dim: int, layers: int, out_features: int, kernel: int) -> nn.ModuleDict:
    return nn.ModuleDict({
        "inp": nn.Conv1d(in_channels, dim, kernel, padding=kernel // 2),
        "blocks": nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(layers)]),
        "norm": nn.LayerNorm(dim),
        "out": nn.Linear(dim, out_features),
    })


def _run_stack(stack: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    """``[B, C_in, F] -> [B, F, out_features]``."""
    h = stack["blocks"](stack["inp"](x))
    return stack["out"](stack["norm"](h.transpose(1, 2)))


class SemitoneEncoder(nn.Module):
    """Waveform to latent through semitone-band log energies. ``wav [B, 1, T] -> [B, dimension, ceil(T / hop)]``."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.hop = cfg.hop_length
        self.n_fft = cfg.oscillator_n_fft
        freqs = oscillator_frequencies(cfg.sample_rate)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("bands", semitone_band_matrix(freqs, cfg.sample_rate, self.n_fft), persistent=False)
        self.stack = _stack(2 * len(freqs), cfg.oscillator_hidden, cfg.oscillator_layers, cfg.dimension, 3)

    def band_energies(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, 1, T] -> [B, 2 * N, F]``: log energy of each semitone band in the two STFT frames (hop / 2
        apart) of every codec frame."""
        batch, frames = wav.shape[0], -(-wav.shape[-1] // self.hop)
        # torch.stft's own centring reflect-pads and so needs more than n_fft / 2 samples; pad1d reflects any
        # length (short clips are zero-extended first) and equals it bit for bit on longer ones.
        half = self.n_fft // 2
        padded = pad1d(wav.reshape(batch, 1, -1), (half, half), mode="reflect").reshape(batch, -1)
        spec = torch.stft(padded, self.n_fft, self.hop // 2, window=self.window, center=False, return_complex=True)
        energy = torch.log(self.bands @ spec.abs().pow(2) + 1e-6)[..., :2 * frames]  # [B, N, <= 2F]
        energy = F.pad(energy, (0, 2 * frames - energy.shape[-1]), value=math.log(1e-6))
        n = energy.shape[1]
        return energy.reshape(batch, n, frames, 2).permute(0, 3, 1, 2).reshape(batch, 2 * n, frames)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return _run_stack(self.stack, self.band_energies(wav)).transpose(1, 2)


class OscillatorDecoder(nn.Module):
    """Latent to waveform through semitone oscillators and noise bands. ``z [B, dimension, F] -> [B, 1, F * hop]``.

    ``forward(z, first_frame)``: ``z``'s first frame is frame ``first_frame`` of the clip (streaming decodes windows
    of a clip; the oscillators' phases and the noise loop depend on the absolute position).
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        self.hop = cfg.hop_length
        self.sample_rate = cfg.sample_rate
        freqs = oscillator_frequencies(cfg.sample_rate)
        self.num_oscillators = len(freqs)
        self.noise_bands = cfg.oscillator_noise_bands
        self.register_buffer("freqs", freqs, persistent=False)  # float64: phases of long clips stay exact
        half = self.hop // 2
        self.block_frames = _BLOCK_FRAMES
        # The oscillators over one block starting at phase 0, as cos and sin tables [S, 2N, hop / 2] split in
        # half-frame segments: a block starting at phase c is cos(2 pi c) * sin-table + sin(2 pi c) * cos-table,
        # so synthesis needs no sine at run time, only one batched matmul per block.
        m = torch.arange(self.block_frames * self.hop, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(freqs, m / cfg.sample_rate).frac()  # [N, n]
        table = torch.cat([torch.sin(angle), torch.cos(angle)]).reshape(2 * len(freqs), -1, half).transpose(0, 1)
        self.register_buffer("phase_table", table.contiguous().float(), persistent=False)
        noise = self._noise_bank(cfg.sample_rate, self.noise_bands)
        # The loop followed by its own start, so that any block of the loop is one contiguous slice.
        wrap = noise.repeat(1, -(-self.block_frames * self.hop // noise.shape[1]))
        self.register_buffer("noise", torch.cat([noise, wrap], dim=1), persistent=False)
        self.noise_loop = noise.shape[1]
        # Linear interpolation of per-frame gains (sample i of a frame sits at frame coordinate (i + 0.5) / hop
        # - 0.5): the first half of frame f blends frames f - 1 and f, the second half frames f and f + 1.
        # Weights of the right-hand frame over the two half-frame segments of a frame: [2, hop / 2].
        first_half = (torch.arange(half) + 0.5) / self.hop + 0.5
        self.register_buffer("segment_weights", torch.stack([first_half, first_half - 0.5]), persistent=False)
        self.stack = _stack(cfg.dimension, cfg.oscillator_hidden, cfg.oscillator_layers,
                            self.num_oscillators + self.noise_bands, 7)

    @property
    def context_frames(self) -> int:
        """Latent frames on each side that an output frame depends on (input conv, depthwise convs, and the
        linear interpolation of the per-frame gains)."""
        return 3 + 3 * len(self.stack["blocks"]) + 1

    @staticmethod
    def _noise_bank(sample_rate: int, bands: int) -> torch.Tensor:
        """``[bands, L]`` looping white noise split into bands equally spaced in log frequency (50 Hz .. Nyquist),
        unit RMS per band; from a fixed seed, so every model builds the same bank."""
        length = int(NOISE_LOOP_SECONDS * sample_rate)
        generator = torch.Generator().manual_seed(0)
        spectrum = torch.fft.rfft(torch.randn(length, generator=generator, dtype=torch.float64))
        freqs = torch.fft.rfftfreq(length, 1 / sample_rate)
        edges = torch.logspace(math.log10(50.0), math.log10(sample_rate / 2), bands + 1, dtype=torch.float64)
        edges[-1] = sample_rate  # include Nyquist
        bank = torch.stack([torch.fft.irfft(spectrum * ((freqs >= lo) & (freqs < hi)), length)
                            for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
        return (bank / bank.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)).float()

    def forward(self, z: torch.Tensor, first_frame: int = 0) -> torch.Tensor:
        batch, frames = z.shape[0], z.shape[-1]
        gains = F.softplus(_run_stack(self.stack, z) - 5.0)  # [B, F, N + bands]; starts quiet
        # Edge frames repeated, so that interpolation clamps at the clip's (or window's) ends.
        padded = torch.cat([gains[:, :1], gains, gains[:, -1:]], dim=1)  # [B, F + 2, K]
        blocks = []
        for f0 in range(0, frames, self.block_frames):
            f1 = min(frames, f0 + self.block_frames)
            # Half-frame segment s of the block blends gains left[s] and right[s] (a second half's left frame is
            # one further on than the first half's), weighted by segment_weights.
            left = padded[:, f0:f1 + 1].repeat_interleave(2, dim=1)[:, 1:-1]  # [B, S, K], S = 2 (f1 - f0)
            right = padded[:, f0 + 1:f1 + 2].repeat_interleave(2, dim=1)[:, 1:-1]
            both = torch.cat([left, right - left], dim=0).transpose(0, 1)  # [S, 2B, K]
            base, slope = self._synthesize(both, (first_frame + f0) * self.hop).split(batch, dim=1)  # [S, B, hop/2]
            weights = self.segment_weights.repeat(f1 - f0, 1)[:, None]  # [S, 1, hop / 2]
            blocks.append((base + slope * weights).transpose(0, 1).reshape(batch, -1))
        return torch.cat(blocks, dim=1)[:, None]

    def _synthesize(self, gains: torch.Tensor, start: int) -> torch.Tensor:
        """``gains [S, R, N + bands]`` (constant over each half-frame segment of a block starting at absolute
        sample ``start``) -> ``[S, R, hop / 2]``: the gain-weighted sum of the oscillators and noise bands."""
        segments, n = gains.shape[0], self.num_oscillators
        # The block's starting phases, in float64 so that they stay exact for hours of audio.
        phase = 2 * math.pi * (self.freqs * (start / self.sample_rate)).frac()
        rotation = torch.cat([torch.cos(phase), torch.sin(phase)]).to(gains.dtype)  # [2N]: sin(a + b) expanded
        tones = torch.bmm(gains[..., :n].repeat(1, 1, 2) * rotation, self.phase_table[:segments].to(gains.dtype))
        offset = start % self.noise_loop
        noise = self.noise[:, offset:offset + segments * self.hop // 2].reshape(self.noise_bands, segments, -1)
        return tones + torch.bmm(gains[..., n:], noise.transpose(0, 1).to(gains.dtype))
