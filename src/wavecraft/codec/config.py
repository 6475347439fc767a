"""Codec hyper-parameters as a frozen dataclass, plus the named configs of the released EnCodec models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..configs import ConfigMixin
from ..errors import ConfigError
from ..validation import WEIGHT_BYTES, check_fields, choice, ensure_memory, int_tuple, real, real_tuple

ACTIVATIONS = ("ELU", "ReLU", "LeakyReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softplus", "Mish", "PReLU", "Identity")
NORMS = ("none", "weight_norm", "time_group_norm")
PAD_MODES = ("constant", "zero", "reflect", "replicate", "circular")
MAX_HOP = 65536  # samples per codec frame (the released codecs use 320 and 640)
MAX_KERNEL = 65536  # effective (dilated) kernel span, in samples


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
        self.validate()

    def validate(self) -> None:
        """Check every field (types, ranges, list lengths, combinations); ``ValueError`` naming the first bad one.

        Integral floats are stored as ``int`` and lists as tuples, so configs read from JSON compare equal.
        """
        check_fields(self, _INT_RANGES, _FLAGS, _REAL_RANGES)
        choice("architecture", self.architecture, ("seanet", "oscillator"))
        choice("activation", self.activation, ACTIVATIONS)
        choice("norm", self.norm, NORMS)
        choice("pad_mode", self.pad_mode, PAD_MODES)
        object.__setattr__(self, "ratios", int_tuple("ratios", self.ratios, 1, 64, 1, 16))
        object.__setattr__(self, "target_bandwidths",
                           real_tuple("target_bandwidths", self.target_bandwidths, 0.0, 1e4, 64))
        if self.hop_length > MAX_HOP:
            raise ConfigError(f"the product of ratios (hop length) must be at most {MAX_HOP}, got {self.hop_length}")
        if self.compress > self.n_filters:
            raise ConfigError(f"compress ({self.compress}) must not exceed n_filters ({self.n_filters})")
        if self.dilation_base ** max(0, self.n_residual_layers - 1) * (self.residual_kernel_size - 1) > MAX_KERNEL:
            raise ConfigError(f"dilation_base ** n_residual_layers * residual_kernel_size must stay within "
                             f"{MAX_KERNEL} samples")
        if not self.causal and self.trim_right_ratio != 1.0:
            raise ConfigError("trim_right_ratio != 1.0 needs causal convolutions")
        if self.chunk_length_s is not None:
            object.__setattr__(self, "chunk_length_s", real("chunk_length_s", self.chunk_length_s, 0.0, 3600.0,
                                                            open_lo=True))
            if self.overlap is None:
                raise ConfigError("chunk_length_s needs overlap")
            if self.chunk_length < self.hop_length:  # type: ignore[operator]
                raise ConfigError(f"chunk_length_s ({self.chunk_length_s:g} s) is shorter than one frame")
        if self.overlap is not None:
            object.__setattr__(self, "overlap", real("overlap", self.overlap, 0.0, 0.99))
        if self.causal and self.renormalize:
            raise ConfigError("causal and renormalize are mutually exclusive")
        if self.architecture == "oscillator" and (self.channels != 1 or self.causal or self.renormalize
                                                  or self.chunk_length_s is not None):
            raise ConfigError("the oscillator codec is mono, non-causal, without renormalisation or chunking")
        if self.architecture == "oscillator" and self.hop_length % 2:
            raise ConfigError(f"the oscillator codec needs an even hop length, got {self.hop_length}")

    def num_weights(self) -> int:
        """Elements of the model's parameters and buffers (what :class:`EnCodec` allocates), from the config alone."""
        d, nf = self.dimension, self.n_filters
        vq = self.n_q * (2 * self.bins * d + self.bins + 1)  # embed, embed_avg, cluster_size, inited
        if self.architecture == "oscillator":
            return vq + self._oscillator_weights()
        norm_extra = {"weight_norm": 1, "time_group_norm": 2, "none": 0}[self.norm]

        def conv(cin: int, cout: int, k: int) -> int:
            return cin * cout * k + cout + norm_extra * cout

        def convtr(cin: int, cout: int, k: int) -> int:  # weight norm's g is per input channel here
            extra = {"weight_norm": cin, "time_group_norm": 2 * cout, "none": 0}[self.norm]
            return cin * cout * k + cout + extra

        def resblock(width: int) -> int:
            hidden = width // self.compress
            block = conv(width, hidden, self.residual_kernel_size) + conv(hidden, width, 1)
            return block + (0 if self.true_skip else conv(width, width, 1))

        widest = nf * 2 ** len(self.ratios)
        lstm = self.lstm_layers * (8 * widest * widest + 8 * widest)
        total = vq + 2 * lstm
        total += conv(self.channels, nf, self.kernel_size) + conv(widest, d, self.last_kernel_size)
        total += conv(d, widest, self.kernel_size) + conv(nf, self.channels, self.last_kernel_size)
        for i, ratio in enumerate(reversed(self.ratios)):
            width = nf * 2 ** i  # encoder stage i (the decoder mirrors it)
            total += 2 * self.n_residual_layers * resblock(width)
            total += conv(width, 2 * width, 2 * ratio) + convtr(2 * width, width, 2 * ratio)
        return total

    def _oscillator_weights(self) -> int:
        n = math.floor(69 + 12 * math.log2(self.sample_rate / 2 / 440.0)) - 23  # semitones C1..Nyquist
        h, d, k = self.oscillator_hidden, self.dimension, n + self.oscillator_noise_bands
        blocks = self.oscillator_layers * (6 * h * h + 15 * h)

        def stack(cin: int, kernel: int, out: int) -> int:
            return cin * h * kernel + h + blocks + 2 * h + h * out + out

        encoder = self.oscillator_n_fft + n * (self.oscillator_n_fft // 2 + 1) + stack(2 * n, 3, d)
        block_samples = 16 * self.hop_length
        noise = self.oscillator_noise_bands * (self.sample_rate + -(-block_samples // self.sample_rate)
                                               * self.sample_rate)
        decoder = 2 * n + 2 * n * block_samples + noise + self.hop_length + stack(d, 7, k)
        return encoder + decoder

    def check_memory(self, copies: int = 1) -> None:
        """``ValueError`` if ``copies`` float32 copies of the model's weights do not fit in available memory."""
        ensure_memory(copies * WEIGHT_BYTES * self.num_weights(), "this codec config")

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


#: Inclusive ranges of the integer fields: generous around the released models, but bounded, so that a typo or a
#: corrupt file (n_q 1e6, bins 1e9) is refused before anything is allocated.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "sample_rate": (1000, 768000), "channels": (1, 16), "dimension": (1, 8192), "n_filters": (1, 4096),
    "n_residual_layers": (0, 32), "kernel_size": (1, 1023), "last_kernel_size": (1, 1023),
    "residual_kernel_size": (1, 1023), "dilation_base": (1, 64), "compress": (1, 4096), "lstm_layers": (0, 16),
    "n_q": (1, 1024), "bins": (2, 2 ** 20), "kmeans_iters": (0, 10000), "oscillator_hidden": (1, 8192),
    "oscillator_layers": (0, 64), "oscillator_noise_bands": (1, 256), "oscillator_n_fft": (16, 65536),
}
_REAL_RANGES: dict[str, tuple[float, float]] = {
    "activation_alpha": (0.0, 100.0), "trim_right_ratio": (0.0, 1.0), "decay": (0.0, 1.0),
    "threshold_ema_dead_code": (0.0, 1e9),
}
_FLAGS = ("causal", "true_skip", "kmeans_init", "q_dropout", "renormalize")


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
