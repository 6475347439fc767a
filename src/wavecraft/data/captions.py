"""Small helpers that turn what was rendered (instruments, tempo, key, genre) into caption text.

Shared by the score, groove and folder-import corpus builders so their captions use the same vocabulary:
tempo words (``slow`` / ``moderate`` / ``fast``), key names such as ``"F# minor"`` or ``"Bb major"``, GM
instrument names and English lists (``"drums, bass and guitar"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Tonic spellings per pitch class: the key signature with fewer accidentals (F# major / Eb minor kept as is).
_MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
# Major keys (as pitch classes) written with flats: F, Bb, Eb, Ab, Db.
_FLAT_MAJOR_PCS = frozenset({5, 10, 3, 8, 1})

#: Caption names of the 128 General MIDI programs (0-based), short and family-level where GM is too specific.
GM_NAMES: tuple[str, ...] = (
    "piano", "bright piano", "electric grand piano", "honky-tonk piano", "electric piano", "electric piano",
    "harpsichord", "clavinet",
    "celesta", "glockenspiel", "music box", "vibraphone", "marimba", "xylophone", "tubular bells", "dulcimer",
    "organ", "percussive organ", "rock organ", "church organ", "reed organ", "accordion", "harmonica", "bandoneon",
    "acoustic guitar", "acoustic guitar", "jazz guitar", "electric guitar", "muted electric guitar",
    "overdriven guitar", "distorted guitar", "electric guitar",
    "acoustic bass", "electric bass", "electric bass", "fretless bass", "slap bass", "slap bass", "synth bass",
    "synth bass",
    "violin", "viola", "cello", "double bass", "tremolo strings", "pizzicato strings", "harp", "timpani",
    "string ensemble", "string ensemble", "synth strings", "synth strings", "choir", "voices", "synth voice",
    "orchestra hits",
    "trumpet", "trombone", "tuba", "muted trumpet", "french horn", "brass section", "synth brass", "synth brass",
    "soprano saxophone", "alto saxophone", "tenor saxophone", "baritone saxophone", "oboe", "english horn",
    "bassoon", "clarinet",
    "piccolo", "flute", "recorder", "pan flute", "blown bottle", "shakuhachi", "whistle", "ocarina",
    "synth lead", "synth lead", "calliope", "synth lead", "synth lead", "synth voice", "synth lead", "synth lead",
    "synth pad", "synth pad", "synth pad", "synth pad", "synth pad", "synth pad", "synth pad", "synth pad",
    "synth effects", "synth effects", "synth effects", "synth effects", "synth effects", "synth effects",
    "synth effects", "synth effects",
    "sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shehnai",
    "bells", "agogo", "steel drums", "woodblock", "taiko drums", "toms", "synth drums", "reverse cymbal",
    "guitar fret noise", "breath noise", "seashore", "bird tweets", "telephone", "helicopter", "applause",
    "gunshot",
)
assert len(GM_NAMES) == 128


def gm_name(program: int, is_drum: bool = False) -> str:
    """Caption name of a General MIDI program (0-127); ``"drums"`` for a drum channel."""
    if is_drum:
        return "drums"
    if not 0 <= program < 128:
        raise ValueError(f"GM program must be in 0..127, got {program}")
    return GM_NAMES[program]


def tempo_word(bpm: float) -> str:
    """``"slow"`` below 80 bpm, ``"fast"`` from 125 bpm, ``"moderate"`` in between."""
    if bpm < 80:
        return "slow"
    if bpm >= 125:
        return "fast"
    return "moderate"


def key_name(pitch_class: int, mode: str) -> str:
    """``"F# minor"``, ``"Bb major"``...: the tonic spelled as in the simpler key signature, then the mode."""
    pc = pitch_class % 12
    tonic = (_MINOR_TONICS if mode == "minor" else _MAJOR_TONICS)[pc]
    return f"{tonic} {mode}"


def uses_flats(pitch_class: int, mode: str) -> bool:
    """Whether chords of this key are best spelled with flats (F, Bb, Eb... major and their relative minors)."""
    major_pc = (pitch_class + 3) % 12 if mode == "minor" else pitch_class % 12
    return major_pc in _FLAT_MAJOR_PCS


def note_name(pitch_class: int, flats: bool) -> str:
    """Name of a pitch class with sharps (``C#``) or flats (``Db``)."""
    return (_FLAT_NAMES if flats else _SHARP_NAMES)[pitch_class % 12]


def article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for the phrase (by its first letter; good enough for caption vocabulary)."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def join_words(words: Iterable[str]) -> str:
    """``["drums", "bass", "guitar"]`` -> ``"drums, bass and guitar"``; duplicates dropped, order kept."""
    unique = list(dict.fromkeys(w for w in words if w))
    if len(unique) <= 1:
        return "".join(unique)
    return ", ".join(unique[:-1]) + " and " + unique[-1]


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-zA-Z']+")


def clean_name(name: str) -> str:
    """A file or folder name as caption words: ``"DoorOpen_metal-03.ogg"`` -> ``"door open metal"``.

    Underscores, dashes, dots, digits and camelCase boundaries become spaces, and so do the single letters
    left over from take numbers (``fire01a``); the result is lower-case. A known audio/archive suffix is dropped
    first.
    """
    stem = re.sub(r"\.(wav|flac|ogg|oga|mp3|m4a|opus|aiff?|pk3|zip)$", "", name, flags=re.IGNORECASE)
    words = (w.strip("'").lower() for w in _NON_WORD.sub(" ", _CAMEL.sub(" ", stem)).split())
    return " ".join(w for w in words if len(w) > 1)
