"""The codec API: ``CompressionModel``, the EnCodec model, and the interleaved-stereo wrapper."""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from .._malloc import reuse_freed_memory
from ..errors import InvalidAudioError
from .config import CodecConfig, codec_configs
from .oscillator import OscillatorDecoder, SemitoneEncoder
from .quantization import QuantizedResult, ResidualVectorQuantizer
from .seanet import SEANetDecoder, SEANetEncoder


class CompressionModel(ABC, nn.Module):
    """Audio tokenizer interface: ``encode(wav [B, C, T]) -> (codes [B, K, F], scale)`` and back."""

    name_or_path: str | None = None

    @abstractmethod
    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    @abstractmethod
    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor: ...

    @abstractmethod
    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor: ...

    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abstractmethod
    def frame_rate(self) -> float: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    @property
    @abstractmethod
    def cardinality(self) -> int: ...

    @property
    @abstractmethod
    def num_codebooks(self) -> int: ...

    @property
    @abstractmethod
    def total_codebooks(self) -> int: ...

    @abstractmethod
    def set_num_codebooks(self, n: int) -> None: ...

    #: Codebooks are selected in multiples of this (2 for interleaved stereo: one per channel).
    codebook_step: int = 1

    def supported_bandwidths(self) -> list[float]:
        """The bitrates (kbps) this model can code at exactly: one per selectable number of codebooks."""
        per_codebook = self.frame_rate * math.log2(self.cardinality) / 1000
        return [n * per_codebook for n in range(self.codebook_step, self.total_codebooks + 1, self.codebook_step)]

    def _bandwidths_text(self) -> str:
        rates = self.supported_bandwidths()
        if len(rates) <= 8:
            return ", ".join(f"{r:g}" for r in rates) + " kbps"
        return f"{rates[0]:g} to {rates[-1]:g} kbps in steps of {rates[0]:g}"

    def set_bandwidth(self, kbps: float) -> int:
        """Select the number of codebooks for a bitrate in kbps; returns it.

        As in AudioCraft, the count is the largest whose bitrate does not exceed ``kbps``, at least one (one
        pair for interleaved stereo). ``kbps`` must be a finite number > 0 and at most the model's highest
        bitrate; anything else is a one-line :class:`InvalidAudioError` that lists the supported bitrates.
        """
        if isinstance(kbps, bool) or not isinstance(kbps, numbers.Real):
            raise InvalidAudioError(f"bandwidth must be a number of kbps, got {kbps!r} (this model codes at "
                                    f"{self._bandwidths_text()})")
        kbps = float(kbps)
        if not math.isfinite(kbps) or kbps <= 0:
            raise InvalidAudioError(f"bandwidth must be a finite number of kbps > 0, got {kbps:g} (this model "
                                    f"codes at {self._bandwidths_text()})")
        per_codebook = self.frame_rate * math.log2(self.cardinality) / 1000
        step = self.codebook_step
        # The tolerance keeps an exact supported rate (1.35 / 0.45 = 3.0000000000000004) from rounding down.
        n = max(step, math.floor(kbps / per_codebook + 1e-9) // step * step)
        if n > self.total_codebooks:
            raise InvalidAudioError(
                f"bandwidth {kbps:g} kbps needs {n} codebooks; this model has {self.total_codebooks} "
                f"(it codes at {self._bandwidths_text()})")
        self.set_num_codebooks(n)
        return n

    @property
    def bandwidth(self) -> float:
        """Bitrate in kbps at the current number of codebooks."""
        return self.num_codebooks * self.frame_rate * math.log2(self.cardinality) / 1000

    @staticmethod
    def get_pretrained(name_or_path: str | Path, device: str | torch.device = "cpu") -> CompressionModel:
        """Load a codec by hub name, local directory or file (AudioCraft, transformers or wavecraft layout)."""
        from ..checkpoints.codec import load_codec

        return load_codec(name_or_path, device=device)

    def check_input(self, wav: torch.Tensor) -> None:
        """Raise a one-line :class:`InvalidAudioError` for anything ``encode`` cannot take."""
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3:
            shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
            raise InvalidAudioError(f"expected audio of shape [B, C, T], got {shape}")
        if wav.shape[1] != self.channels:
            raise InvalidAudioError(
                f"this codec takes {self.channels}-channel audio, got {wav.shape[1]} channels "
                "(use wavecraft.audio.convert_audio to convert)")
        if wav.shape[-1] == 0 or wav.shape[0] == 0:
            raise InvalidAudioError("audio has no samples")
        if not wav.is_floating_point():
            raise InvalidAudioError(f"expected floating-point audio, got {wav.dtype}")
        if not bool(torch.isfinite(wav).all()):
            raise InvalidAudioError("audio contains NaN or infinite samples")


class EnCodec(CompressionModel):
    """EnCodec: SEANet encoder → residual VQ → SEANet decoder (``architecture='oscillator'``: the semitone encoder
    and oscillator decoder of :mod:`.oscillator` around the same residual VQ).

    With ``renormalize`` the input is divided by its RMS (mono mix) and ``scale [B, n_chunks]`` is returned. With
    ``chunk_length_s`` (48 kHz model) audio is encoded in overlapping chunks whose codes are concatenated in time;
    ``decode`` splits them again and recombines the audio by linear overlap-add.
    """

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        cfg.check_memory()  # a config that fits no machine fails here, not after gigabytes of allocation
        self.cfg = cfg
        if cfg.architecture == "oscillator":
            self.encoder: nn.Module = SemitoneEncoder(cfg)
            self.decoder: nn.Module = OscillatorDecoder(cfg)
        else:
            self.encoder = SEANetEncoder(cfg)
            self.decoder = SEANetDecoder(cfg)
        self.quantizer = ResidualVectorQuantizer(
            cfg.dimension, cfg.n_q, cfg.bins, decay=cfg.decay, kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters, threshold_ema_dead_code=cfg.threshold_ema_dead_code,
            q_dropout=cfg.q_dropout)
        if cfg.chunk_length is not None and cfg.chunk_stride is None:
            raise ValueError("chunk_length_s needs overlap")

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def channels(self) -> int:
        return self.cfg.channels

    @property
    def cardinality(self) -> int:
        return self.cfg.bins

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.n_q

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.max_n_q

    def set_num_codebooks(self, n: int) -> None:
        self.quantizer.set_num_codebooks(n)

    # -- encoding -----------------------------------------------------------------------------------------------
    def _chunks(self, length: int) -> list[tuple[int, int]]:
        """``(start, end)`` of the chunks that ``encode`` codes, one every ``stride`` samples.

        The codes of all chunks are concatenated, and ``decode`` finds the chunk boundaries again by splitting
        them every ``ceil(chunk / hop)`` frames, so every chunk but the last must code to exactly that many. A
        chunk starting after one that already reaches the end (which AudioCraft's and transformers' EnCodec
        code, and which keeps their codes for such lengths, e.g. exactly 1 s at 48 kHz) is therefore only coded
        when that one is long enough; otherwise the short chunk reaching the end is the last.
        """
        chunk, stride = self.cfg.chunk_length, self.cfg.chunk_stride
        if chunk is None or stride is None:
            return [(0, length)]
        hop = self.hop_length
        frames_per_chunk = -(-chunk // hop)
        chunks: list[tuple[int, int]] = []
        for offset in range(0, length, stride):
            if chunks and chunks[-1][1] == length and -(-(length - chunks[-1][0]) // hop) != frames_per_chunk:
                break
            chunks.append((offset, min(offset + chunk, length)))
        return chunks

    def _preprocess(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.cfg.renormalize:
            return wav, None
        mono = wav.sum(dim=1, keepdim=True) / wav.shape[1]
        scale = mono.pow(2).mean(dim=2, keepdim=True).sqrt() + 1e-8
        return wav / scale, scale.view(-1, 1)

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``wav [B, C, T] -> (codes [B, K, ceil(T / hop)] long, scale [B, n_chunks] or None)``."""
        self.check_input(wav)
        codes, scales = [], []
        with reuse_freed_memory():
            for start, end in self._chunks(wav.shape[-1]):
                x, scale = self._preprocess(wav[..., start:end])
                codes.append(self.quantizer.encode(self.encoder(x)))
                scales.append(scale)
        codes_out = torch.cat(codes, dim=-1)
        scale_out = None if scales[0] is None else torch.cat(scales, dim=1)  # type: ignore[arg-type]
        return codes_out, scale_out

    # -- decoding -----------------------------------------------------------------------------------------------
    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, F] -> latent [B, D, F]`` (sum of codebook vectors)."""
        self._check_codes(codes)
        return self.quantizer.decode(codes)

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``codes [B, K, F] -> wav [B, C, F * hop]`` (chunked models: overlap-added length).

        Output is not cropped to the encoded input's length: ``F * hop`` may exceed it by up to ``hop - 1``.
        Zero frames decode to empty audio ``[B, C, 0]`` (the inverse of nothing). ``scale``: ``[B, n_chunks]`` as
        ``encode`` returned it (``[B, 1]`` or ``[B]`` for unchunked models), finite, or None.
        """
        self._check_codes(codes)
        if codes.shape[-1] == 0 or codes.shape[0] == 0:
            dtype = self.quantizer.layers[0]._codebook.embed.dtype
            return torch.zeros(codes.shape[0], self.channels, 0, dtype=dtype, device=codes.device)
        scale = self._check_scale(scale, codes.shape[0], self._num_pieces(codes.shape[-1]))
        with reuse_freed_memory():
            return self._decode(codes, scale)

    def _num_pieces(self, frames: int) -> int:
        """How many chunks ``frames`` code frames hold (1 for unchunked models)."""
        chunk = self.cfg.chunk_length
        return 1 if chunk is None else math.ceil(frames / math.ceil(chunk / self.hop_length))

    def _check_scale(self, scale: torch.Tensor | None, batch: int, n_pieces: int) -> torch.Tensor | None:
        if scale is None:
            return None
        if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
            what = scale.dtype if isinstance(scale, torch.Tensor) else type(scale).__name__
            raise InvalidAudioError(f"scale must be a floating-point tensor, got {what}")
        if scale.dim() == 1 and n_pieces == 1:
            scale = scale[:, None]
        if scale.dim() != 2 or tuple(scale.shape) != (batch, n_pieces):
            raise InvalidAudioError(f"got scale of shape {tuple(scale.shape)} for codes of {batch} clips in "
                                    f"{n_pieces} chunks (expected [{batch}, {n_pieces}])")
        if not bool(torch.isfinite(scale).all()):
            raise InvalidAudioError("scale contains NaN or infinite values")
        return scale

    def _decode(self, codes: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        chunk = self.cfg.chunk_length
        if chunk is None:
            out = self.decoder(self.quantizer.decode(codes))
            return out if scale is None else out * scale.reshape(-1, 1, 1)
        frames_per_chunk = math.ceil(chunk / self.hop_length)
        pieces = codes.split(frames_per_chunk, dim=-1)
        decoded = []
        for i, piece in enumerate(pieces):
            out = self.decoder(self.quantizer.decode(piece))
            decoded.append(out if scale is None else out * scale[:, i].reshape(-1, 1, 1))
        return linear_overlap_add(decoded, self.cfg.chunk_stride or 1)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor):
            raise InvalidAudioError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.dim() != 3:
            raise InvalidAudioError(f"expected codes of shape [B, K, F], got {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.total_codebooks:
            raise InvalidAudioError(f"got {codes.shape[1]} codebooks, this codec takes 1 to {self.total_codebooks}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise InvalidAudioError(f"codes must be integers, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise InvalidAudioError(f"codes must lie in [0, {self.cardinality}), got [{int(codes.min())}, "
                                    f"{int(codes.max())}]")

    # -- training -----------------------------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor) -> QuantizedResult:
        """Autoencode for training: ``wav [B, C, T] -> QuantizedResult`` with ``.x [B, C, T]`` cropped to T."""
        length = wav.shape[-1]
        x, scale = self._preprocess(wav)
        q = self.quantizer(self.encoder(x), self.frame_rate)
        out = self.decoder(q.x)
        if scale is not None:
            out = out * scale.view(-1, 1, 1)
        q.x = out[..., :length]
        return q

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name_or_cfg: str | CodecConfig) -> EnCodec:
        """A randomly initialised model from a :class:`CodecConfig` or a named config (``'encodec_32khz'``, ...)."""
        if isinstance(name_or_cfg, str):
            if name_or_cfg not in codec_configs:
                raise ValueError(f"unknown codec config {name_or_cfg!r}; known: {', '.join(codec_configs)}")
            name_or_cfg = codec_configs[name_or_cfg]
        return cls(name_or_cfg)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu") -> EnCodec:
        """Load EnCodec weights: hub name (``facebook/encodec_32khz``, ``facebook/musicgen-small``), directory or file.

        Reads AudioCraft's ``compression_state_dict.bin`` (full or pointer form), transformers' ``config.json`` +
        ``model.safetensors``/``pytorch_model.bin``, and wavecraft's own ``save_pretrained`` output. Never unpickles
        arbitrary objects.
        """
        from ..checkpoints.codec import load_codec

        model = load_codec(name_or_path, device=device)
        if not isinstance(model, cls):
            raise TypeError(f"{name_or_path} holds a {type(model).__name__}, not {cls.__name__}")
        return model

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory``; returns the directory."""
        from ..checkpoints.codec import save_codec

        return save_codec(self, directory)


def linear_overlap_add(frames: list[torch.Tensor], stride: int) -> torch.Tensor:
    """Sum overlapping chunks with triangular weights, normalised by the weight sum.

    Each chunk is weighted by a triangle peaking at its centre; where two chunks overlap, the blend therefore
    moves linearly from one to the other. ``frames``: list of ``[B, C, L_i]`` starting every ``stride`` samples.
    """
    first = frames[0]
    length = first.shape[-1]
    # The last chunk may end before the one preceding it does (codes of a short last chunk).
    total = max(i * stride + frame.shape[-1] for i, frame in enumerate(frames))
    t = torch.linspace(0, 1, length + 2, device=first.device, dtype=first.dtype)[1:-1]
    weight = 0.5 - (t - 0.5).abs()
    out = first.new_zeros(*first.shape[:-1], total)
    weight_sum = first.new_zeros(total)
    for i, frame in enumerate(frames):
        n = frame.shape[-1]
        out[..., i * stride : i * stride + n] += weight[:n] * frame
        weight_sum[i * stride : i * stride + n] += weight[:n]
    return out / weight_sum


class InterleaveStereoCompressionModel(CompressionModel):
    """Stereo through a mono codec: L and R are encoded separately, codebooks interleaved ``[q0L, q0R, q1L, ...]``.

    Shapes: ``encode(wav [B, 2, T]) -> codes [B, 2K, F]``; ``decode(codes [B, 2K, F]) -> wav [B, 2, F * hop]``.
    """

    def __init__(self, model: CompressionModel) -> None:
        super().__init__()
        if model.channels != 1:
            raise ValueError("the interleaved-stereo wrapper needs a mono codec")
        self.model = model

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.model.frame_rate

    @property
    def channels(self) -> int:
        return 2

    @property
    def cardinality(self) -> int:
        return self.model.cardinality

    @property
    def num_codebooks(self) -> int:
        return 2 * self.model.num_codebooks

    @property
    def total_codebooks(self) -> int:
        return 2 * self.model.total_codebooks

    codebook_step = 2

    def set_num_codebooks(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n % 2:
            raise InvalidAudioError(f"a stereo codec needs an even number of codebooks, got {n!r}")
        self.model.set_num_codebooks(int(n) // 2)

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.check_input(wav)
        left, scale_l = self.model.encode(wav[:, :1])
        right, scale_r = self.model.encode(wav[:, 1:])
        codes = torch.stack([left, right], dim=2).flatten(1, 2)  # [B, K, 2, F] -> [B, 2K, F]
        scale = None if scale_l is None else torch.stack([scale_l, scale_r], dim=1)  # type: ignore[list-item]
        return codes, scale

    def split_codes(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``codes [B, 2K, F] -> (left [B, K, F], right [B, K, F])``."""
        if not isinstance(codes, torch.Tensor):
            raise InvalidAudioError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
        if codes.dim() != 3 or codes.shape[1] % 2:
            raise InvalidAudioError(f"stereo codes need shape [B, 2K, F], got {tuple(codes.shape)}")
        pair = codes.unflatten(1, (-1, 2))
        return pair[:, :, 0], pair[:, :, 1]

    def decode(self, codes: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``codes [B, 2K, F] -> wav [B, 2, F * hop]``; ``scale [B, 2, n_chunks]`` (left, right) as from ``encode``."""
        left, right = self.split_codes(codes)
        if scale is not None and (not isinstance(scale, torch.Tensor) or scale.dim() != 3 or scale.shape[1] != 2):
            shape = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
            raise InvalidAudioError(f"stereo scale needs shape [B, 2, n_chunks], got {shape}")
        scale_l, scale_r = (None, None) if scale is None else (scale[:, 0], scale[:, 1])
        return torch.cat([self.model.decode(left, scale_l), self.model.decode(right, scale_r)], dim=1)

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, 2K, F] -> [B, 2, D, F]`` (left and right latents)."""
        left, right = self.split_codes(codes)
        return torch.stack([self.model.decode_latent(left), self.model.decode_latent(right)], dim=1)
