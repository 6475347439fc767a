"""Compressing audio files to ``.wcodec`` token files and back."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..audio.chunked import StreamConverter, open_audio_stream, open_audio_writer
from ..audio.io import WRITE_FORMATS
from ..codec.compression import CompressionModel, EnCodec
from ..codec.wcodec import CodecFile, read_wcodec, write_wcodec
from ..errors import CodecFileError, InvalidAudioError

#: The codec of the shipped wavecraft-small model: works offline (EnCodec proper: ``facebook/encodec_32khz``).
DEFAULT_CODEC = "wavecraft-small"
#: Decoding restores each segment's input RMS within this many dB (a silent segment is left as decoded).
MAX_LEVEL_GAIN_DB = 30.0
#: Long inputs are coded in independent segments of this many seconds: bounded memory and a progress bar.
SEGMENT_SECONDS = 30.0


def load_codec_model(model: str | Path | CompressionModel) -> CompressionModel:
    return model if isinstance(model, CompressionModel) else CompressionModel.get_pretrained(model)


def _model_id(model: CompressionModel) -> str:
    name = model.name_or_path or ""
    local = Path(name).expanduser()
    return str(local.resolve()) if name and local.exists() else name


def _segment_frames(model: CompressionModel, segment_seconds: float) -> int:
    internally_chunked = isinstance(model, EnCodec) and model.cfg.chunk_length is not None
    if internally_chunked or segment_seconds <= 0:
        return 0
    return max(1, int(segment_seconds * model.frame_rate))


def _hop(codec: CompressionModel) -> int:
    """Samples per code frame."""
    return round(codec.sample_rate / codec.frame_rate)


def _rms(wav: torch.Tensor) -> float:
    return float(wav.double().pow(2).mean().sqrt()) if wav.numel() else 0.0


def level_gain(decoded: torch.Tensor, target_rms: float) -> float:
    """Gain that brings ``decoded``'s RMS to ``target_rms``, within +-:data:`MAX_LEVEL_GAIN_DB`; 1 for silence."""
    current = _rms(decoded)
    if current < 1e-7 or target_rms < 1e-7:
        return 1.0
    limit = 10 ** (MAX_LEVEL_GAIN_DB / 20)
    return min(max(target_rms / current, 1 / limit), limit)


def _check_bandwidth(bandwidth: object) -> None:
    """Reject what no model takes (before a model is loaded); :meth:`CompressionModel.set_bandwidth` then checks
    the value against the model."""
    if bandwidth is None:
        return
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) or not math.isfinite(bandwidth) \
            or bandwidth <= 0:
        raise InvalidAudioError(f"bandwidth must be a finite number of kbps > 0, got {bandwidth!r}")


def _check_segment_seconds(segment_seconds: object) -> float:
    if isinstance(segment_seconds, bool) or not isinstance(segment_seconds, numbers.Real) \
            or not math.isfinite(segment_seconds):
        raise InvalidAudioError(f"segment_seconds must be a finite number of seconds (<= 0: one segment), got "
                                f"{segment_seconds!r}")
    return float(segment_seconds)


class _Segmenter:
    """Collects converted blocks ``[C, n]`` and hands out segments of exactly ``step`` samples while more audio
    follows, then the rest: the segments of the whole-file path, without holding the file."""

    def __init__(self, step: int | None) -> None:
        self.step = step  # None: one segment (the whole input)
        self._pending: list[torch.Tensor] = []
        self._count = 0

    def add(self, block: torch.Tensor) -> Iterator[torch.Tensor]:
        if block.shape[-1]:
            self._pending.append(block)
            self._count += block.shape[-1]
        # Strictly more than a segment: only then is the input known to need more than one.
        while self.step is not None and self._count > self.step:
            yield self._take(self.step)

    def _take(self, n: int) -> torch.Tensor:
        joined = torch.cat(self._pending, dim=-1) if len(self._pending) > 1 else self._pending[0]
        self._pending = [joined[:, n:]] if joined.shape[-1] > n else []
        self._count -= n
        return joined[:, :n]

    def rest(self) -> torch.Tensor | None:
        return self._take(self._count) if self._count else None


