"""One command-line generation run: validate everything, generate, then write every output file."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch

from ..audio import _sndfile, audio_info, audio_read, audio_write
from ..audio.io import WRITE_FORMATS
from ..errors import AudioFileError
from ..lm.quantize import check_quantize
from .genmodel import BaseGenModel, GenerationError, check_guidance, transformer_dtype
from .progress import GenerationProgress

MAX_PROMPTS = 256
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

    @classmethod
    def from_args(cls, args: argparse.Namespace, kind: str) -> GenerationJob:
        prompts = list(args.prompts)
        if args.prompts_file:
            try:
                text = Path(args.prompts_file).read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise GenerationError(f"cannot read prompts file {args.prompts_file}: {e}") from None
            # One prompt a line; blank lines and "#" comments are skipped (a prompt cannot start with "#").
            prompts += [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        if not prompts:
            raise GenerationError("no prompt given: pass text descriptions or --prompts-file")
        if any(not p.strip() for p in prompts):
            raise GenerationError("a prompt is empty")
        if len(prompts) > MAX_PROMPTS:
            raise GenerationError(f"{len(prompts)} prompts in one run; the limit is {MAX_PROMPTS}")
        output = Path(args.output)
        fmt = (args.format or output.suffix.lstrip(".").lower() or "wav")
        mp3_rate = getattr(args, "mp3_bitrate", 320)
        if not isinstance(mp3_rate, int) or not 8 <= mp3_rate <= 320:
            raise GenerationError(f"--mp3-bitrate must be 8-320 kbps, got {mp3_rate}")
        if fmt not in WRITE_FORMATS:
            raise GenerationError(f"unknown output format {fmt!r} (use {', '.join(WRITE_FORMATS)})")
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
        if batch_size is not None and batch_size < 1:
            raise GenerationError(f"--batch-size must be at least 1, got {batch_size}")
        quantize = check_quantize(getattr(args, "quantize", None))
        transformer_dtype(getattr(args, "dtype", None), quantize)  # a bad combination fails before loading
        stream = bool(getattr(args, "stream", False))
        if stream and (melody or args.continue_from):
            raise GenerationError("--stream generates from text only: it cannot be combined with --melody or "
                                  "--continue-from")
        return cls(kind, args.model, prompts, output, fmt, params, args.continue_from, melody, args.text_encoder,
                   args.device, not args.no_progress, batch_size, quantize, stream,
                   bool(getattr(args, "compile", False)), getattr(args, "dtype", None), mp3_rate)

    def output_paths(self) -> list[Path]:
        stem = self.output.with_suffix("") if self.output.suffix.lstrip(".").lower() in WRITE_FORMATS else self.output
        if len(self.prompts) == 1:
            return [stem]
        return [stem.with_name(f"{stem.name}_{i}") for i in range(len(self.prompts))]

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
        return [audio_write(stem, wav.cpu(), model.sample_rate, format=self.fmt, mp3_rate=self.mp3_rate,
                            **NORMALIZATION)
                for stem, wav in zip(self.output_paths(), audio, strict=True)]

    def _run_stream(self, model: BaseGenModel, progress: GenerationProgress) -> list[Path]:
        """Write each file chunk by chunk as generation goes, under a hidden temporary name.

        The live chunks are raw samples clipped to [-1, 1], not loudness-normalised (that needs the whole clip):
        when the clip is done, the file is rewritten normalised as without ``--stream`` (same samples, the
        streaming decoder's output being the one-shot decoding's) and renamed into place, so an error leaves no
        partial output."""
        paths = [stem.with_name(f"{stem.name}.{self.fmt}") for stem in self.output_paths()]
        size = self.batch_size or len(self.prompts)
        begin = time.perf_counter()
        first_audio: float | None = None
        try:
            for start in range(0, len(self.prompts), size):
                batch_paths = paths[start:start + size]
                with contextlib.ExitStack() as stack:
                    files = [stack.enter_context(_stream_file(path, model.sample_rate, model.audio_channels, self.fmt,
                                                            self.mp3_rate))
                             for path in batch_paths]
                    # A short first chunk: playback can start after about 18 decoding steps.
                    stream = model.generate_stream(self.prompts[start:start + size], chunk_seconds=1.0,
                                                   first_chunk_seconds=FIRST_CHUNK_SECONDS)
                    for chunk in stream:
                        if first_audio is None:
                            first_audio = time.perf_counter() - begin
                        for f, wav in zip(files, chunk.cpu(), strict=True):
                            f.write(wav)
        finally:
            progress.close()
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
def _stream_file(path: Path, sample_rate: int, channels: int, fmt: str,
                 mp3_rate: int = 320) -> Iterator[_StreamWriter]:
    """An audio file written chunk by chunk under a hidden temporary name (``.NAME.live-<random>``). On success
    the clip is written to ``path`` normalised (:data:`NORMALIZATION`, as without streaming; ``audio_write``
    replaces ``path`` atomically). The temporary file is deleted in any case, so an error leaves no output."""
    settings = _sndfile.encoder_settings(fmt, channels, sample_rate)
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            base = f".{path.name}" if len(path.name.encode()) <= 200 else ""  # the usual 255-byte name limit
            tmp = path.with_name(f"{base}.live-{secrets.token_hex(6)}{path.suffix}")
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # a name of its own
            stack.callback(tmp.unlink, missing_ok=True)
            file = stack.enter_context(sf.SoundFile(str(tmp), "w", sample_rate, channels, **settings))
        except _sndfile.ERRORS as e:
            raise AudioFileError(f"cannot write audio file {path}: {_sndfile.error_reason(e)}") from e
        writer = _StreamWriter(file, path)
        yield writer
        file.close()
        audio_write(path, torch.cat(writer.chunks, dim=-1), sample_rate, format=fmt, add_suffix=False,
                    mp3_rate=mp3_rate, **NORMALIZATION)
