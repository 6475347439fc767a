"""--melody reads and analyses only what the generation uses (issue 21, item 2: a 1 h melody for 1 s of output
peaked at 10.8 GB because the chroma was computed over the whole file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavecraft import MusicGen
from wavecraft.audio import convert_audio


def _tune(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    notes = 220 * 2 ** (np.floor(t * 2) % 12 / 12)  # a new semitone every half second
    return (0.3 * np.sin(2 * np.pi * np.cumsum(notes) / sr)).astype(np.float32)


def test_cropped_melody_gives_the_same_tokens() -> None:
    model = MusicGen.get_pretrained()
    model.set_generation_params(duration=8.0, use_sampling=False)  # two windows of the 6 s model
    sr = 44100
    melody = torch.from_numpy(_tune(40.0, sr))[None]
    assert model.melody_seconds() * sr < melody.shape[-1]  # the crop does cut something
    _, tokens = model.generate_with_chroma(["a flute melody"], [melody], sr, return_tokens=True)
    full = convert_audio(melody.float(), sr, model.sample_rate, 1)
    reference = model._generate_tokens(["a flute melody"], None, False, melodies=[full])
    assert torch.equal(tokens, reference)


# VmHWM: the peak of this process's own memory (ru_maxrss would carry the parent's over the exec).
_PEAK = ("import sys\n"
         "from wavecraft.cli import main\n"
         "code = main(['generate', 'a tune', '--melody', sys.argv[1], '--duration', '1', '--greedy', '--no-progress',"
         " '-o', sys.argv[2]])\n"
         "hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
         "print(code, int(hwm.split()[1]) // 1024)")


def test_melody_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    peaks = {}
    for minutes in (0.5, 10):
        path = tmp_path / f"melody{minutes}.wav"
        sf.write(path, _tune(minutes * 60, 32000), 32000, subtype="PCM_16")
        out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(tmp_path / "o.wav")], capture_output=True,
                             text=True, timeout=300)
        code, peak_mb = out.stdout.split()[-2:]
        assert code == "0", out.stderr[-2000:]
        peaks[minutes] = int(peak_mb)
    # Before: 10 minutes of melody peaked 2.2 GB; now within noise of 30 s.
    assert peaks[10] - peaks[0.5] < 100, peaks
