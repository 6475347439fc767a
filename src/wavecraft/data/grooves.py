"""``wavecraft data render-grooves``: captioned multi-instrument accompaniment from MMA grooves.

Each item draws, deterministically from ``(seed, index)``: a style from a curated list of MMA standard-library
grooves (bossa nova, swing, rock, waltz, blues, tango, samba, polka, march...), one of the style's variations,
a key and mode, a chord progression and a tempo. It writes ``NAME.mma`` (kept as provenance), runs the ``mma``
executable (Musical MIDI Accompaniment, Debian package ``mma``, GPL-2+) to get a MIDI file with drums, bass and
chords, renders it with :class:`~.midi_render.MidiSynth` and writes ``NAME.wav`` + ``NAME.json`` with a caption
such as ``"a fast bossa nova groove in A minor, 128 bpm, with drums, bass and jazz guitar"``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import WavecraftError
from . import _corpus
from .captions import article, gm_name, join_words, key_name, note_name, tempo_word, uses_flats
from .midi_render import load_midi, shared_synth, soundfont_license

logger = logging.getLogger(__name__)

MMA_MISSING = "mma not found: install it with scripts/install_corpus_tools.sh (apt-get install mma)"


@dataclass(frozen=True)
class GrooveStyle:
    """An MMA standard-library style: its file (``stdlib/<file>.mma``), main groove, caption genre, tempo range."""

    file: str
    groove: str
    genre: str
    min_bpm: int
    max_bpm: int
    blues: bool = False  # use 12-bar blues progressions


#: Curated MMA styles with the genre words used in captions.
STYLES: tuple[GrooveStyle, ...] = (
    GrooveStyle("50srock", "50sRock", "50s rock and roll", 140, 180),
    GrooveStyle("60srock", "60sRock", "60s rock", 110, 140),
    GrooveStyle("8beat", "8Beat", "eight-beat pop", 90, 130),
    GrooveStyle("afro-cuban", "Afro-Cuban", "afro-cuban", 100, 130),
    GrooveStyle("ballad", "Ballad", "ballad", 60, 84),
    GrooveStyle("basicrock", "BasicRock", "rock", 100, 140),
    GrooveStyle("bebop", "Bebop", "bebop jazz", 150, 220),
    GrooveStyle("beguine", "Beguine", "beguine", 100, 130),
    GrooveStyle("bigband", "BigBand", "big band swing", 120, 180),
    GrooveStyle("bluegrass", "BlueGrass", "bluegrass", 140, 200),
    GrooveStyle("blues", "Blues", "blues", 80, 120, blues=True),
    GrooveStyle("boggiewoggie", "BoggieWoggie", "boogie-woogie", 130, 180, blues=True),
    GrooveStyle("bolero", "Bolero", "bolero", 90, 120),
    GrooveStyle("bossanova", "BossaNova", "bossa nova", 110, 140),
    GrooveStyle("calypso", "Calypso", "calypso", 100, 130),
    GrooveStyle("chacha", "ChaCha", "cha-cha", 110, 130),
    GrooveStyle("charleston", "Charleston", "charleston", 180, 220),
    GrooveStyle("countryblues", "CountryBlues", "country blues", 90, 130, blues=True),
    GrooveStyle("countryswing", "CountrySwing", "country swing", 120, 170),
    GrooveStyle("countrywaltz", "CountryWaltz", "country waltz", 90, 150),
    GrooveStyle("dixie", "Dixie", "dixieland jazz", 160, 200),
    GrooveStyle("fastblues", "FastBlues", "fast blues", 130, 170, blues=True),
    GrooveStyle("folk", "Folk", "folk", 90, 120),
    GrooveStyle("folkrock", "FolkRock", "folk rock", 100, 130),
    GrooveStyle("foxtrot", "Foxtrot", "foxtrot", 110, 140),
    GrooveStyle("gypsyjazz", "GypsyJazz", "gypsy jazz", 160, 220),
    GrooveStyle("hymn", "Hymn", "hymn", 60, 90),
    GrooveStyle("jazzrock", "JazzRock", "jazz rock", 100, 140),
    GrooveStyle("jazzwaltz", "JazzWaltz", "jazz waltz", 120, 180),
    GrooveStyle("jive", "Jive", "jive", 150, 180),
    GrooveStyle("lfusion", "LFusion", "latin fusion", 100, 130),
    GrooveStyle("mambo", "Mambo", "mambo", 170, 200),
    GrooveStyle("march", "March", "march", 110, 130),
    GrooveStyle("merengue", "Merengue", "merengue", 120, 160),
    GrooveStyle("polka", "Polka", "polka", 100, 130),
    GrooveStyle("popballad", "PopBallad", "pop ballad", 65, 90),
    GrooveStyle("ragtime", "RagTime", "ragtime", 80, 110),
    GrooveStyle("rb", "R&B", "rhythm and blues", 80, 110),
    GrooveStyle("rhumba", "Rhumba", "rumba", 100, 130),
    GrooveStyle("rockballad", "RockBallad", "rock ballad", 60, 85),
    GrooveStyle("salsa", "Salsa", "salsa", 160, 200),
    GrooveStyle("samba", "Samba", "samba", 90, 120),
    GrooveStyle("shuffleboggie", "ShuffleBoggie", "boogie shuffle", 110, 150, blues=True),
    GrooveStyle("ska", "Ska", "ska", 140, 180),
    GrooveStyle("slowblues", "SlowBlues", "slow blues", 55, 75, blues=True),
    GrooveStyle("softrock", "SoftRock", "soft rock", 80, 110),
    GrooveStyle("son", "Son", "cuban son", 90, 120),
    GrooveStyle("swing", "Swing", "swing", 110, 180),
    GrooveStyle("tango", "Tango", "tango", 110, 130),
    GrooveStyle("trance", "Trance", "trance", 125, 140),
    GrooveStyle("twist", "Twist", "twist", 140, 170),
    GrooveStyle("vienesewaltz", "VieneseWaltz", "Viennese waltz", 150, 180),
    GrooveStyle("waltz", "Waltz", "waltz", 90, 160),
    GrooveStyle("westernswing", "WesternSwing", "western swing", 120, 170),
    GrooveStyle("zydeco", "Zydeco", "zydeco", 110, 150),
)
_BY_NAME = {s.file: s for s in STYLES}

# Roman-numeral progressions, one chord per bar. Upper case: major, lower case: minor; b/# alter the degree.
PROGRESSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "major": (
        ("I", "V", "vi", "IV"), ("I", "vi", "IV", "V"), ("I", "IV", "V", "I"), ("I", "IV", "I", "V7"),
        ("ii7", "V7", "Imaj7", "Imaj7"), ("Imaj7", "vi7", "ii7", "V7"), ("vi", "IV", "I", "V"),
        ("I", "iii", "IV", "V"), ("I", "bVII", "IV", "I"), ("I", "V", "IV", "V"),
        ("I", "I", "IV", "IV", "V7", "V7", "I", "I"), ("I", "vi", "ii", "V7", "iii", "vi", "ii7", "V7"),
        ("Imaj7", "IV", "iii7", "vi7", "ii7", "V7", "I", "I"),
    ),
    "minor": (
        ("i", "iv", "V7", "i"), ("i", "bVI", "bIII", "bVII"), ("i", "bVII", "bVI", "V7"), ("i", "iv", "bVII", "bIII"),
        ("iiø", "V7", "i", "i"), ("i", "bVI", "iv", "V"), ("i", "i", "iv", "iv", "V7", "V7", "i", "i"),
        ("i7", "iv7", "i7", "V7"), ("i", "bVII", "bVI", "bVII"), ("i", "iv", "i", "V7", "bVI", "iv", "V7", "i"),
    ),
    "blues-major": (
        ("I7", "I7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"),
        ("I7", "IV7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"),
    ),
    "blues-minor": (
        ("i7", "i7", "i7", "i7", "iv7", "iv7", "i7", "i7", "bVI7", "V7", "i7", "V7"),
    ),
}
_DEGREES = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_ROMAN = re.compile(r"^([b#]?)(VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)(.*)$")


def chord_name(roman: str, tonic_pc: int, flats: bool) -> str:
    """MMA chord name of a roman numeral in a key: ``("V7", C)`` -> ``"G7"``, ``("iiø", A)`` -> ``"Bm7b5"``."""
    match = _ROMAN.match(roman)
    if match is None:
        raise ValueError(f"bad roman numeral {roman!r}")
    accidental, numeral, suffix = match.groups()
    root = (tonic_pc + _DEGREES[numeral.lower()] + {"b": -1, "#": 1, "": 0}[accidental]) % 12
    if suffix == "ø":
        quality = "m7b5"
    elif suffix == "o":
        quality = "dim"
    elif numeral.islower():
        quality = "m" + suffix
    else:
        quality = suffix
    return note_name(root, flats) + quality


def chord_progression(tonic_pc: int, mode: str, bars: int, rng: random.Random, blues: bool = False) -> list[str]:
    """``bars`` chord names (one per bar): a random progression of the mode, repeated to fill the bars."""
    family = f"blues-{mode}" if blues else mode
    progression = rng.choice(PROGRESSIONS[family])
    flats = uses_flats(tonic_pc, mode)
    return [chord_name(progression[i % len(progression)], tonic_pc, flats) for i in range(bars)]


def find_mma() -> str:
    """Path of the ``mma`` executable, or :class:`WavecraftError` saying how to install it."""
    path = shutil.which("mma")
    if path is None:
        raise WavecraftError(MMA_MISSING)
    return path


def mma_library(mma_path: str | None = None) -> Path | None:
    """MMA's ``lib`` folder (with ``stdlib/``), found next to the executable or in the usual places."""
    candidates = []
    if mma_path:
        prefix = Path(os.path.realpath(mma_path)).parent.parent
        candidates += [prefix / "share" / "mma" / "lib", prefix / "lib"]
    candidates += [Path("/usr/share/mma/lib"), Path("/usr/local/share/mma/lib")]
    return next((c for c in candidates if (c / "stdlib").is_dir()), None)


