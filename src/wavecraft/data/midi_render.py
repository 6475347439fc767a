"""MIDI -> mono audio with tinysoundfont, plus the edits the corpus builders make to a MIDI before rendering.

:class:`MidiSynth` loads a SoundFont once (by default ``TimGM6mb.sf2``, which ships inside the ``pretty_midi``
wheel) and renders :class:`pretty_midi.PrettyMIDI` objects note by note at exact sample offsets: events are sent
to the synthesizer directly and audio is pulled with ``generate_simple`` between them, so tinysoundfont's own
sequencer (and its double-speed pitfall when combined with ``generate``) is never involved.

The edit helpers (:func:`retime`, :func:`transpose`, :func:`scale_velocities`, :func:`set_programs`) change a
``PrettyMIDI`` in place. ``tinysoundfont`` must be installed with ``pip install --no-deps tinysoundfont==0.3.7``
(its ``pyaudio`` dependency does not build without portaudio headers and is only needed for live playback).
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import WavecraftError

if TYPE_CHECKING:
    import pretty_midi

DRUM_CHANNEL = 9
_INSTALL_TSF = "pip install --no-deps tinysoundfont==0.3.7"


def import_pretty_midi() -> Any:
    """The ``pretty_midi`` module, or a one-line :class:`WavecraftError` saying how to install it."""
    try:
        import pretty_midi
    except ImportError:
        raise WavecraftError("pretty_midi is not installed: pip install 'wavecraft[data]' "
                             "(or pip install pretty_midi)") from None
    return pretty_midi


def import_tinysoundfont() -> Any:
    """The ``tinysoundfont`` module, or a one-line :class:`WavecraftError` saying how to install it."""
    try:
        import tinysoundfont
    except ImportError:
        raise WavecraftError(f"tinysoundfont is not installed: {_INSTALL_TSF}") from None
    return tinysoundfont


def default_soundfont() -> Path:
    """``TimGM6mb.sf2`` (General MIDI, GPL-2, by Tim Brechbill) from inside the ``pretty_midi`` package."""
    path = Path(import_pretty_midi().__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise WavecraftError(f"no TimGM6mb.sf2 in the pretty_midi package ({path.parent}); pass a soundfont file")
    return path


def soundfont_license(path: Path) -> str:
    """A short licence note for the SoundFonts this project documents (others: ``"see the soundfont's licence"``)."""
    name = path.name.lower()
    if name.startswith("timgm6mb"):
        return "TimGM6mb.sf2: GPL-2 (Tim Brechbill)"
    if name.startswith("fluidr3"):
        return "FluidR3_GM: MIT (Frank Wen)"
    if name.startswith("musescore_general"):
        return "MuseScore_General: MIT"
    return f"{path.name}: see the soundfont's licence"


def load_midi(data: bytes | str | os.PathLike) -> pretty_midi.PrettyMIDI:
    """Parse MIDI bytes or a ``.mid`` file; a corrupt file raises :class:`WavecraftError`."""
    pm = import_pretty_midi()
    try:
        source: Any = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        return pm.PrettyMIDI(source)
    except Exception as e:  # pretty_midi/mido raise many types (ValueError, OSError, EOFError, KeyError...)
        raise WavecraftError(f"cannot parse MIDI: {type(e).__name__}: {e}".splitlines()[0]) from None


def retime(midi: pretty_midi.PrettyMIDI, bpm: float) -> None:
    """Play ``midi`` at a constant ``bpm`` (quarter notes per minute), whatever tempo map it had.

    Every time is mapped to its position in quarter notes under the old tempo map, then back to seconds at
    ``bpm``; the tempo map becomes that single tempo.
    """
    if not bpm > 0:
        raise ValueError(f"bpm must be positive, got {bpm}")
    change_times, tempi = midi.get_tempo_changes()
    # Breakpoints (seconds, quarters) of the old tempo map; the last segment extends linearly past the end.
    quarters = [0.0]
    for i in range(1, len(change_times)):
        quarters.append(quarters[-1] + (change_times[i] - change_times[i - 1]) * tempi[i - 1] / 60.0)
    horizon = max(end_time(midi), float(change_times[-1])) + 1.0
    xs = np.append(change_times, change_times[-1] + horizon)
    ys = np.append(quarters, quarters[-1] + horizon * tempi[-1] / 60.0)
    seconds_per_quarter = 60.0 / bpm

    def at(t: float) -> float:
        return float(np.interp(t, xs, ys)) * seconds_per_quarter

    for inst in midi.instruments:
        for note in inst.notes:
            start, end = at(note.start), at(note.end)
            note.start, note.end = start, max(end, start + 1e-3)
        for event in (*inst.control_changes, *inst.pitch_bends):
            event.time = at(event.time)
    for sig in (*midi.time_signature_changes, *midi.key_signature_changes, *midi.lyrics, *midi.text_events):
        sig.time = at(sig.time)
    midi._tick_scales = [(0, seconds_per_quarter / midi.resolution)]
    midi._update_tick_to_time(int(np.ceil(end_time(midi) / seconds_per_quarter * midi.resolution)) + 1)


def transpose(midi: pretty_midi.PrettyMIDI, semitones: int) -> None:
    """Shift every pitched note by ``semitones`` (drums untouched); notes pushed out of 0..127 are dropped."""
    if not semitones:
        return
    for inst in midi.instruments:
        if inst.is_drum:
            continue
        for note in inst.notes:
            note.pitch += semitones
        inst.notes = [n for n in inst.notes if 0 <= n.pitch <= 127]


def scale_velocities(midi: pretty_midi.PrettyMIDI, scale: float, jitter: int = 0,
                     rng: random.Random | None = None) -> None:
    """Multiply note velocities by ``scale`` and add a uniform ``±jitter`` (humanizing), clipped to 1..127."""
    rng = rng or random.Random(0)
    for inst in midi.instruments:
        for note in inst.notes:
            value = note.velocity * scale + (rng.randint(-jitter, jitter) if jitter else 0)
            note.velocity = int(min(127, max(1, round(value))))


def pitched_instruments_by_register(midi: pretty_midi.PrettyMIDI) -> list[Any]:
    """The non-drum instruments that have notes, highest mean pitch first (soprano ... bass)."""
    voiced = [inst for inst in midi.instruments if not inst.is_drum and inst.notes]
    return sorted(voiced, key=lambda inst: -float(np.mean([n.pitch for n in inst.notes])))


def set_programs(midi: pretty_midi.PrettyMIDI, programs: Sequence[int]) -> list[Any]:
    """Give the pitched parts, highest first, the GM ``programs`` in order; returns those parts in that order."""
    parts = pitched_instruments_by_register(midi)
    if len(programs) != len(parts):
        raise ValueError(f"{len(programs)} programs for {len(parts)} parts")
    for inst, program in zip(parts, programs, strict=True):
        inst.program = int(program)
    return parts


def end_time(midi: pretty_midi.PrettyMIDI) -> float:
    """Time of the last note-off (0 for a MIDI without notes)."""
    return max((n.end for inst in midi.instruments for n in inst.notes), default=0.0)


class MidiSynth:
    """A tinysoundfont synthesizer with one SoundFont loaded, rendering MIDI to mono float32 audio.

    ``soundfont`` is an ``.sf2``/``.sf3`` file (default :func:`default_soundfont`). One instance can render
    many MIDIs in turn: every render starts by silencing all voices and resetting all controllers.
    """

    def __init__(self, soundfont: str | os.PathLike | None = None, sample_rate: int = 32000,
                 gain_db: float = -6.0) -> None:
        tsf = import_tinysoundfont()
        self.soundfont = Path(soundfont) if soundfont is not None else default_soundfont()
        if not self.soundfont.is_file():
            raise WavecraftError(f"soundfont not found: {self.soundfont}")
        if sample_rate <= 0:
            raise WavecraftError(f"sample rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self._synth = tsf.Synth(gain=gain_db, samplerate=self.sample_rate)
        try:
            self._sfid = self._synth.sfload(str(self.soundfont))
        except Exception as e:  # tinysoundfont raises a bare Exception subclass for unreadable files
            raise WavecraftError(f"cannot load soundfont {self.soundfont}: {e}".splitlines()[0]) from None

    def _reset(self) -> None:
        synth = self._synth
        synth.sounds_off()
        for chan in range(16):
            synth.control_change(chan, 121, 0)  # reset all controllers (volume, pan, sustain, pitch wheel...)
            synth.control_change(chan, 7, 100)
            synth.control_change(chan, 10, 64)

    def _select(self, chan: int, program: int, is_drum: bool) -> None:
        try:
            self._synth.program_select(chan, self._sfid, 128 if is_drum else 0, program, is_drum)
        except RuntimeError:  # preset missing from this soundfont: fall back to the bank's first preset
            self._synth.program_select(chan, self._sfid, 128 if is_drum else 0, 0, is_drum)

    def _events(self, midi: pretty_midi.PrettyMIDI) -> list[tuple[float, int, int, int, int, int]]:
        """``(time, order, kind, channel, a, b)`` for every note, controller and pitch bend; channels assigned.

        ``order`` sorts simultaneous events: controllers first, then note-offs, then note-ons.
        """
        free = [c for c in range(16) if c != DRUM_CHANNEL]
        by_program: dict[int, int] = {}
        drums_selected, used = False, 0
        events: list[tuple[float, int, int, int, int, int]] = []
        for inst in midi.instruments:
            if inst.is_drum:
                chan = DRUM_CHANNEL
                if not drums_selected:
                    self._select(chan, inst.program, True)
                    drums_selected = True
            elif used < len(free):  # one channel per part, so each keeps its own volume/pan/pitch bend
                chan = free[used]
                used += 1
                self._select(chan, inst.program, False)
                by_program.setdefault(inst.program, chan)
            else:  # more than 15 pitched parts (rare): share a channel, of the same program if there is one
                chan = by_program.get(inst.program, free[used % len(free)])
                used += 1
            for cc in inst.control_changes:
                events.append((cc.time, 0, 0, chan, cc.number, cc.value))
            for pb in inst.pitch_bends:
                events.append((pb.time, 0, 1, chan, pb.pitch + 8192, 0))
            for note in inst.notes:
                events.append((note.start, 2, 3, chan, note.pitch, note.velocity))
                events.append((note.end, 1, 2, chan, note.pitch, 0))
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def render(self, midi: pretty_midi.PrettyMIDI, max_duration: float | None = None, tail: float = 1.0,
               fade: float = 0.25) -> np.ndarray:
        """Mono float32 audio of ``midi``: up to the last note-off plus ``tail`` seconds of release.

        With ``max_duration`` the audio is cut there, ending with a ``fade``-second fade-out when notes were
        still playing. Stereo output of the synthesizer is averaged to mono.
        """
        sr = self.sample_rate
        self._reset()
        events = self._events(midi)
        total = end_time(midi) + tail
        truncated = max_duration is not None and max_duration < total
        if max_duration is not None:
            total = min(total, max_duration)
        n_total = max(1, int(round(total * sr)))
        out = np.zeros((n_total, 2), dtype=np.float32)
        synth, pos = self._synth, 0
        for t, _, kind, chan, a, b in events:
            target = min(n_total, int(round(t * sr)))
            if target > pos:
                synth.generate_simple(target - pos, buffer=memoryview(out[pos:target]))
                pos = target
            if pos >= n_total:
                break
            if kind == 3:
                synth.noteon(chan, a, b)
            elif kind == 2:
                synth.noteoff(chan, a)
            elif kind == 0:
                synth.control_change(chan, a, b)
            else:
                synth.pitchbend(chan, a)
        if pos < n_total:
            synth.generate_simple(n_total - pos, buffer=memoryview(out[pos:]))
        mono = out.mean(axis=1)
        if truncated and fade > 0:
            n_fade = min(n_total, int(fade * sr))
            mono[n_total - n_fade:] *= np.linspace(1.0, 0.0, n_fade, dtype=np.float32)
        self._synth.sounds_off()
        return mono


_SHARED: dict[tuple[str | None, int], MidiSynth] = {}


def shared_synth(soundfont: str | os.PathLike | None, sample_rate: int) -> MidiSynth:
    """One :class:`MidiSynth` per (soundfont, rate) and process, so a SoundFont is loaded once per worker."""
    key = (str(soundfont) if soundfont is not None else None, int(sample_rate))
    if key not in _SHARED:
        _SHARED[key] = MidiSynth(soundfont, sample_rate)
    return _SHARED[key]
