"""Plumbing shared by the corpus builders: item files (audio + sidecar), resuming, worker pools, the manifest.

An item ``NAME`` is ``NAME.wav`` (or ``.flac``) plus ``NAME.json``, the sidecar :func:`~.sidecar.read_sidecar`
reads (``description`` + metadata). The audio is written first and the sidecar last, both atomically, so an
item counts as done exactly when both files exist; an interrupted run resumes by skipping done items.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import WavecraftError
from ..fileio import atomic_output
from .manifest import build_manifest, write_manifest

logger = logging.getLogger(__name__)

FORMATS = ("wav", "flac")
#: RMS level of rendered items (dBFS); a -1 dBFS peak limit wins over it.
TARGET_RMS_DB = -20.0

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ItemResult:
    """What a worker did for one item: ``status`` is ``"rendered"``, ``"skipped"`` (already there) or ``"failed"``."""

    name: str
    status: str
    audio_seconds: float = 0.0
    cpu_seconds: float = 0.0
    message: str = ""


@dataclass
class RenderReport:
    """Totals of one corpus-building run."""

    output_dir: Path
    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    manifest: Path | None = None
    manifest_items: int = 0

    @property
    def speed(self) -> float:
        """Seconds of audio rendered per CPU second (``inf`` when nothing was timed)."""
        return self.audio_seconds / self.cpu_seconds if self.cpu_seconds > 0 else math.inf

    def summary(self) -> str:
        """One line for the CLI."""
        line = (f"{self.output_dir}: {self.rendered} rendered, {self.skipped} already there, {self.failed} failed; "
                f"{self.audio_seconds:.1f} s of audio in {self.cpu_seconds:.1f} CPU s")
        if self.cpu_seconds > 0:
            line += f" ({self.speed:.0f}x realtime per core)"
        if self.manifest is not None:
            line += f"; manifest {self.manifest} ({self.manifest_items} items)"
        return line

    def add(self, result: ItemResult) -> None:
        """Count one item's result in (failures are logged by the caller)."""
        if result.status == "rendered":
            self.rendered += 1
            self.audio_seconds += result.audio_seconds
            self.cpu_seconds += result.cpu_seconds
        elif result.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


def check_format(format: str) -> str:
    """The lower-cased output format, or a :class:`WavecraftError` for one the builders do not write."""
    fmt = str(format).lower().lstrip(".")
    if fmt not in FORMATS:
        raise WavecraftError(f"unknown output format {format!r}: expected one of {', '.join(FORMATS)}")
    return fmt


def check_common(count: int, sample_rate: int, max_duration: float | None, workers: int) -> None:
    """Validate the arguments every builder shares (one-line :class:`WavecraftError`)."""
    if count < 0:
        raise WavecraftError(f"count must be >= 0, got {count}")
    if not 8000 <= sample_rate <= 192000:
        raise WavecraftError(f"sample rate must be in 8000..192000 Hz, got {sample_rate}")
    if max_duration is not None and not max_duration > 0:
        raise WavecraftError(f"max duration must be positive, got {max_duration}")
    if workers < 1:
        raise WavecraftError(f"workers must be >= 1, got {workers}")


def item_done(output_dir: Path, name: str, format: str) -> bool:
    """Whether item ``name`` is complete: its audio and its sidecar (written last) both exist."""
    return (output_dir / f"{name}.{format}").is_file() and (output_dir / f"{name}.json").is_file()


def normalizing_gain(audio: np.ndarray, target_rms_db: float = TARGET_RMS_DB, peak_db: float = -1.0) -> float:
    """Gain bringing mono ``audio`` to an RMS of ``target_rms_db`` dBFS, reduced so its peak stays at ``peak_db``.

    Plain RMS rather than LUFS: good enough to even out items, and it keeps scipy (pyloudnorm) out of workers.
    """
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak == 0.0:
        return 1.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return min(10.0 ** (target_rms_db / 20.0) / rms, 10.0 ** (peak_db / 20.0) / peak)


def write_item(output_dir: Path, name: str, audio: np.ndarray, sample_rate: int, format: str,
               sidecar: dict[str, Any]) -> Path:
    """Level-normalize and write ``NAME.format`` (mono), then the ``NAME.json`` sidecar; returns the audio path."""
    import torch

    from ..audio import audio_write

    audio = (audio * normalizing_gain(audio)).astype(np.float32)
    path = audio_write(output_dir / name, torch.from_numpy(audio)[None], sample_rate, format=format,
                       normalize=False, peak_clip_headroom_db=0.0, log_clipping=False)
    write_sidecar(output_dir / f"{name}.json", sidecar)
    return path


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON sidecar atomically (UTF-8, indented, keys in the given order)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def run_items(worker: Callable[[T], R], tasks: Iterable[T], workers: int,
              initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> Iterator[R]:
    """``worker(task)`` for every task, in order: in this process, or in ``workers`` spawned processes.

    Spawned (not forked) processes, so torch and the synthesizer start clean in each; ``initializer(*initargs)``
    runs once per process, and first in this one, so a bad setting (an unreadable soundfont) fails with its own
    error here instead of breaking the pool.
    """
    if initializer is not None:
        initializer(*initargs)
    if workers <= 1:
        yield from map(worker, tasks)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer,
                             initargs=initargs) as pool:
        yield from pool.map(worker, tasks, chunksize=1)


def render_all(worker: Callable[[T], ItemResult], tasks: Iterable[T], workers: int, output_dir: Path,
               begin: float, manifest: str | os.PathLike | None, write: bool,
               initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> RenderReport:
    """Run every task (see :func:`run_items`), log each failure / rendering, then :func:`finish` the report."""
    report = RenderReport(output_dir)
    for result in run_items(worker, tasks, workers, initializer, initargs):
        report.add(result)
        if result.status == "failed":
            logger.warning("item %s failed: %s", result.name, result.message)
        elif result.status == "rendered":
            logger.info("%s: %s", result.name, result.message)
    report.wall_seconds = time.perf_counter() - begin
    return finish(report, manifest, write)


def cpu_time() -> float:
    """CPU seconds used so far by this process and its finished children (``mma`` runs in a subprocess)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def finish(report: RenderReport, manifest: str | os.PathLike | None, write: bool = True) -> RenderReport:
    """Write the manifest of everything in ``report.output_dir`` (default ``OUTPUT_DIR/manifest.jsonl``).

    Paths are stored relative to the manifest's folder, so the folder can be moved as a whole.
    """
    if not write:
        return report
    path = Path(manifest) if manifest is not None else report.output_dir / "manifest.jsonl"
    metas = build_manifest(report.output_dir, workers=4)
    if metas:
        write_manifest(path, metas, relative=True)
        report.manifest, report.manifest_items = path, len(metas)
    return report
