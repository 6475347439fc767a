"""Audio manifests: one :class:`AudioMeta` JSON record per line (JSONL, optionally gzipped).

Path convention: :func:`build_manifest` stores absolute paths. :func:`write_manifest` writes them as they are, or
with ``relative=True`` relative to the manifest's own folder, so a dataset folder with its manifest can be moved
as a whole. :func:`read_manifest` always resolves a relative path against the folder of the manifest file, never
the current working directory, so the same manifest reads the same from anywhere.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audio import audio_info
from ..errors import WavecraftError
from ..fileio import atomic_output
from .sidecar import read_sidecar

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: Extensions :func:`build_manifest` picks up by default (matched case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aiff")

_FIELDS = ("path", "duration", "sample_rate", "channels", "description", "info")


@dataclass
class AudioMeta:
    """One audio file of a dataset: where it is, how long it is, and what it sounds like.

    ``info`` holds everything else a record carries (tags, genre, bpm, key, AudioCraft's ``amplitude`` /
    ``weight`` / ``info_path``, ...); it must be JSON-serializable.
    """

    path: str
    duration: float  # seconds
    sample_rate: int
    channels: int = 1
    description: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: 1-based line of the manifest this record was read from (not written back): for error messages.
    line: int | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record; ``description`` and ``info`` are left out when empty to keep lines short."""
        d: dict[str, Any] = {
            "path": self.path,
            "duration": self.duration,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
        }
        if self.description is not None:
            d["description"] = self.description
        if self.info:
            d["info"] = dict(self.info)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioMeta:
        """Parse a record, ours or AudioCraft's: unknown fields go into ``info``; ``channels`` defaults to 1.

        Raises :class:`WavecraftError` when a required field is missing or has the wrong type.
        """
        if not isinstance(d, dict):
            raise WavecraftError(f"a manifest record must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("path", "duration", "sample_rate") if k not in d]
        if missing:
            raise WavecraftError(f"manifest record lacks field(s) {', '.join(missing)}")
        path, duration, rate = d["path"], d["duration"], d["sample_rate"]
        channels, description = d.get("channels", 1), d.get("description")
        if not isinstance(path, str) or not path:
            raise WavecraftError(f"'path' must be a non-empty string, got {path!r}")
        # bool is an int subclass: reject it explicitly so `true` is not read as 1.
        if isinstance(duration, bool) or not isinstance(duration, int | float) or not duration >= 0:
            raise WavecraftError(f"'duration' must be a number of seconds >= 0, got {duration!r}")
        for name, value in (("sample_rate", rate), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise WavecraftError(f"'{name}' must be a positive integer, got {value!r}")
        if description is not None and not isinstance(description, str):
            raise WavecraftError(f"'description' must be a string or null, got {description!r}")
        info = d.get("info") or {}
        if not isinstance(info, dict):
            raise WavecraftError(f"'info' must be a JSON object, got {info!r}")
        info = {**info, **{k: v for k, v in d.items() if k not in _FIELDS}}
        return cls(path, float(duration), rate, channels, description, info)


def _open_text(path: Path, mode: str) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")  # noqa: SIM115 - returned to a `with` in the caller


def read_manifest(path: PathLike) -> list[AudioMeta]:
    """Read a JSONL manifest (gzip-compressed when the name ends with ``.gz``); blank lines are skipped.

    Relative ``path`` fields are resolved against the manifest's folder. A missing file or a malformed line raises
    :class:`WavecraftError` naming the file (and the 1-based line number).
    """
    path = Path(path)
    # Absolute, so the stored paths stay valid if the working directory changes later.
    folder = path.absolute().parent
    metas = []
    try:
        with _open_text(path, "r") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    meta = AudioMeta.from_dict(json.loads(line))
                except (json.JSONDecodeError, WavecraftError) as e:
                    raise WavecraftError(f"bad record in manifest {path}, line {number}: {e}") from None
                if not os.path.isabs(meta.path):
                    meta.path = os.path.normpath(folder / meta.path)
                meta.line = number
                metas.append(meta)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        # EOFError / BadGzipFile (an OSError): a truncated or non-gzip `.gz` file.
        raise WavecraftError(f"cannot read manifest {path}: {e}") from None
    return metas


def write_manifest(path: PathLike, metas: Iterable[AudioMeta], relative: bool = False) -> None:
    """Write ``metas`` as a JSONL manifest, atomically (a temporary file in the same folder, then a rename).

    The file is gzip-compressed when its name ends with ``.gz``. With ``relative``, paths are written relative to
    the manifest's folder (what :func:`read_manifest` resolves them against); otherwise as they are.
    An ``OSError`` while writing (disk full, no permission) is a :class:`WavecraftError`; the file is unchanged.
    """
    path = Path(path)
    folder = path.parent.resolve()
    try:
        with atomic_output(path) as tmp, _open_text(tmp, "w") as f:
            for meta in metas:
                d = meta.to_dict()
                if relative:
                    d["path"] = os.path.relpath(os.path.abspath(meta.path), folder)
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    except OSError as e:
        # A full disk, a missing folder, a name too long: one line naming the manifest (f.write names no file).
        raise WavecraftError(f"cannot write manifest {path}: {(e.strerror or str(e)).lower()}") from None


def _meta_for(file: Path) -> AudioMeta | None:
    """Probe one file; ``None`` when it cannot be read (the caller reports it)."""
    try:
        info = audio_info(file)
    except (WavecraftError, OSError) as e:
        logger.debug("skipping %s: %s", file, e)
        return None
    description, extra = read_sidecar(file)
    return AudioMeta(str(file), float(info.duration), int(info.sample_rate), int(info.channels), description, extra)


def build_manifest(
    root: PathLike,
    exts: Sequence[str] = AUDIO_EXTENSIONS,
    min_duration: float = 0.0,
    workers: int = 1,
) -> list[AudioMeta]:
    """Scan ``root`` recursively for audio files and describe each one, in sorted path order.

    Paths are stored absolute (see the module docstring). Hidden files and folders (``.name``) are ignored.
    Descriptions and extra info come from sidecar files (see :func:`read_sidecar`). Files that cannot be probed
    are skipped with one warning listing them; files shorter than ``min_duration`` seconds (or empty) are dropped.
    ``workers > 1`` probes files in threads (decoding headers is mostly I/O); the result order does not change.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise WavecraftError(f"dataset folder not found: {root}")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in wanted
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_meta_for, files))
    else:
        results = [_meta_for(f) for f in files]
    skipped = [str(f) for f, m in zip(files, results, strict=True) if m is None]
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        logger.warning("skipped %d unreadable audio file(s) under %s: %s", len(skipped), root, shown)
    return [m for m in results if m is not None and m.duration > 0 and m.duration >= min_duration]
