"""Training data for the LM: code segments from a frozen codec, with their captions (and melody chroma).

:class:`CodeCorpus` encodes every file of a manifest once (chunk by chunk, so long recordings fit in memory) and
keeps the codes ``[K, T]`` as int16 in memory, optionally cached on disk as one safetensors file per audio file
(keyed by the file's path, size and mtime and by the codec's weights, so a changed file or codec is re-encoded).
Batches are then cut in code space, which makes a training step cost only the LM. :func:`on_the_fly_batches`
encodes waveform segments per batch instead (no start-up cost, the codec runs every step).

A file that is missing or cannot be decoded is reported with its manifest line and skipped, or stops the run
(``on_bad_file="stop"``); never a crash mid-epoch: every file is read before the first step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..audio import audio_read, convert_audio
from ..codec.compression import CompressionModel
from ..conditioning.chroma import ChromaConditioner
from ..data.manifest import AudioMeta
from ..errors import WavecraftError
from ..fileio import atomic_output
from .lm_conditions import ConditionProjector, RawConditions

logger = logging.getLogger(__name__)

ON_BAD_FILE = ("skip", "stop")


def _read_cached(path: Path) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The ``(codes, chroma)`` cached in ``path``, or ``None`` (with a warning; the file is then encoded again)
    when the entry is unreadable or malformed, e.g. damaged on disk."""
    from ..checkpoints.safe_load import load_safetensors

    try:
        stored = load_safetensors(path)
        codes = stored["codes"]
        if codes.dim() != 2 or codes.dtype != torch.int16:
            raise ValueError(f"codes of shape {tuple(codes.shape)} and dtype {codes.dtype}")
    except (WavecraftError, KeyError, ValueError) as e:
        logger.warning("cached codes %s are unusable (%s); encoding again", path, " ".join(str(e).split())[:200])
        return None
    return codes, stored.get("chroma")


#: Temporaries of the cache writers: ``atomic_output``'s and the per-process ones of earlier versions.
_CACHE_TEMP = re.compile(r"(?:\.[0-9a-f]{40}\.safetensors\.tmp-(?:\d+-)?[0-9a-f]+\.safetensors|[0-9a-f]{40}\.\d+\.tmp)")


def _remove_stale_cache_temporaries(cache: Path) -> None:
    """Delete cache temporaries that a killed run left behind (only this module's names are touched)."""
    try:
        entries = list(cache.iterdir())
    except OSError:  # no cache yet
        return
    for path in entries:
        if _CACHE_TEMP.fullmatch(path.name):
            with contextlib.suppress(OSError):
                path.unlink()