@cache
def groove_variations(style_file: str, library: str | None) -> tuple[tuple[str, ...], str | None]:
    """``(main grooves, ending)`` defined by a style: its ``DefGroove`` names without intros, fills and endings,
    and the ``<Main>End`` ending if there is one. Without the library: the curated main groove only."""
    style = _BY_NAME[style_file]
    path = Path(library) / "stdlib" / f"{style_file}.mma" if library else None
    if path is None or not path.is_file():
        return (style.groove,), None
    names = re.findall(r"^\s*DefGroove\s+(\S+)", path.read_text(encoding="latin-1"), flags=re.MULTILINE | re.I)
    main = tuple(n for n in names if not re.search(r"intro|end|fill|break|solo", n, re.I)) or (style.groove,)
    ending = next((n for n in names if n.lower() == f"{style.groove}end".lower()), None)
    return main, ending


def resolve_styles(styles: Sequence[str] | None) -> list[GrooveStyle]:
    """The curated styles named (stdlib file names, comma lists allowed); all of them when none is named."""
    if not styles:
        return list(STYLES)
    chosen: list[GrooveStyle] = []
    for item in styles:
        for name in (n.strip().lower() for n in str(item).split(",")):
            if not name:
                continue
            if name not in _BY_NAME:
                raise WavecraftError(f"unknown groove style {name!r}; known: {', '.join(sorted(_BY_NAME))}")
            if _BY_NAME[name] not in chosen:
                chosen.append(_BY_NAME[name])
    if not chosen:
        raise WavecraftError("no groove style given")
    return chosen