def compress_file(src: str | Path, dst: str | Path, model: str | Path | CompressionModel = DEFAULT_CODEC,
                  bandwidth: float | None = None, segment_seconds: float = SEGMENT_SECONDS,
                  progress: bool = False) -> CodecFile:
    """Read ``src`` (any format ``audio_read`` takes), encode it and write the ``.wcodec`` file ``dst``.

    Each segment's input RMS is stored (``levels``) so that decoding gives back the input's loudness: a codec such
    as the shipped one decodes at the level it was trained on, whatever the input's.

    Reading, resampling and coding run segment by segment (``segment_seconds``; <= 0: the whole input as one
    segment), so memory does not grow with the input's length (except for models that chunk internally, the
    48 kHz EnCodec, which are coded whole). The output is the same as coding the whole decoded file at once.
    ``dst`` is written all or nothing.
    """
    _check_bandwidth(bandwidth)
    segment_seconds = _check_segment_seconds(segment_seconds)
    with open_audio_stream(src) as stream:
        # Input problems (missing, undecodable, no samples, NaN at the start) are reported before a (possibly
        # slow) model download.
        blocks = stream.blocks()
        first = next(blocks)
        codec = load_codec_model(model)
        if bandwidth is not None:
            codec.set_bandwidth(bandwidth)
        converter = StreamConverter(stream.sample_rate, codec.sample_rate, stream.channels, codec.channels)
        hop = _hop(codec)
        seg_frames = _segment_frames(codec, segment_seconds)
        segmenter = _Segmenter(seg_frames * hop or None)
        codes: list[torch.Tensor] = []
        scales: list[torch.Tensor] = []
        levels: list[float] = []
        length = 0

        def encode(segment: torch.Tensor) -> None:
            nonlocal length
            c, s = codec.encode(segment[None])
            levels.append(_rms(segment))
            codes.append(c[0])
            if s is not None:
                scales.append(s[0])
            length += segment.shape[-1]
            bar.update(1)

        step = seg_frames * hop
        estimate = max(1, math.ceil(stream.duration * codec.sample_rate / step)) if step and stream.duration > 0 else 1
        read = 0
        with torch.inference_mode(), tqdm(total=estimate, desc="compress", unit="seg",
                                          disable=not progress or estimate <= 1) as bar:
            for block in itertools.chain([first], blocks):
                wav = torch.from_numpy(block)
                if not bool(torch.isfinite(wav).all()):
                    where = read / stream.sample_rate
                    raise InvalidAudioError(f"{src} contains NaN or infinite values (from {where:.3f} s on)")
                read += wav.shape[-1]
                for segment in segmenter.add(converter.process(wav)):
                    encode(segment)
            for segment in segmenter.add(converter.flush()):
                encode(segment)
            rest = segmenter.rest()
            if rest is not None:
                encode(rest)
    if len(codes) == 1:
        seg_frames = 0  # one segment: the whole input (as the whole-file path records it)
    item = CodecFile(
        model=_model_id(codec), sample_rate=codec.sample_rate, channels=codec.channels,
        cardinality=codec.cardinality, length=length, codes=torch.cat(codes, dim=-1),
        scale=torch.cat(scales) if scales else None, segment_frames=seg_frames, levels=levels)
    write_wcodec(dst, item)
    return item


def decompress_file(src: str | Path, dst: str | Path, model: str | Path | CompressionModel | None = None,
                    progress: bool = False, restore_level: bool = True) -> Path:
    """Decode the ``.wcodec`` file ``src`` to audio ``dst`` (format from its suffix: wav, flac, mp3, ogg).

    ``restore_level``: scale each decoded segment to the input RMS stored in the file (when it has ``levels``).
    Segments are decoded and written one at a time (memory does not grow with the file's length), to a
    temporary file renamed to ``dst`` at the end: a failure (disk full, bad codes) leaves no partial output.
    """
    dst = Path(dst)
    fmt = dst.suffix.lstrip(".").lower() or "wav"
    if fmt not in WRITE_FORMATS:
        raise InvalidAudioError(f"cannot write {dst}: unknown audio format {fmt!r} (use {', '.join(WRITE_FORMATS)})")
    item = read_wcodec(src)
    codec = load_codec_model(model or item.model)
    if (codec.sample_rate, codec.channels, codec.cardinality) != (item.sample_rate, item.channels, item.cardinality):
        raise CodecFileError(
            f"{src} was written by a {item.sample_rate} Hz, {item.channels}-channel codec with {item.cardinality} "
            f"codes; {codec.name_or_path} is {codec.sample_rate} Hz, {codec.channels}-channel, {codec.cardinality}")
    if item.codes.shape[0] > codec.total_codebooks:
        raise CodecFileError(f"{src} has {item.codes.shape[0]} codebooks; the codec has {codec.total_codebooks}")
    if item.codes.shape[-1] == 0 or item.length == 0:
        raise CodecFileError(f"{src} holds no audio (0 frames)")
    step = item.segment_frames or item.codes.shape[-1]
    pieces = item.codes.split(step, dim=-1)
    if item.segment_frames and item.scale is not None and item.scale.numel() != len(pieces):
        raise CodecFileError(f"{src}: {item.scale.numel()} scales for {len(pieces)} segments")
    hop = _hop(codec)
    written = 0
    with open_audio_writer(dst, item.sample_rate, item.channels, fmt) as writer, torch.inference_mode():
        for i, piece in enumerate(tqdm(pieces, desc="decompress", unit="seg",
                                       disable=not progress or len(pieces) == 1)):
            scale = item.scale
            if scale is not None:
                scale = scale[i:i + 1] if item.segment_frames else scale
                scale = scale[None]
            try:
                out = codec.decode(piece[None], scale)[0]
            except InvalidAudioError as e:
                raise CodecFileError(f"{src}: cannot decode segment {i}: {e}") from None
            if restore_level and item.levels is not None:
                out = out[..., : max(0, item.length - i * step * hop)]
                out = out * level_gain(out, item.levels[i])
            # Keep the original level: no normalisation, only a guard against samples beyond full scale.
            out = out[..., : max(0, item.length - written)]
            writer.write(out)
            written += out.shape[-1]
    return dst
