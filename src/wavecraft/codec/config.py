"""Codec hyper-parameters as a frozen dataclass, plus the named configs of the released EnCodec models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..configs import ConfigMixin


@dataclass(frozen=True)
class CodecConfig(ConfigMixin):
    """Everything needed to build an EnCodec model (SEANet autoencoder + residual VQ).

    Field names follow AudioCraft's ``seanet``/``rvq``/``encodec`` config sections; ``ratios`` are in decoder
    order (the encoder uses them reversed).
    """

    sample_rate: int = 32000
    channels: int = 1
    # seanet: EnCodec's autoencoder; oscillator: semitone-band encoder + oscillator-bank decoder (codec/oscillator.py)
    architecture: str = "seanet"
    # SEANet
    dimension: int = 128
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 4)
    activation: str = "ELU"
    activation_alpha: float = 1.0
    norm: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    causal: bool = False
    pad_mode: str = "constant"
    true_skip: bool = True
    compress: int = 2
    lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    # Residual vector quantizer
    n_q: int = 4
    bins: int = 2048
    decay: float = 0.99
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0
    q_dropout: bool = False
    # Oscillator codec: ConvNeXt width and depth (encoder and decoder each), noise bands, analysis STFT size
    oscillator_hidden: int = 256
    oscillator_layers: int = 4
    oscillator_noise_bands: int = 16
    oscillator_n_fft: int = 4096
    # Model-level behaviour
    renormalize: bool = False
    chunk_length_s: float | None = None  # 48 kHz model: encode 1 s chunks ...
    overlap: float | None = None  # ... overlapping by 1 %, recombined by linear overlap-add
    target_bandwidths: tuple[float, ...] = field(default=())  # kbps, as advertised by transformers' configs

    def __post_init__(self) -> None:
        if self.causal and self.renormalize:
            raise ValueError("causal and renormalize are mutually exclusive")
        if self.architecture not in ("seanet", "oscillator"):
            raise ValueError(f"architecture must be seanet or oscillator, got {self.architecture!r}")
        if self.architecture == "oscillator" and (self.channels != 1 or self.causal or self.renormalize
                                                  or self.chunk_length_s is not None):
            raise ValueError("the oscillator codec is mono, non-causal, without renormalisation or chunking")
        if self.architecture == "oscillator" and self.hop_length % 2:
            raise ValueError(f"the oscillator codec needs an even hop length, got {self.hop_length}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def bits_per_codebook(self) -> int:
        return math.ceil(math.log2(self.bins))

    @property
    def chunk_length(self) -> int | None:
        return None if self.chunk_length_s is None else int(self.chunk_length_s * self.sample_rate)

    @property
    def chunk_stride(self) -> int | None:
        if self.chunk_length is None or self.overlap is None:
            return None
        return max(1, int((1.0 - self.overlap) * self.chunk_length))


#: Architectures of the released codecs (weights are loaded separately).
codec_configs: dict[str, CodecConfig] = {
    # MusicGen / MAGNeT tokenizer: 4 x 2048 codebooks at 50 Hz (2.2 kbps).
    "encodec_32khz": CodecConfig(target_bandwidths=(2.2,)),
    # AudioGen tokenizer: same recipe at 16 kHz, hop 320.
    "encodec_16khz": CodecConfig(sample_rate=16000, ratios=(8, 5, 4, 2), target_bandwidths=(2.2,)),
    # The original EnCodec paper models, as published in transformers' layout.
    "encodec_24khz": CodecConfig(
        sample_rate=24000, n_filters=32, ratios=(8, 5, 4, 2), causal=True, pad_mode="reflect", true_skip=False,
        n_q=32, bins=1024, target_bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0)),
    "encodec_48khz": CodecConfig(
        sample_rate=48000, channels=2, n_filters=32, ratios=(8, 5, 4, 2), norm="time_group_norm",
        pad_mode="reflect", true_skip=False, n_q=16, bins=1024, renormalize=True, chunk_length_s=1.0,
        overlap=0.01, target_bandwidths=(3.0, 6.0, 12.0, 24.0)),
    # Tiny random-weight model for tests and demos.
    "debug": CodecConfig(n_filters=4, dimension=32, ratios=(10, 8, 16), lstm_layers=0, n_q=4, bins=64),
}