@dataclass(frozen=True)
class GroovePlan:
    """Everything one item's ``.mma`` file says."""

    style: GrooveStyle
    groove: str
    ending: str | None
    bpm: int
    tonic: int  # pitch class
    mode: str
    chords: tuple[str, ...]

    @property
    def key(self) -> str:
        """The key as caption text, e.g. ``"A minor"``."""
        return key_name(self.tonic, self.mode)


def plan_groove(index: int, seed: int, styles: Sequence[GrooveStyle], bars: int = 16,
                bpm_range: tuple[int, int] | None = None, library: str | None = None) -> GroovePlan:
    """The deterministic plan of item ``index``: style, variation, key, progression and tempo."""
    rng = random.Random(f"wavecraft-grooves:{seed}:{index}")
    style = rng.choice(list(styles))
    variations, ending = groove_variations(style.file, library)
    groove = rng.choice(variations)
    low, high = bpm_range or (style.min_bpm, style.max_bpm)
    bpm = rng.randint(low, high)
    tonic = rng.randrange(12)
    mode = "major" if style.blues and rng.random() < 0.7 else rng.choice(("major", "minor"))
    chords = chord_progression(tonic, mode, bars, rng, style.blues)
    return GroovePlan(style, groove, ending if bars >= 4 else None, bpm, tonic, mode, tuple(chords))


