"""One command-line generation run: validate everything, generate, then write every output file."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch

from ..audio import _sndfile, audio_info, audio_read, audio_write
from ..audio.io import WRITE_FORMATS
from ..errors import AudioFileError
from ..fileio import atomic_outputs, remove_stale_temporaries, temp_path
from ..lm.quantize import check_quantize
from .genmodel import (
    DURATION_LIMIT,
    LONG_DURATION_LIMIT,
    MAX_DESCRIPTION_CHARS,
    BaseGenModel,
    GenerationError,
    check_duration,
    check_guidance,
    transformer_dtype,
)
from .progress import GenerationProgress

MAX_PROMPTS = 256
#: A prompts file is read up to this size: a device (``/dev/zero``) or a wrong file must not fill memory.
MAX_PROMPTS_FILE_BYTES = 1 << 20
FIRST_CHUNK_SECONDS = 0.2  # --stream: size of the first chunk written (later ones are 1 s)
#: How every generated file is normalised (``audio_write``), streamed or not.
NORMALIZATION = dict(strategy="loudness", loudness_compressor=True)


@dataclass
class GenerationJob:
    kind: str  # "music" or "sfx"
    model: str
    prompts: list[str]
    output: Path
    fmt: str
    params: dict
    continue_from: str | None = None
    melody: str | None = None
    text_encoder: str | None = None
    device: str | None = None
    progress: bool = True
    batch_size: int | None = None
    quantize: str | None = None
    stream: bool = False
    compile: bool = False
    dtype: str | None = None
    mp3_rate: int = 320
    allow_long: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, kind: str) -> GenerationJob:
        prompts = list(args.prompts)
        too_long = next((i for i, p in enumerate(prompts) if len(p) > MAX_DESCRIPTION_CHARS), None)
        if too_long is not None:
            raise GenerationError(f"prompt {too_long + 1} has {len(prompts[too_long])} characters; the limit is "
                                  f"{MAX_DESCRIPTION_CHARS}")
        if args.prompts_file:
            prompts += read_prompts_file(args.prompts_file)
        if not prompts:
            raise GenerationError("no prompt given: pass text descriptions or --prompts-file")
        if any(not p.strip() for p in prompts):
            raise GenerationError("a prompt is empty")
        if len(prompts) > MAX_PROMPTS:
            raise GenerationError(f"{len(prompts)} prompts in one run; the limit is {MAX_PROMPTS}")
        output = Path(args.output)
        fmt = (args.format or output.suffix.lstrip(".").lower() or "wav")
        mp3_rate = getattr(args, "mp3_bitrate", 320)
        if isinstance(mp3_rate, bool) or not isinstance(mp3_rate, int) or not 8 <= mp3_rate <= 320:
            raise GenerationError(f"--mp3-bitrate must be 8-320 kbps, got {mp3_rate}")
        if fmt not in WRITE_FORMATS:
            raise GenerationError(f"unknown output format {fmt!r} (use {', '.join(WRITE_FORMATS)})")
        allow_long = bool(getattr(args, "allow_long", False))
        check_duration(args.duration, LONG_DURATION_LIMIT if allow_long else DURATION_LIMIT, "--duration",
                       "" if allow_long else " (pass --allow-long for up to "
                       f"{LONG_DURATION_LIMIT / 3600:g} h)")
        stride = args.extend_stride
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int | float)
                                   or not math.isfinite(stride) or stride <= 0):
            raise GenerationError(f"--extend-stride must be a positive number of seconds, got {stride!r}")
        params = dict(use_sampling=not args.greedy, top_k=args.top_k, top_p=args.top_p,
                      temperature=args.temperature, duration=args.duration, cfg_coef=args.cfg,
                      cfg_coef_beta=getattr(args, "cfg_beta", None), two_step_cfg=args.two_step_cfg,
                      extend_stride=args.extend_stride, seed=args.seed)
        check_guidance(args.cfg, params["cfg_coef_beta"], args.two_step_cfg,  # fails before loading
                       names=("--cfg", "--cfg-beta", "--two-step-cfg"))
        melody = getattr(args, "melody", None)
        if melody and args.continue_from:
            raise GenerationError("--melody and --continue-from cannot be combined")
        batch_size = getattr(args, "batch_size", None)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise GenerationError(f"--batch-size must be a whole number of at least 1, got {batch_size}")
        if batch_size is not None:
            batch_size = min(batch_size, len(prompts))  # more than the prompts is all of them in one batch
        quantize = check_quantize(getattr(args, "quantize", None))
        transformer_dtype(getattr(args, "dtype", None), quantize)  # a bad combination fails before loading
        stream = bool(getattr(args, "stream", False))
        if stream and (melody or args.continue_from):
            raise GenerationError("--stream generates from text only: it cannot be combined with --melody or "
                                  "--continue-from")
        return cls(kind, args.model, prompts, output, fmt, params, args.continue_from, melody, args.text_encoder,
                   args.device, not args.no_progress, batch_size, quantize, stream,
                   bool(getattr(args, "compile", False)), getattr(args, "dtype", None), mp3_rate, allow_long)

    def output_paths(self) -> list[Path]:
        stem = self.output.with_suffix("") if self.output.suffix.lstrip(".").lower() in WRITE_FORMATS else self.output
        if len(self.prompts) == 1:
            return [stem]
        return [stem.with_name(f"{stem.name}_{i}") for i in range(len(self.prompts))]

    def final_paths(self) -> list[Path]:
        """The files the run writes, one per prompt (:meth:`output_paths` with the format's suffix)."""
        return [stem.with_name(f"{stem.name}.{self.fmt}") for stem in self.output_paths()]

    @staticmethod
    def _generate(model: BaseGenModel, prompts: list[str], prompt_audio: tuple | None,
                  melody_audio: tuple | None) -> torch.Tensor:
        if melody_audio is not None:  # run() checked that the model is a MusicGen
            wav, sr = melody_audio
            return model.generate_with_chroma(prompts, [wav] * len(prompts), sr)  # type: ignore[attr-defined]
        if prompt_audio is not None:
            wav, sr = prompt_audio
            return model.generate_continuation(wav[None].expand(len(prompts), -1, -1), sr, prompts)
        return model.generate(prompts)

    def load_model(self) -> BaseGenModel:
        if self.kind == "sfx":
            from .audiogen import AudioGen
            model: BaseGenModel = AudioGen.get_pretrained(self.model, device=self.device, quantize=self.quantize,
                                                          dtype=self.dtype)
        else:
            from .musicgen import MusicGen
            model = MusicGen.get_pretrained(self.model, device=self.device, quantize=self.quantize, dtype=self.dtype)
        if self.compile:
            model.lm.compile_decoding()
        return model

    def run(self) -> list[Path]:
        # Read the prompt audio first: input problems surface before a long model load.
        prompt_audio = audio_read(self.continue_from) if self.continue_from else None
        if self.melody:
            audio_info(self.melody)  # a missing or unreadable melody fails before the load
        model = self.load_model()
        if self.text_encoder:
            model.set_text_encoder(self.text_encoder)
        if self.allow_long:
            model.max_generation_duration = LONG_DURATION_LIMIT
        model.set_generation_params(**self.params)
        melody_audio = None
        if self.melody:
            from .musicgen import MusicGen
            if not isinstance(model, MusicGen):
                raise GenerationError("--melody needs a MusicGen melody model")
            # Only the part a generation of this duration uses: memory must not grow with the melody file.
            melody_audio = audio_read(self.melody, duration=model.melody_seconds())
        progress = GenerationProgress(model.frame_rate, disable=not self.progress)
        model.set_custom_progress_callback(progress)
        if self.stream:
            return self._run_stream(model, progress)
        begin = time.perf_counter()
        size = self.batch_size or len(self.prompts)
        chunks = []
        try:
            # Prompts go through in batches of --batch-size (memory), in order.
            for start in range(0, len(self.prompts), size):
                chunks.append(self._generate(model, self.prompts[start:start + size], prompt_audio, melody_audio))
        finally:
            progress.close()
        audio = torch.cat(chunks, dim=0)
        seconds = audio.shape[-1] / model.sample_rate
        elapsed = time.perf_counter() - begin
        if self.progress:
            # The real-time factor counts the audio generated: a continuation's prompt is kept, not generated.
            new = seconds if prompt_audio is None else max(0.0, seconds - prompt_audio[0].shape[-1] / prompt_audio[1])
            kept = "" if prompt_audio is None else f" ({new:.1f} s after the prompt)"
            print(f"generated {len(self.prompts)} x {seconds:.1f} s{kept} in {elapsed:.1f} s "
                  f"({_speed(len(self.prompts) * new, elapsed)})")
        paths = self.final_paths()
        # All or nothing: every file goes to a temporary first; they are renamed into place only once all exist.
        with atomic_outputs(paths) as temps:
            for tmp, path, wav in zip(temps, paths, audio, strict=True):
                with _named(tmp, path):
                    audio_write(tmp, wav.cpu(), model.sample_rate, format=self.fmt, mp3_rate=self.mp3_rate,
                                add_suffix=False, **NORMALIZATION)
        return paths

    def _run_stream(self, model: BaseGenModel, progress: GenerationProgress) -> list[Path]:
        """Write each file chunk by chunk as generation goes, under a hidden temporary name.

        The live chunks are raw samples clipped to [-1, 1], not loudness-normalised (that needs the whole clip):
        when the clip is done, the file is rewritten normalised as without ``--stream`` (same samples, the
        streaming decoder's output being the one-shot decoding's) and renamed into place, so an error leaves no
        partial output."""
        paths = self.final_paths()
        size = self.batch_size or len(self.prompts)
        begin = time.perf_counter()
        first_audio: float | None = None
        # As without --stream, the finished files are renamed into place together at the end (all or nothing).
        with atomic_outputs(paths) as finals, contextlib.closing(progress):
            for start in range(0, len(self.prompts), size):
                batch = zip(finals[start:start + size], paths[start:start + size], strict=True)
                with contextlib.ExitStack() as stack:
                    files = [stack.enter_context(_stream_file(tmp, model.sample_rate, model.audio_channels, self.fmt,
                                                            self.mp3_rate, target=path))
                             for tmp, path in batch]
                    # A short first chunk: playback can start after about 18 decoding steps.
                    stream = model.generate_stream(self.prompts[start:start + size], chunk_seconds=1.0,
                                                   first_chunk_seconds=FIRST_CHUNK_SECONDS)
                    for chunk in stream:
                        if first_audio is None:
                            first_audio = time.perf_counter() - begin
                        for f, wav in zip(files, chunk.cpu(), strict=True):
                            f.write(wav)
        elapsed = time.perf_counter() - begin
        if self.progress:
            print(f"first audio after {first_audio or 0:.2f} s; generated {len(self.prompts)} x "
                  f"{model.duration:.1f} s in {elapsed:.1f} s ({_speed(len(self.prompts) * model.duration, elapsed)})")
        return paths


def _speed(audio_seconds: float, wall_seconds: float) -> str:
    """The real-time factor: seconds of audio per second of wall time (see :mod:`.progress`)."""
    return f"{audio_seconds / wall_seconds:.2f}x real time" if wall_seconds > 0 else "instant"


class _StreamWriter:
    """Appends chunks ``wav [C, n]`` to an open sound file, clipped to [-1, 1] as the encoders expect, and keeps
    them (unclipped) for the normalised rewrite at the end."""

    def __init__(self, file: sf.SoundFile, path: Path) -> None:
        self.file = file
        self.path = path
        self.chunks: list[torch.Tensor] = []

    def write(self, wav: torch.Tensor) -> None:
        wav = wav.float()
        self.chunks.append(wav)
        try:
            # Rounded to the nearest PCM code as audio_write does; a chunk cannot rescale the earlier ones.
            self.file.write(_sndfile.pcm_data(wav.clamp(-1, 1).numpy().T, self.file.subtype, whole=False))
        except _sndfile.ERRORS as e:
            raise AudioFileError(f"cannot write audio file {self.path}: {_sndfile.error_reason(e)}") from e


@contextlib.contextmanager
def _stream_file(path: Path, sample_rate: int, channels: int, fmt: str, mp3_rate: int = 320,
                 target: Path | None = None) -> Iterator[_StreamWriter]:
    """An audio file written chunk by chunk under a hidden temporary name (``.NAME.live-<pid>-<random>``, see
    :func:`wavecraft.fileio.temp_path`). On success the clip is written to ``path`` normalised
    (:data:`NORMALIZATION`, as without streaming; ``audio_write`` replaces ``path`` atomically). The temporary file
    is deleted in any case, so an error leaves no output. ``target``: the name the user knows ``path`` by (where
    ``path`` is a temporary renamed later), for the live file's name and the error messages."""
    target = target or path
    settings = _sndfile.encoder_settings(fmt, channels, sample_rate)
    with contextlib.ExitStack() as stack:
        try:
            remove_stale_temporaries(target.parent)
            tmp = temp_path(target, "live")
            stack.callback(tmp.unlink, missing_ok=True)  # before the file exists: a signal cannot leak it
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            file = stack.enter_context(sf.SoundFile(str(tmp), "w", sample_rate, channels, **settings))
        except _sndfile.ERRORS as e:
            raise AudioFileError(f"cannot write audio file {target}: {_sndfile.error_reason(e)}") from e
        writer = _StreamWriter(file, target)
        yield writer
        file.close()
        with _named(path, target):
            audio_write(path, torch.cat(writer.chunks, dim=-1), sample_rate, format=fmt, add_suffix=False,
                        mp3_rate=mp3_rate, **NORMALIZATION)


@contextlib.contextmanager
def _named(tmp: Path, path: Path) -> Iterator[None]:
    """Errors about the temporary ``tmp`` name the file the user asked for, ``path``."""
    try:
        yield
    except AudioFileError as e:
        raise AudioFileError(str(e).replace(str(tmp), str(path))) from e


def read_prompts_file(path: str) -> list[str]:
    """The prompts of a ``--prompts-file``: one a line; blank lines and lines starting with ``#`` are skipped.

    Read up to :data:`MAX_PROMPTS_FILE_BYTES` (so ``/dev/zero`` or a huge file fails at once), UTF-8 text without
    NUL bytes, each prompt at most :data:`MAX_DESCRIPTION_CHARS` characters.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROMPTS_FILE_BYTES + 1)
    except OSError as e:
        raise GenerationError(f"cannot read prompts file {path}: {e.strerror or e}") from None
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise GenerationError(f"prompts file {path} is larger than {MAX_PROMPTS_FILE_BYTES >> 20} MiB: is it the "
                              "right file?")
    if b"\0" in data:
        raise GenerationError(f"prompts file {path} contains NUL bytes: not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GenerationError(f"prompts file {path} is not UTF-8 text (byte {e.start})") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):  # a prompt cannot start with "#"
            continue
        if len(line) > MAX_DESCRIPTION_CHARS:
            raise GenerationError(f"prompts file {path}, line {number}: {len(line)} characters; the limit is "
                                  f"{MAX_DESCRIPTION_CHARS}")
        prompts.append(line)
    return prompts
