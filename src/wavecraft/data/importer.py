"""``wavecraft data import``: a captioned manifest for any folder of recordings.

Meant for audio extracted from Debian packages (game music such as ``wesnoth-1.16-music`` or
``singularity-music``; sound effects such as ``ufoai-sound``, whose folders are categories) or any other tree of
files. Captions are built from the metadata at hand: the folder names (categories), the file name, and the
audio tags (title, artist, album, genre, comment) read with PyAV, all cleaned of underscores, camelCase and
numbers, with an optional ``music`` / ``sound effect`` prefix (``--kind``). Example:
``sound/weapons/RifleShot_02.ogg`` -> ``"sound effect: weapons, rifle shot"``.

By default the manifest points at the files where they are (nothing is written next to them: package folders
are often read-only). With ``copy`` the files are copied into ``output_dir`` (same relative layout) and with
``convert_rate`` / ``mono`` converted to wav; then a ``.json`` sidecar is written next to each copy too. A
licence file (e.g. a package's ``/usr/share/doc/PKG/copyright``) is recorded in every record's info.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WavecraftError
from . import _corpus
from .captions import clean_name
from .manifest import AUDIO_EXTENSIONS, AudioMeta, write_manifest

logger = logging.getLogger(__name__)

KINDS = ("music", "sfx")
_PREFIX = {"music": "music", "sfx": "sound effect"}
#: Folder names that say nothing about the sound (packaging, formats), left out of captions.
GENERIC_FOLDERS = frozenset({
    "usr", "share", "local", "opt", "games", "game", "data", "assets", "media", "res", "resources", "files",
    "lib", "base", "core", "sound", "sounds", "snd", "sfx", "audio", "music", "musics", "samples", "sample",
    "ogg", "wav", "flac", "mp", "oga", "opus", "doc", "default", "misc", "other", "extracted",
})
#: Abbreviated folder names spelled out in captions.
_FOLDER_ALIASES = {"ui": "user interface", "amb": "ambience", "fx": "effects", "sfx": "effects"}
_TAG_KEYS = ("title", "artist", "album", "genre", "comment", "description")


@dataclass
class ImportReport:
    """What :func:`import_folder` did."""

    source: Path
    files: int = 0
    captioned: int = 0
    audio_seconds: float = 0.0
    copied: int = 0
    reused: int = 0
    unreadable: list[str] = field(default_factory=list)
    manifest: Path | None = None

    def summary(self) -> str:
        """One line for the CLI."""
        line = (f"{self.manifest}: {self.files} files from {self.source}, {self.audio_seconds / 3600:.2f} h, "
                f"{self.captioned} with captions")
        if self.copied or self.reused:
            line += f"; {self.copied} copied/converted, {self.reused} already there"
        if self.unreadable:
            line += f"; {len(self.unreadable)} unreadable skipped"
        return line


def read_tags(path: Path) -> dict[str, str]:
    """Lower-cased text tags of an audio file (container and first audio stream), via PyAV; ``{}`` if none."""
    try:
        import av

        with av.open(str(path)) as container:
            tags = {str(k).lower(): str(v) for k, v in (container.metadata or {}).items()}
            if container.streams.audio:
                for k, v in (container.streams.audio[0].metadata or {}).items():
                    tags.setdefault(str(k).lower(), str(v))
    except Exception as e:  # tags are optional: any decoder complaint just means no tags
        logger.debug("no tags for %s: %s", path, e)
        return {}
    return {k: " ".join(v.split()) for k in _TAG_KEYS if (v := tags.get(k, "")).strip()}


def categories(relative: Path) -> list[str]:
    """Caption words of the folders of a file path relative to the import root (generic names dropped)."""
    words = []
    for part in relative.parent.parts:
        cleaned = clean_name(part)
        cleaned = _FOLDER_ALIASES.get(cleaned, cleaned)
        if cleaned and cleaned not in GENERIC_FOLDERS and cleaned not in words:
            words.append(cleaned)
    return words


def make_caption(relative: Path, tags: dict[str, str], kind: str | None) -> str | None:
    """Caption of one file: categories, title (tag or cleaned file name), artist, genre, comment; prefixed by kind.

    A chunk whose words all appeared already is dropped (``footsteps/footsteps_1.wav`` -> ``"footsteps"``).
    """
    title = tags.get("title", "")
    if not title or " " not in title:  # no title tag, or an identifier like "WoodCrack01a"
        title = clean_name(title or relative.name)
    chunks: list[str] = []
    if kind == "music":  # a track: its title first, then where it sits
        chunks += [title, *categories(relative)]
    else:
        chunks += [*categories(relative), title]
    if tags.get("artist"):
        chunks.append(f"by {tags['artist']}")
    for key in ("genre", "comment", "description"):
        value = tags.get(key, "")
        if value and len(value) <= 120 and "http" not in value.lower():
            chunks.append(value)
    seen: set[str] = set()
    kept = []
    for chunk in chunks:
        words = {w.lower() for w in chunk.split()}
        if words and not words <= seen:
            kept.append(chunk)
            seen |= words
    body = ", ".join(kept)
    prefix = _PREFIX.get(kind or "")
    if prefix:
        return f"{prefix}: {body}" if body else prefix
    return body or None


def find_license(src: Path) -> Path | None:
    """The one ``usr/share/doc/PKG/copyright`` under ``src`` (a ``dpkg -x`` tree), if there is exactly one."""
    found = sorted(src.glob("usr/share/doc/*/copyright")) + sorted(src.glob("doc/*/copyright"))
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class _Job:
    source: Path
    relative: Path
    target: Path | None  # where the copy goes (None: use the file in place)
    convert: bool


def _process(job: _Job, kind: str | None, convert_rate: int | None, mono: bool, fmt: str,
             base_info: dict[str, Any]) -> tuple[AudioMeta | None, str]:
    """Probe (and copy/convert) one file; ``(meta, status)`` with status in rendered/skipped/failed."""
    from ..audio import audio_info, audio_read, audio_write, convert_audio

    target = job.target
    sidecar = target.with_suffix(".json") if target is not None else None
    status = "skipped"
    try:
        if target is not None and sidecar is not None and not (target.is_file() and sidecar.is_file()):
            target.parent.mkdir(parents=True, exist_ok=True)
            if job.convert:
                wav, rate = audio_read(job.source)
                channels = 1 if mono else wav.shape[0]
                wav = convert_audio(wav, rate, convert_rate or rate, channels)
                audio_write(target, wav, convert_rate or rate, format=fmt, normalize=False,
                            peak_clip_headroom_db=0.0, log_clipping=False, add_suffix=False)
            else:
                shutil.copy2(job.source, target)
            status = "rendered"
        info = audio_info(target if target is not None else job.source)
    except (WavecraftError, OSError) as e:
        logger.debug("skipping %s: %s", job.source, e)
        return None, "failed"
    tags = read_tags(job.source)
    description = make_caption(job.relative, tags, kind)
    extra: dict[str, Any] = {**base_info, "source_file": str(job.relative)}
    cats = categories(job.relative)
    if cats:
        extra["category"] = cats[-1]
        extra["categories"] = cats
    if tags:
        extra["tags"] = tags
    if kind:
        extra["kind"] = kind
    path = target if target is not None else job.source
    if sidecar is not None and status == "rendered":
        _corpus.write_sidecar(sidecar, {"description": description, **extra})
    meta = AudioMeta(str(path), float(info.duration), int(info.sample_rate), int(info.channels), description, extra)
    return meta, status


def import_folder(
    src: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    kind: str | None = None,
    copy: bool = False,
    convert_rate: int | None = None,
    mono: bool = False,
    license: str | os.PathLike | None = None,
    exts: Sequence[str] = AUDIO_EXTENSIONS,
    min_duration: float = 0.0,
    format: str = "wav",
    workers: int = 4,
) -> ImportReport:
    """Build a captioned manifest of every audio file under ``src`` (see the module docstring).

    The manifest goes to ``manifest`` (default ``OUTPUT_DIR/manifest.jsonl``; one of the two is required).
    ``copy`` copies files into ``output_dir``; ``convert_rate`` and/or ``mono`` convert them to ``format``
    (wav or flac) instead. Copies already there (file + sidecar) are reused. ``license`` is a licence file to
    record (and copy along); without it a single ``usr/share/doc/PKG/copyright`` inside ``src`` is used.
    Problems a user can cause raise :class:`WavecraftError`.
    """
    source = Path(src)
    if not source.is_dir():
        raise WavecraftError(f"not a folder: {src}")
    if kind is not None and kind not in KINDS:
        raise WavecraftError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    fmt = _corpus.check_format(format)
    if convert_rate is not None and not 8000 <= convert_rate <= 192000:
        raise WavecraftError(f"convert rate must be in 8000..192000 Hz, got {convert_rate}")
    if workers < 1:
        raise WavecraftError(f"workers must be >= 1, got {workers}")
    convert = convert_rate is not None or mono
    copying = copy or convert
    if copying and output_dir is None:
        raise WavecraftError("--copy, --convert-rate and --mono need an output folder (--output-dir)")
    if manifest is None and output_dir is None:
        raise WavecraftError("give a manifest file (-o/--manifest) or an output folder (--output-dir)")
    out = Path(output_dir) if output_dir is not None else None
    manifest_path = Path(manifest) if manifest is not None else Path(output_dir or ".") / "manifest.jsonl"
    license_path = Path(license) if license is not None else find_license(source)
    if license_path is not None and not license_path.is_file():
        raise WavecraftError(f"licence file not found: {license}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    root = source.resolve()
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in wanted and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if out is not None and out.resolve().is_relative_to(root):  # never re-import our own copies
        files = [p for p in files if not p.is_relative_to(out.resolve())]
    if not files:
        raise WavecraftError(f"no audio files under {src}")

    base_info: dict[str, Any] = {"source_root": str(root)}
    if license_path is not None:
        recorded = license_path.resolve()
        if out is not None and copying:
            package = license_path.parent.name if license_path.name == "copyright" else license_path.stem
            recorded = out / f"{package}.copyright"
            if not recorded.exists():
                shutil.copyfile(license_path, recorded)
            recorded = recorded.resolve()
        base_info["license_file"] = str(recorded)

    jobs, taken = [], set()
    for path in files:
        relative = path.relative_to(root)
        target = None
        if copying and out is not None:
            target = out / (relative.with_suffix(f".{fmt}") if convert else relative)
            if target in taken:  # song.ogg and song.wav both converted: keep the second as song_wav.wav
                target = target.with_name(f"{relative.stem}_{relative.suffix.lstrip('.').lower()}{target.suffix}")
            taken.add(target)
        jobs.append(_Job(path, relative, target, convert))

    def work(job: _Job) -> tuple[AudioMeta | None, str]:
        return _process(job, kind, convert_rate, mono, fmt, base_info)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(work, jobs))
    else:
        results = [work(job) for job in jobs]

    report = ImportReport(source)
    metas = []
    for job, (meta, status) in zip(jobs, results, strict=True):
        if meta is None:
            report.unreadable.append(str(job.relative))
            continue
        if copying:
            report.copied += status == "rendered"
            report.reused += status == "skipped"
        if meta.duration <= 0 or meta.duration < min_duration:
            continue
        metas.append(meta)
    if report.unreadable:
        shown = ", ".join(report.unreadable[:5]) + (", ..." if len(report.unreadable) > 5 else "")
        logger.warning("skipped %d unreadable audio file(s) under %s: %s", len(report.unreadable), src, shown)
    if not metas:
        raise WavecraftError(f"no readable audio files under {src}")
    write_manifest(manifest_path, metas, relative=copying)
    report.files = len(metas)
    report.captioned = sum(m.description is not None for m in metas)
    report.audio_seconds = sum(m.duration for m in metas)
    report.manifest = manifest_path
    return report