def mma_text(plan: GroovePlan, comment: str = "") -> str:
    """The ``.mma`` source of a plan: tempo, style, groove, one chord per bar (the last two bars as the ending)."""
    lines = [f"// Generated by wavecraft data render-grooves{': ' + comment if comment else ''}",
             f"// {plan.style.genre} in {plan.key}, {plan.bpm} bpm",
             f"Tempo {plan.bpm}",
             f"Use stdlib/{plan.style.file}",
             f"Groove {plan.groove}"]
    n = len(plan.chords)
    for bar, chord in enumerate(plan.chords, start=1):
        if plan.ending and bar == n - 1:
            lines.append(f"Groove {plan.ending}")
        lines.append(f"{bar} {chord}")
    return "\n".join(lines) + "\n"


def run_mma(source: str, mma_path: str | None = None, timeout: float = 60.0) -> bytes:
    """Compile ``.mma`` source text to MIDI bytes with the ``mma`` executable (in a temporary folder)."""
    exe = mma_path or find_mma()
    with tempfile.TemporaryDirectory(prefix="wavecraft-mma-") as tmp:
        src, out = Path(tmp) / "groove.mma", Path(tmp) / "groove.mid"
        src.write_text(source, encoding="utf-8")
        try:
            proc = subprocess.run([exe, str(src), "-f", str(out)], capture_output=True, text=True,
                                  timeout=timeout, cwd=tmp, check=False)
        except FileNotFoundError:
            raise WavecraftError(MMA_MISSING) from None
        except subprocess.TimeoutExpired:
            raise WavecraftError(f"mma took more than {timeout:.0f} s") from None
        if proc.returncode != 0 or not out.is_file():
            text = (proc.stdout + "\n" + proc.stderr).splitlines()
            error = next((ln.strip() for ln in text if ln.strip().startswith("Error")), None)
            error = error or next((ln.strip() for ln in reversed(text) if ln.strip()), f"exit code {proc.returncode}")
            raise WavecraftError(f"mma failed: {error}")
        return out.read_bytes()


def groove_instruments(midi: Any) -> list[str]:
    """Caption names of what plays in an MMA MIDI: drums first, then ``bass`` for bass tracks, then GM names."""
    names: list[str] = []
    if any(inst.is_drum and inst.notes for inst in midi.instruments):
        names.append("drums")
    for inst in midi.instruments:
        if inst.is_drum or not inst.notes:
            continue
        role = (inst.name or "").strip().lower()
        if role.startswith(("bass", "walk")) and 32 <= inst.program <= 39:
            names.append("bass")
        else:
            names.append(gm_name(inst.program))
    ordered = ["drums"] if "drums" in names else []
    ordered += ["bass"] if "bass" in names else []
    return list(dict.fromkeys(ordered + names))


def make_caption(plan: GroovePlan, instruments: Sequence[str], rng: random.Random) -> str:
    """One of two templates naming the genre, key, tempo word, bpm and instruments."""
    word, genre = tempo_word(plan.bpm), plan.style.genre
    players = join_words(instruments)
    if rng.random() < 0.5:
        lead = genre if word in genre.split() else f"{word} {genre}"  # no "a fast fast blues"
        return f"{article(lead)} {lead} groove in {plan.key}, {plan.bpm} bpm, with {players}"
    return f"{genre} accompaniment in {plan.key} at {plan.bpm} bpm ({word}): {players}"


@dataclass(frozen=True)
class GrooveTask:
    """One item, picklable for worker processes."""

    name: str
    index: int
    plan: GroovePlan
    output_dir: str
    sample_rate: int
    seed: int
    format: str
    soundfont: str | None
    max_duration: float | None
    mma: str