def codec_fingerprint(codec: CompressionModel) -> str:
    """A short hash of the codec's weights and settings: cached codes are only valid for the codec that made them."""
    digest = hashlib.sha1(f"{codec.sample_rate}/{codec.channels}/{codec.num_codebooks}".encode())
    for name, tensor in sorted(codec.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class CodeCorpus:
    """Codes ``[K, T_i]`` (and chroma ``[F_i, n_chroma]`` for melody) of every readable file of ``metas``."""

    def __init__(self, metas: Sequence[AudioMeta], codec: CompressionModel, *, cache_dir: str | Path | None = None,
                 chroma: ChromaConditioner | None = None, on_bad_file: str = "skip", source: str = "manifest",
                 chunk_seconds: float = 30.0) -> None:
        if on_bad_file not in ON_BAD_FILE:
            raise WavecraftError(f"on_bad_file must be one of {', '.join(ON_BAD_FILE)}, got {on_bad_file!r}")
        self.codec = codec.eval()
        self.chroma = chroma
        self.metas: list[AudioMeta] = []
        self.codes: list[torch.Tensor] = []
        self.chromas: list[torch.Tensor] = []
        self.skipped: list[str] = []
        cache = Path(cache_dir) if cache_dir else None
        fingerprint = codec_fingerprint(codec) if cache else ""
        if cache is not None:
            _remove_stale_cache_temporaries(cache)
        for meta in metas:
            try:
                codes, chroma_feats = self._load(meta, cache, fingerprint, chunk_seconds)
            except (WavecraftError, OSError, RuntimeError, ValueError) as e:
                where = f"{source}, line {meta.line}" if meta.line else source
                message = f"{where}: {meta.path}: {' '.join(str(e).split())[:200]}"
                if on_bad_file == "stop":
                    raise WavecraftError(message) from None
                logger.warning("skipping %s", message)
                self.skipped.append(message)
                continue
            self.metas.append(meta)
            self.codes.append(codes)
            if chroma_feats is not None:
                self.chromas.append(chroma_feats)
        if not self.metas:
            raise WavecraftError(f"no usable audio in {source} ({len(self.skipped)} unreadable files)")

    @property
    def total_frames(self) -> int:
        return sum(c.shape[-1] for c in self.codes)

    def _load(self, meta: AudioMeta, cache: Path | None, fingerprint: str, chunk_seconds: float
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        path = Path(meta.path)
        stat = path.stat()  # a missing file fails here, before any decoding
        cache_file = None
        if cache is not None:
            key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{fingerprint}|"
                               f"{self.chroma is not None}".encode()).hexdigest()
            cache_file = cache / f"{key}.safetensors"
            if cache_file.exists():
                stored = _read_cached(cache_file)
                if stored is not None:
                    return stored
        wav, rate = audio_read(path)
        wav = convert_audio(wav, rate, self.codec.sample_rate, self.codec.channels)
        if wav.shape[-1] < self.codec.sample_rate / self.codec.frame_rate:
            raise WavecraftError("shorter than one codec frame")
        codes = self._encode(wav, chunk_seconds)
        chroma = None
        if self.chroma is not None:
            with torch.no_grad():
                chroma = self.chroma.chroma(wav.mean(0, keepdim=True)[None])[0].to(torch.float16)
        if cache_file is not None:
            from safetensors.torch import save_file

            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tensors = {"codes": codes} if chroma is None else {"codes": codes, "chroma": chroma}
            try:
                with atomic_output(cache_file) as tmp:  # a kill mid-write leaves no torn entry, nor a temporary
                    save_file(tensors, str(tmp))
            except Exception as e:  # noqa: BLE001 - full disk and the like: the codes are fine, only not cached
                logger.warning("cannot cache the codes of %s in %s (%s)", path, cache_file.parent,
                               " ".join(str(e).split())[:200])
        return codes, chroma

    @torch.no_grad()
    def _encode(self, wav: torch.Tensor, chunk_seconds: float) -> torch.Tensor:
        """``wav [C, T] -> codes [K, frames]`` (int16), in chunks of whole frames to bound memory."""
        hop = round(self.codec.sample_rate / self.codec.frame_rate)
        step = max(1, int(chunk_seconds * self.codec.frame_rate)) * hop
        device = next(self.codec.parameters()).device
        parts = []
        for start in range(0, wav.shape[-1], step):
            piece = wav[None, :, start:start + step].to(device)
            parts.append(self.codec.encode(piece)[0][0].to(torch.int16).cpu())
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def silence_frame(self) -> torch.Tensor:
        """The codes ``[K]`` of a frame of silence: what short segments are padded with."""
        device = next(self.codec.parameters()).device
        hop = round(self.codec.sample_rate / self.codec.frame_rate)
        codes = self.codec.encode(torch.zeros(1, self.codec.channels, 9 * hop, device=device))[0][0]
        return codes[:, codes.shape[-1] // 2].to(torch.int16).cpu()

    def sampler(self, segment_frames: int, batch_size: int, seed: int, chroma_frames: int = 0
                ) -> Callable[[int], tuple[torch.Tensor, list[str | None], torch.Tensor | None]]:
        """``sample(step) -> (codes [B, K, segment_frames], texts, chroma [B, chroma_frames, n_chroma] | None)``.

        Files are drawn with probability proportional to their length and a start uniformly in the file; the
        draw depends on ``(seed, step)`` only, so a resumed run sees the same batches. Short files are padded
        with silence codes (and their chroma tiled)."""
        lengths = np.array([c.shape[-1] for c in self.codes], dtype=np.float64)
        probs = lengths / lengths.sum()
        silence = self.silence_frame()
        frame_rate = self.codec.frame_rate
        chroma_rate = self.chroma.sample_rate / self.chroma.chroma.hop if self.chroma is not None else 0.0

        def sample(step: int) -> tuple[torch.Tensor, list[str | None], torch.Tensor | None]:
            rng = np.random.default_rng([seed, step])
            picks = rng.choice(len(self.codes), size=batch_size, p=probs)
            rows, texts, chromas = [], [], []
            for i in picks:
                codes = self.codes[i]
                start = int(rng.integers(0, max(1, codes.shape[-1] - segment_frames + 1)))
                piece = codes[:, start:start + segment_frames]
                if piece.shape[-1] < segment_frames:
                    pad = silence[:, None].expand(-1, segment_frames - piece.shape[-1])
                    piece = torch.cat([piece, pad], dim=-1)
                rows.append(piece.long())
                texts.append(self.metas[i].description)
                if self.chromas:
                    first = int(round(start / frame_rate * chroma_rate))
                    feats = self.chromas[i][first:first + chroma_frames].float()
                    if feats.shape[0] == 0:
                        feats = self.chromas[i][-1:].float()
                    reps = -(-chroma_frames // feats.shape[0])
                    chromas.append(feats.repeat(reps, 1)[:chroma_frames])
            return torch.stack(rows), texts, torch.stack(chromas) if chromas else None

        return sample


def corpus_batches(corpus: CodeCorpus, conditions: ConditionProjector, segment_frames: int, batch_size: int,
                   seed: int) -> Callable[[int], tuple[torch.Tensor, RawConditions]]:
    """``batches(step) -> (codes [B, K, T], RawConditions)`` for :class:`~.lm_solver.LMSolver`."""
    chroma_frames = 0
    for module in conditions.conditioners.values():
        if isinstance(module, ChromaConditioner):
            chroma_frames = module.chroma_len
    sample = corpus.sampler(segment_frames, batch_size, seed, chroma_frames)

    def batches(step: int) -> tuple[torch.Tensor, RawConditions]:
        codes, texts, chroma = sample(step)
        return codes, conditions.encode(texts, chroma=chroma)

    return batches


def on_the_fly_batches(metas: Sequence[AudioMeta], codec: CompressionModel, conditions: ConditionProjector,
                       segment_duration: float, batch_size: int, total_steps: int, seed: int
                       ) -> Callable[[int], tuple[torch.Tensor, RawConditions]]:
    """Like :func:`corpus_batches` but cutting waveform segments (:class:`~wavecraft.data.SegmentDataset`) and
    encoding them every step: nothing to prepare, the codec's cost is paid per batch."""
    from ..data import collate
    from .segments import FiniteSegmentDataset

    dataset = FiniteSegmentDataset(metas, segment_duration, codec.sample_rate, codec.channels,
                             num_samples=total_steps * batch_size, seed=seed)
    device = next(codec.parameters()).device

    @torch.no_grad()
    def batches(step: int) -> tuple[torch.Tensor, RawConditions]:
        wav, _, infos = collate([dataset[i] for i in range(step * batch_size, (step + 1) * batch_size)])
        codes = codec.encode(wav.to(device))[0].cpu()
        texts = [info.meta.description for info in infos]
        mono = wav.mean(1, keepdim=True)
        return codes, conditions.encode(texts, wav=mono if conditions.has_melody else None)

    return batches
