"""Compressing audio files to ``.wcodec`` token files and back."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..audio import audio_read, audio_write, check_audio, convert_audio
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


def compress_file(src: str | Path, dst: str | Path, model: str | Path | CompressionModel = DEFAULT_CODEC,
                  bandwidth: float | None = None, segment_seconds: float = SEGMENT_SECONDS,
                  progress: bool = False) -> CodecFile:
    """Read ``src`` (any format ``audio_read`` takes), encode it and write the ``.wcodec`` file ``dst``.

    Each segment's input RMS is stored (``levels``) so that decoding gives back the input's loudness: a codec such
    as the shipped one decodes at the level it was trained on, whatever the input's.
    """
    # Input problems are reported before a (possibly slow) model download.
    wav, sr = audio_read(src)
    check_audio(wav, name=str(src))
    codec = load_codec_model(model)
    if bandwidth is not None:
        codec.set_bandwidth(bandwidth)
    wav = convert_audio(wav, sr, codec.sample_rate, codec.channels)
    length = wav.shape[-1]
    hop = _hop(codec)
    seg_frames = _segment_frames(codec, segment_seconds)
    if seg_frames * hop >= length:
        seg_frames = 0
    step = seg_frames * hop or length
    codes, scales, levels = [], [], []
    with torch.inference_mode():
        starts = range(0, length, step)
        for start in tqdm(starts, desc="compress", unit="seg", disable=not progress or len(starts) == 1):
            c, s = codec.encode(wav[None, :, start:start + step])
            levels.append(_rms(wav[:, start:start + step]))
            codes.append(c[0])
            if s is not None:
                scales.append(s[0])
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
    step = item.segment_frames or item.codes.shape[-1]
    pieces = item.codes.split(step, dim=-1)
    wavs = []
    with torch.inference_mode():
        for i, piece in enumerate(tqdm(pieces, desc="decompress", unit="seg",
                                       disable=not progress or len(pieces) == 1)):
            scale = item.scale
            if scale is not None:
                scale = scale[i:i + 1] if item.segment_frames else scale
                scale = scale[None]
            out = codec.decode(piece[None], scale)[0]
            if restore_level and item.levels is not None:
                start = i * step * _hop(codec)
                out = out[..., : max(0, item.length - start)]
                out = out * level_gain(out, item.levels[i])
            wavs.append(out)
    wav = torch.cat(wavs, dim=-1)[..., : item.length]
    # Keep the original level: no normalisation, only a guard against samples beyond full scale.
    return audio_write(dst.with_suffix(""), wav, item.sample_rate, format=fmt, normalize=False, strategy="clip",
                       peak_clip_headroom_db=0)