def render_groove_task(task: GrooveTask) -> _corpus.ItemResult:
    """Render one item (worker entry point)."""
    out = Path(task.output_dir)
    if _corpus.item_done(out, task.name, task.format):
        return _corpus.ItemResult(task.name, "skipped")
    begin = _corpus.cpu_time()
    plan = task.plan
    source = mma_text(plan, f"seed {task.seed}, item {task.index}")
    try:
        (out / f"{task.name}.mma").write_text(source, encoding="utf-8")
        midi = load_midi(run_mma(source, task.mma))
    except (WavecraftError, OSError) as e:
        return _corpus.ItemResult(task.name, "failed", cpu_seconds=_corpus.cpu_time() - begin, message=str(e))
    synth = shared_synth(task.soundfont, task.sample_rate)
    audio = synth.render(midi, max_duration=task.max_duration)
    if audio.size == 0 or float(abs(audio).max()) < 1e-4:
        return _corpus.ItemResult(task.name, "failed", message="rendered silence")
    rng = random.Random(f"wavecraft-grooves:{task.seed}:caption:{task.index}")
    instruments = groove_instruments(midi)
    caption = make_caption(plan, instruments, rng)
    sidecar: dict[str, Any] = {
        "description": caption,
        "genre": plan.style.genre,
        "style": plan.style.file,
        "groove": plan.groove,
        "instruments": instruments,
        "programs": sorted({int(i.program) for i in midi.instruments if not i.is_drum and i.notes}),
        "bpm": plan.bpm,
        "tempo": tempo_word(plan.bpm),
        "key": plan.key,
        "mode": plan.mode,
        "chords": list(plan.chords),
        "source": "MMA (Musical MIDI Accompaniment) standard library",
        "license": "MMA grooves: GPL-2+",
        "soundfont": synth.soundfont.name,
        "soundfont_license": soundfont_license(synth.soundfont),
        "generator": "wavecraft data render-grooves",
        "seed": task.seed,
        "index": task.index,
    }
    _corpus.write_item(out, task.name, audio, task.sample_rate, task.format, sidecar)
    return _corpus.ItemResult(task.name, "rendered", len(audio) / task.sample_rate, _corpus.cpu_time() - begin,
                              caption)


def _init_worker(soundfont: str | None, sample_rate: int) -> None:
    shared_synth(soundfont, sample_rate)


def render_grooves(
    output_dir: str | os.PathLike,
    count: int,
    sample_rate: int = 32000,
    seed: int = 0,
    styles: Sequence[str] | None = None,
    bars: int = 16,
    min_bpm: int | None = None,
    max_bpm: int | None = None,
    max_duration: float | None = None,
    soundfont: str | os.PathLike | None = None,
    format: str = "wav",
    workers: int = 1,
    manifest: str | os.PathLike | None = None,
    write_manifest: bool = True,
) -> _corpus.RenderReport:
    """Render ``count`` captioned MMA grooves into ``output_dir`` (see the module docstring).

    ``styles`` restricts the curated :data:`STYLES` (by file name); ``min_bpm``/``max_bpm`` replace every
    style's own tempo range. Items are ``groove_s{seed}_{index:06d}_{style}``; complete ones are skipped. The
    manifest of the folder is written at the end (default ``OUTPUT_DIR/manifest.jsonl``). Without the ``mma``
    executable this raises :class:`WavecraftError` (:data:`MMA_MISSING`) before doing anything.
    """
    fmt = _corpus.check_format(format)
    _corpus.check_common(count, sample_rate, max_duration, workers)
    if not 1 <= bars <= 512:
        raise WavecraftError(f"bars must be in 1..512, got {bars}")
    bpm_range = None
    if min_bpm is not None or max_bpm is not None:
        low, high = min_bpm or 20, max_bpm or 400
        if not 20 <= low <= high <= 400:
            raise WavecraftError(f"tempo range must satisfy 20 <= min <= max <= 400 bpm, got {low}..{high}")
        bpm_range = (low, high)
    chosen = resolve_styles(styles)
    sf = str(Path(soundfont).resolve()) if soundfont is not None else None
    if sf is not None and not Path(sf).is_file():
        raise WavecraftError(f"soundfont not found: {soundfont}")
    mma = find_mma()
    library = mma_library(mma)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    tasks = []
    for index in range(count):
        plan = plan_groove(index, seed, chosen, bars, bpm_range, str(library) if library else None)
        name = f"groove_s{seed}_{index:06d}_{plan.style.file}"
        tasks.append(GrooveTask(name, index, plan, str(out.resolve()), sample_rate, seed, fmt, sf, max_duration,
                                mma))
    return _corpus.render_all(render_groove_task, tasks, workers, out, begin, manifest, write_manifest, _init_worker,
                              (sf, sample_rate))
