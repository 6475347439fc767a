"""``wavecraft data render-scores``: captioned training audio synthesized from the music21 score corpus.

Works are drawn from the corpus that ships inside the ``music21`` wheel (through its metadata bundle, 15,112
works: Bach chorales, Essen folk songs, O'Neill / Ryan / Aird fiddle tunes, Palestrina, Josquin, Monteverdi,
trecento songs...). Each item picks a work deterministically from ``(seed, index)``, converts it to MIDI
(export errors skip to another work with a logged warning), randomizes the GM instruments per part, the tempo,
a transposition and the velocities, synthesizes mono audio (:class:`~.midi_render.MidiSynth`) and writes
``NAME.wav`` + a ``NAME.json`` sidecar whose ``description`` is built from what was rendered, e.g.
``"a slow chorale by J. S. Bach in D minor played by a string ensemble, 60 bpm"``.

Licences: music21's code is BSD-3; the corpus is "believed to be in the public domain", encodings used by
permission; the Essen folk songs are for non-commercial use only. Rendered audio is never committed.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import logging
import math
import os
import random
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WavecraftError
from ..fileio import atomic_output
from . import _corpus
from .captions import article, join_words, key_name, tempo_word
from .midi_render import (
    load_midi,
    retime,
    scale_velocities,
    set_programs,
    shared_synth,
    soundfont_license,
    transpose,
)

logger = logging.getLogger(__name__)

#: Collections (music21 corpus folders) used when none are named: every sizeable one with playable scores.
DEFAULT_COLLECTIONS = ("bach", "essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk",
                       "palestrina", "josquin", "monteverdi", "trecento")

#: Friendly names accepted by ``--sources`` besides the corpus folder names themselves.
SOURCE_ALIASES: dict[str, tuple[str, ...]] = {
    "chorales": ("bach",),
    "essen": ("essenFolksong",),
    "folk": ("essenFolksong", "miscFolk"),
    "oneill": ("oneills1850",),
    "ryan": ("ryansMammoth",),
    "aird": ("airdsAirs",),
    "fiddle": ("oneills1850", "ryansMammoth", "airdsAirs"),
    "renaissance": ("palestrina", "josquin", "monteverdi"),
    "medieval": ("trecento",),
    "classical": ("beethoven", "mozart", "haydn"),
}

_PLAYABLE = (".abc", ".mxl", ".xml", ".musicxml", ".krn")
_COMPOSERS = {"bach": "J. S. Bach", "palestrina": "Palestrina", "monteverdi": "Monteverdi",
              "josquin": "Josquin des Prez", "beethoven": "Beethoven", "mozart": "Mozart", "haydn": "Haydn"}
_TRADITIONAL = {"essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk", "nottingham-dataset"}
_ESSEN_ORIGINS = (("han", "Chinese folk song"), ("lux", "Luxembourgish folk song"), ("lot", "Lorraine folk song"),
                  ("irl", "Irish folk song"), ("kinder", "German children's song"), ("ballad", "German folk ballad"),
                  ("folkhaydn", "folk song"), ("test", "folk song"), ("variant", "folk song"))
_DANCES = ("slip jig", "hornpipe", "strathspey", "reel", "jig", "polka", "waltz", "march", "slide", "schottische",
           "quickstep", "mazurka", "air", "lament", "planxty", "clog", "set dance", "minuet")
_MASS_PARTS = ("kyrie", "gloria", "credo", "sanctus", "agnus", "benedictus", "hosanna", "christe", "et in terra",
               "patrem", "crucifixus", "et resurrexit", "qui tollis")


@dataclass(frozen=True)
class CorpusWork:
    """One playable work of the music21 corpus (a file, or one tune of a multi-tune ABC file)."""

    source_path: str  # relative to the corpus root, e.g. "bach/bwv66.6.mxl"
    number: int | None
    title: str
    composer: str | None
    collection: str  # the corpus folder, e.g. "essenFolksong"
    parts: int | None

    def label(self) -> str:
        """``"essenFolksong/han2.abc#670"`` for log messages and metadata."""
        return self.source_path + (f"#{self.number}" if self.number is not None else "")


@dataclass(frozen=True)
class Ensemble:
    """GM instruments for the parts of a work, highest part first.

    ``programs`` lists sections from high to low; the parts are spread over them (one entry: every part).
    ``name`` is the caption phrase (``"a string quartet"``), ``verb`` how it performs (``"played by"``).
    """

    name: str
    programs: tuple[int, ...]
    verb: str = "played by"

    def assign(self, parts: int) -> list[int]:
        """Programs for ``parts`` parts: sections picked evenly from top to bottom (repeated if too few)."""
        if parts == 1 or len(self.programs) == 1:
            return [self.programs[0]] * parts
        last = len(self.programs) - 1
        return [self.programs[round(i * last / (parts - 1))] for i in range(parts)]


# Single instruments for one-part tunes (and keyboards / sections that play every part of a score).
SOLO_PROGRAMS = (0, 4, 6, 8, 10, 11, 12, 16, 19, 21, 22, 24, 26, 40, 46, 48, 52, 56, 60, 64, 65, 68, 71, 73, 74,
                 75, 78, 79, 105, 109, 110)
_KEYBOARDS = (0, 4, 6, 16, 19, 20, 21, 24, 46, 11, 12)
_SECTIONS = (
    Ensemble("a string ensemble", (48,)),
    Ensemble("a choir", (52,), "sung by"),
    Ensemble("a recorder consort", (74,)),
    Ensemble("a brass section", (61,)),
    Ensemble("a string quartet", (40, 40, 41, 42)),
    Ensemble("a woodwind ensemble", (73, 68, 71, 60, 70)),
    Ensemble("a brass ensemble", (56, 56, 60, 57, 58)),
    Ensemble("a saxophone quartet", (64, 65, 66, 67)),
)
_GROUP_SOUNDS = {48: "string ensemble", 52: "choir"}
# Melodic instruments for mixed line-ups, with a register rank (low = high-pitched) to order them by part.
_MIXED = {73: 0, 72: 0, 68: 1, 40: 1, 71: 2, 56: 2, 65: 3, 41: 3, 60: 4, 24: 4, 66: 5, 42: 6, 57: 6, 70: 7,
          58: 8, 43: 8, 74: 0, 22: 2, 21: 3}


@dataclass(frozen=True)
class Performance:
    """Who plays: the programs per part (highest first) and the caption phrases."""

    programs: tuple[int, ...]
    instruments: tuple[str, ...]  # caption names per part
    phrase: str  # "played by a string quartet (violin, viola and cello)"
    noun: str  # "string quartet (violin, viola and cello)", "solo piano", "flute, violin and cello"
    ensemble: str  # "string quartet", "piano", "mixed"


def choose_performance(parts: int, rng: random.Random) -> Performance:
    """A random line-up for a work with ``parts`` pitched parts (see the module docstring)."""
    from .captions import gm_name

    if parts <= 1:
        program = rng.choice(SOLO_PROGRAMS)
        name = gm_name(program)
        if program in _GROUP_SOUNDS:  # one GM "program" that is itself a group of players
            noun = _GROUP_SOUNDS[program]
            verb = "sung by" if program == 52 else "played by"
            return Performance((program,), (name,), f"{verb} {article(noun)} {noun}", noun, noun)
        return Performance((program,), (name,), f"played on {name}", f"solo {name}", name)
    kind = rng.choices(("keyboard", "section", "mixed"), weights=(0.4, 0.4, 0.2))[0]
    if kind == "keyboard":
        program = rng.choice(_KEYBOARDS)
        name = gm_name(program)
        return Performance((program,) * parts, (name,) * parts, f"played on {name}", name, name)
    if kind == "section":
        ensemble = rng.choice(_SECTIONS)
        programs = ensemble.assign(parts)
        names = tuple(gm_name(p) for p in programs)
        noun = ensemble.name.split(" ", 1)[1]
        if len(set(programs)) > 1:
            noun += f" ({join_words(names)})"
        return Performance(tuple(programs), names, f"{ensemble.verb} {article(noun)} {noun}", noun,
                           ensemble.name.split(" ", 1)[1])
    pool = list(_MIXED)
    chosen = rng.sample(pool, min(parts, len(pool)))
    chosen += [rng.choice(pool) for _ in range(parts - len(chosen))]
    programs = tuple(sorted(chosen, key=lambda p: _MIXED[p]))
    names = tuple(gm_name(p) for p in programs)
    return Performance(programs, names, f"played by {join_words(names)}", join_words(names), "mixed")


def _clean(text: str | None) -> str | None:
    text = (text or "").splitlines()[0].strip() if text else ""
    return text.rstrip(".,;: ") or None


def genre_of(work: CorpusWork, time_signature: str | None, parts: int) -> str:
    """Caption genre of a work from its collection, title and metre: "chorale", "Irish jig", "folk song"..."""
    coll, title = work.collection, (work.title or "").lower()
    file = Path(work.source_path).name.lower()
    if coll == "bach":
        return "chorale" if parts == 4 or "chorale" in work.source_path.lower() else "baroque piece"
    if coll == "essenFolksong":
        return next((genre for prefix, genre in _ESSEN_ORIGINS if file.startswith(prefix)), "German folk song")
    if coll in ("oneills1850", "ryansMammoth", "airdsAirs", "nottingham-dataset"):
        dance = next((d for d in _DANCES if re.search(rf"\b{d}s?\b", title)), None)
        if dance is None:
            dance = {"6/8": "jig", "9/8": "slip jig", "12/8": "slide"}.get(time_signature or "", "tune")
        if dance == "air":
            return "Scottish air" if coll == "airdsAirs" else "fiddle air"
        prefix = "Irish " if coll == "oneills1850" else ""
        return f"{prefix}fiddle {dance}" if dance in ("tune", "reel", "jig", "slip jig") else f"{prefix}{dance}"
    if coll == "miscFolk":
        if "fife" in file:
            return "American fife tune"
        if "northumbrian" in file:
            return "Northumbrian folk tune"
        return "folk tune"
    if coll in ("palestrina", "josquin"):
        if any(title.startswith(p) or f" {p}" in title for p in _MASS_PARTS):
            return "renaissance mass movement"
        return "renaissance motet"
    if coll == "monteverdi":
        return "renaissance madrigal"
    if coll == "trecento":
        return "medieval Italian song"
    if coll in ("beethoven", "mozart", "haydn"):
        return "classical string quartet movement"
    return "piece"


def composer_of(work: CorpusWork) -> str | None:
    """Composer for the caption; ``None`` for traditional tunes and unknown or anonymous composers."""
    if work.collection in _TRADITIONAL:
        return None
    if work.collection in _COMPOSERS:
        return _COMPOSERS[work.collection]
    name = _clean(work.composer)
    return None if name is None or "anon" in name.lower() else name


def license_note(work: CorpusWork) -> str:
    """Licence of the encoded work (music21's code is BSD-3)."""
    if work.collection == "essenFolksong":
        return ("music21 corpus, Essen folk song collection: permission for non-commercial distribution and use "
                "only")
    return "music21 corpus: composition believed public domain, encoding used by permission"


def resolve_sources(sources: Iterable[str] | None, available: Iterable[str]) -> list[str]:
    """Corpus folders named by ``sources`` (folder names or :data:`SOURCE_ALIASES`, comma lists allowed)."""
    available = set(available)
    if not sources:
        return [c for c in DEFAULT_COLLECTIONS if c in available]
    lower = {c.lower(): c for c in available}
    chosen: list[str] = []
    for item in sources:
        for name in (n.strip() for n in str(item).split(",")):
            if not name:
                continue
            folders = SOURCE_ALIASES.get(name.lower()) or ((lower[name.lower()],) if name.lower() in lower else ())
            if not folders:
                known = sorted(set(SOURCE_ALIASES) | available, key=str.lower)
                raise WavecraftError(f"unknown score source {name!r}; known: {', '.join(known)}")
            chosen += [f for f in folders if f in available and f not in chosen]
    return chosen


def _import_music21() -> Any:
    try:
        import music21
    except ImportError:
        raise WavecraftError("music21 is not installed: pip install 'wavecraft[data]' (or pip install music21)") \
            from None
    return music21


def _cache_file() -> Path | None:
    """``~/.cache/wavecraft/music21-<version>-works.json`` (``$XDG_CACHE_HOME`` honoured); None without music21."""
    try:
        version = importlib.metadata.version("music21")
    except importlib.metadata.PackageNotFoundError:
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wavecraft" / f"music21-{version}-works.json"


@functools.cache
def _corpus_entries() -> tuple[tuple[CorpusWork, int | None], ...]:
    """Every playable work of the music21 corpus with its note count, read once per process.

    Unpickling music21's metadata bundle takes seconds, so the list is also cached as JSON in the user's cache
    folder, keyed by the music21 version (any problem with the cache just means reading the bundle again).
    """
    cache = _cache_file()
    if cache is not None and cache.is_file():
        try:
            rows = json.loads(cache.read_text(encoding="utf-8"))
            return tuple((CorpusWork(*row[:6]), row[6]) for row in rows)
        except (OSError, ValueError, TypeError) as e:
            logger.debug("ignoring corpus cache %s: %s", cache, e)
    entries = _read_bundle()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(cache) as tmp:
                rows = [[*dataclasses.astuple(work), notes] for work, notes in entries]
                tmp.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        except OSError as e:
            logger.debug("cannot write corpus cache %s: %s", cache, e)
    return entries


def _read_bundle() -> tuple[tuple[CorpusWork, int | None], ...]:
    _import_music21()
    from music21 import common, metadata

    # Read the core bundle directly: music21's own loader also stats every file through a slow path lookup
    # (seconds); here each distinct file is checked once.
    bundle = metadata.bundles.MetadataBundle("core")
    bundle.read()
    root = Path(common.getCorpusFilePath())
    exists: dict[str, bool] = {}
    entries = []
    for entry in bundle._metadataEntries.values():
        path, md = str(entry.sourcePath), entry.metadata
        if Path(path).suffix.lower() not in _PLAYABLE or md is None:
            continue
        if path not in exists:
            exists[path] = (root / path).is_file()
        if not exists[path]:
            continue
        parts = md.numberOfParts if isinstance(md.numberOfParts, int) else None
        notes = md.noteCount if isinstance(md.noteCount, int) else None
        number = int(entry.number) if entry.number is not None and str(entry.number).isdigit() else None
        work = CorpusWork(path, number, _clean(md.title) or "", _clean(md.composer), path.split("/")[0], parts)
        entries.append((work, notes))
    return tuple(entries)


def corpus_works(sources: Iterable[str] | None = None, max_parts: int | None = None, query: str | None = None,
                 min_notes: int = 16) -> dict[str, list[CorpusWork]]:
    """Playable works of the music21 corpus, by collection, each list in a fixed (sorted) order.

    ``sources`` picks collections (see :func:`resolve_sources`); ``max_parts`` drops works with more parts;
    ``query`` keeps works whose title, composer or path contains it (case-insensitive); works with fewer than
    ``min_notes`` notes are dropped. Raises :class:`WavecraftError` if nothing is left.
    """
    entries = _corpus_entries()
    chosen = resolve_sources(sources, {work.collection for work, _ in entries})
    wanted = set(chosen)
    needle = query.lower() if query else None
    works: dict[str, list[CorpusWork]] = {c: [] for c in chosen}
    for work, notes in entries:
        if work.collection not in wanted:
            continue
        if max_parts is not None and work.parts is not None and work.parts > max_parts:
            continue
        if notes is not None and notes < min_notes:
            continue
        if needle and not any(needle in (s or "").lower() for s in (work.title, work.composer, work.source_path)):
            continue
        works[work.collection].append(work)
    works = {c: sorted(ws, key=lambda w: (w.source_path, w.number or 0)) for c, ws in works.items() if ws}
    if not works:
        raise WavecraftError("no music21 corpus work matches the given sources/filters")
    return works


def plan_works(works: dict[str, list[CorpusWork]], count: int, seed: int,
               candidates: int = 4) -> list[tuple[str, list[CorpusWork]]]:
    """``(collection, [work, fallbacks...])`` for items ``0..count-1``, deterministic given ``seed``.

    Collections are drawn with weights ∝ sqrt(size) (so small ones still show up); within a collection works
    are taken without repetition in a seeded shuffled order. The fallbacks replace a work that fails to export.
    Item ``i``'s plan does not depend on ``count``, so a larger run extends a smaller one.
    """
    names = sorted(works)
    weights = [math.sqrt(len(works[c])) for c in names]
    order = {c: random.Random(f"wavecraft-scores:{seed}:order:{c}").sample(works[c], len(works[c])) for c in names}
    used: Counter[str] = Counter()
    plans = []
    for index in range(count):
        rng = random.Random(f"wavecraft-scores:{seed}:pick:{index}")
        coll = rng.choices(names, weights=weights)[0]
        pool = order[coll]
        first = pool[used[coll] % len(pool)]
        used[coll] += 1
        plans.append((coll, [first] + [rng.choice(pool) for _ in range(candidates - 1)]))
    return plans


@dataclass(frozen=True)
class ScoreOptions:
    """Per-run settings the workers need (picklable)."""

    output_dir: str
    sample_rate: int
    seed: int
    format: str
    soundfont: str | None
    max_duration: float | None
    min_bpm: int
    max_bpm: int
    max_transpose: int


@dataclass(frozen=True)
class ScoreTask:
    """One item: its name, index and candidate works."""

    name: str
    index: int
    works: tuple[CorpusWork, ...]
    options: ScoreOptions


def _score_to_midi(work: CorpusWork) -> tuple[bytes, int | None, str | None, str | None]:
    """Parse a work and export it: ``(midi bytes, key pitch class, mode, time signature)``."""
    music21 = _import_music21()
    from music21.midi.translate import streamToMidiFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if work.number is not None:
            score = music21.corpus.parse(work.source_path, number=work.number)
        else:
            score = music21.corpus.parse(work.source_path)
        try:
            key = score.analyze("key")
            pc, mode = int(key.tonic.pitchClass), str(key.mode)
        except Exception:  # analysis is best effort: the caption just leaves the key out
            pc, mode = None, None
        ts = score.recurse().getElementsByClass("TimeSignature").first()
        data = streamToMidiFile(score).writestr()
    return data, pc, mode if mode in ("major", "minor") else None, ts.ratioString if ts is not None else None


def make_caption(genre: str, composer: str | None, key: str | None, perf: Performance, bpm: int,
                 rng: random.Random) -> str:
    """One of two caption templates, both naming the genre, composer, key, instruments, tempo word and bpm."""
    by = f" by {composer}" if composer else ""
    in_key = f" in {key}" if key else ""
    word = tempo_word(bpm)
    if rng.random() < 0.5:
        return f"{article(word)} {word} {genre}{by}{in_key} {perf.phrase}, {bpm} bpm"
    return f"{perf.noun}: {article(genre)} {genre}{by}{in_key}, {word} tempo, {bpm} bpm"


def _render_one(task: ScoreTask, work: CorpusWork, attempt: int) -> tuple[float, str] | None:
    """Render ``work`` as item ``task``; ``None`` (with a warning) when it cannot be used."""
    opts = task.options
    try:
        data, pc, mode, time_sig = _score_to_midi(work)
        midi = load_midi(data)
    except Exception as e:  # music21 raises many kinds of errors on odd encodings: skip the work
        message = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        logger.warning("skipping music21 work %s (MIDI export failed: %s)", work.label(), message)
        return None
    rng = random.Random(f"wavecraft-scores:{opts.seed}:render:{task.index}:{attempt}")
    parts = len([inst for inst in midi.instruments if not inst.is_drum and inst.notes])
    if parts == 0:
        logger.warning("skipping music21 work %s (no notes)", work.label())
        return None
    perf = choose_performance(parts, rng)
    bpm = rng.randint(opts.min_bpm, opts.max_bpm)
    shift = rng.randint(-opts.max_transpose, opts.max_transpose)
    velocity = round(rng.uniform(0.55, 1.05), 3)
    retime(midi, bpm)
    transpose(midi, shift)
    scale_velocities(midi, velocity, jitter=6, rng=rng)
    set_programs(midi, perf.programs)
    synth = shared_synth(opts.soundfont, opts.sample_rate)
    audio = synth.render(midi, max_duration=opts.max_duration)
    if audio.size == 0 or float(abs(audio).max()) < 1e-4:
        logger.warning("skipping music21 work %s (rendered silence)", work.label())
        return None
    key = key_name(pc + shift, mode) if pc is not None and mode else None
    genre, composer = genre_of(work, time_sig, parts), composer_of(work)
    caption = make_caption(genre, composer, key, perf, bpm, rng)
    sidecar: dict[str, Any] = {
        "description": caption,
        "genre": genre,
        "instruments": list(perf.instruments),
        "programs": list(perf.programs),
        "ensemble": perf.ensemble,
        "bpm": bpm,
        "tempo": tempo_word(bpm),
        "key": key,
        "mode": mode,
        "transpose": shift,
        "velocity_scale": velocity,
        "time_signature": time_sig,
        "parts": parts,
        "work": work.title or None,
        "composer": composer,
        "collection": work.collection,
        "corpus_path": work.source_path,
        "corpus_number": work.number,
        "source": "music21 corpus",
        "license": license_note(work),
        "soundfont": synth.soundfont.name,
        "soundfont_license": soundfont_license(synth.soundfont),
        "generator": "wavecraft data render-scores",
        "seed": opts.seed,
        "index": task.index,
    }
    _corpus.write_item(Path(opts.output_dir), task.name, audio, opts.sample_rate, opts.format, sidecar)
    return len(audio) / opts.sample_rate, caption


def render_score_task(task: ScoreTask) -> _corpus.ItemResult:
    """Render one item (worker entry point): its first usable candidate work, or ``failed``."""
    opts = task.options
    if _corpus.item_done(Path(opts.output_dir), task.name, opts.format):
        return _corpus.ItemResult(task.name, "skipped")
    begin = _corpus.cpu_time()
    for attempt, work in enumerate(task.works):
        done = _render_one(task, work, attempt)
        if done is not None:
            return _corpus.ItemResult(task.name, "rendered", done[0], _corpus.cpu_time() - begin, done[1])
    return _corpus.ItemResult(task.name, "failed", cpu_seconds=_corpus.cpu_time() - begin,
                              message=f"no usable work among {', '.join(w.label() for w in task.works)}")


def _init_worker(soundfont: str | None, sample_rate: int) -> None:
    shared_synth(soundfont, sample_rate)  # load the soundfont once per process, and fail early if it is unusable


def render_scores(
    output_dir: str | os.PathLike,
    count: int,
    sample_rate: int = 32000,
    seed: int = 0,
    sources: Sequence[str] | None = None,
    max_parts: int | None = None,
    query: str | None = None,
    min_bpm: int = 60,
    max_bpm: int = 160,
    max_transpose: int = 5,
    max_duration: float | None = None,
    soundfont: str | os.PathLike | None = None,
    format: str = "wav",
    workers: int = 1,
    manifest: str | os.PathLike | None = None,
    write_manifest: bool = True,
) -> _corpus.RenderReport:
    """Render ``count`` captioned items from the music21 corpus into ``output_dir`` (see the module docstring).

    Items are named ``score_s{seed}_{index:06d}_{collection}``; those already complete are skipped, so an
    interrupted run resumes and a larger ``count`` extends a smaller run. ``workers > 1`` renders in that many
    processes. At the end a manifest of the whole folder is written (default ``OUTPUT_DIR/manifest.jsonl``,
    relative paths) unless ``write_manifest`` is false. Bad arguments raise :class:`WavecraftError`.
    """
    fmt = _corpus.check_format(format)
    _corpus.check_common(count, sample_rate, max_duration, workers)
    if not 20 <= min_bpm <= max_bpm <= 400:
        raise WavecraftError(f"tempo range must satisfy 20 <= min <= max <= 400 bpm, got {min_bpm}..{max_bpm}")
    if not 0 <= max_transpose <= 24:
        raise WavecraftError(f"max transposition must be in 0..24 semitones, got {max_transpose}")
    if max_parts is not None and max_parts < 1:
        raise WavecraftError(f"max parts must be >= 1, got {max_parts}")
    sf = str(Path(soundfont).resolve()) if soundfont is not None else None
    if sf is not None and not Path(sf).is_file():
        raise WavecraftError(f"soundfont not found: {soundfont}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    works = corpus_works(sources, max_parts=max_parts, query=query)
    options = ScoreOptions(str(out.resolve()), sample_rate, seed, fmt, sf, max_duration, min_bpm, max_bpm,
                           max_transpose)
    tasks = [ScoreTask(f"score_s{seed}_{index:06d}_{coll}", index, tuple(candidates), options)
             for index, (coll, candidates) in enumerate(plan_works(works, count, seed))]
    return _corpus.render_all(render_score_task, tasks, workers, out, begin, manifest, write_manifest, _init_worker,
                              (sf, sample_rate))
