"""Hostile-input probe: runs bad inputs and faults through the CLI and the Python API and sorts the outcomes.

Each case runs in its own child process, watched for peak memory (VmHWM), a time limit and leftover temporary
files. Outcomes:

- ``ok``: exit 0 where success is expected (e.g. compressing a 30.01 s file);
- ``clean``: a failure reported on exactly one line (``wavecraft: error: ...``, or argparse's usage error);
- ``noisy``: a one-line error, but other lines too (library chatter, warnings);
- ``traceback``: a Python traceback; ``signal``: killed by a signal (SIGBUS, ...); ``hang``: past the time limit;
- ``memory``: past the memory budget (killed); ``accepted``: exit 0 where an error is expected;
- ``unclear``: a one-line error that does not say what happened (e.g. libsndfile's "System error." for a full
  disk);
- ``lost``: an input file was changed or a temporary file was left behind.

Run against another checkout (e.g. the commit before a fix) with ``--src OTHER/src``; ``--json`` saves the table
for comparison, ``--long`` adds the long-file memory cases (10 min and 1 h compress / decompress).

    python benchmarks/reliability_probe.py [--src DIR] [--json out.json] [--long] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

MEMORY_BUDGET_MB = 4000
GOOD = {"ok", "clean"}


@dataclass
class Case:
    name: str
    argv: list[str]  # after ``python -m wavecraft.cli`` or ``python -c``
    expect: str = "error"  # "error" | "ok"
    timeout: float = 120.0
    api: bool = False  # argv[0] is Python code run under the API wrapper
    term_after: float | None = None  # send SIGTERM after this many seconds (or once ``term_when`` exists)
    term_when: str | None = None  # glob (in the work folder) that must match before SIGTERM is sent
    fsize: int | None = None  # RLIMIT_FSIZE in bytes (a full disk without a tmpfs)
    unchanged: list[str] = field(default_factory=list)  # files that must be byte-identical afterwards
    check: str | None = None  # Python expression on ``work`` (a Path) that must be true afterwards
    message: str | None = None  # a failure's line must contain this (else ``unclear``)
    setup: str | Callable[[Path], None] | None = None  # shell command (in the work folder) or function of it


# Runs API snippets like the CLI runs commands: a WavecraftError becomes one line, anything else a traceback.
API_WRAPPER = """
import sys
from wavecraft.errors import WavecraftError
try:
    exec(compile(sys.argv[1], "<case>", "exec"))
except WavecraftError as e:
    print(f"wavecraft: error: {e}", file=sys.stderr)
    sys.exit(1)
"""


def _wav(path: Path, seconds: float, sr: int = 32000, channels: int = 1, samples: int | None = None,
         subtype: str = "PCM_16") -> None:
    n = samples if samples is not None else int(seconds * sr)
    t = np.arange(n) / sr
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    data = np.stack([mono] * channels, axis=1).astype(np.float32)
    sf.write(path, data, sr, subtype=subtype)


def _long_wav(path: Path, seconds: float, sr: int, channels: int) -> None:
    block = sr * 10
    t = np.arange(block) / sr
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with sf.SoundFile(path, "w", sr, channels, "PCM_16") as f:
        for _ in range(math.ceil(seconds / 10)):
            f.write(np.stack([tone] * channels, axis=1))


def _fixtures(work: Path, shipped: Path) -> None:
    _wav(work / "t.wav", 1.0)
    _wav(work / "t30.wav", 30.01)
    _wav(work / "one.wav", 0, samples=1)
    _wav(work / "ten_ms.wav", 0.01)
    _wav(work / "s2048.wav", 0, samples=2048)
    _wav(work / "almost.wav", 0, samples=32000 - 100)  # a continuation prompt within a frame of 1 s
    _wav(work / "exact.wav", 1.0)
    _wav(work / "longer.wav", 1.5)
    _wav(work / "t10.wav", 10.0)
    _wav(work / "t60.wav", 60.0)
    _wav(work / "t300.wav", 300.0)
    data = np.zeros((3200, 1), np.float32)
    data[100] = np.nan
    sf.write(work / "nan.wav", data, 32000, subtype="FLOAT")
    (work / "empty.wav").write_bytes(b"")
    (work / "prompts.txt").write_text("calm piano\n")
    # a corrupt mp3: a valid one with its middle overwritten
    import torch

    from wavecraft.audio.io import audio_write

    audio_write(work / "good", torch.zeros(1, 32000).uniform_(-0.2, 0.2), 32000, format="mp3")
    raw = bytearray((work / "good.mp3").read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 2000] = bytes(range(256)) * 7 + bytes(208)
    (work / "corrupt.mp3").write_bytes(bytes(raw))
    (work / "a_dir").mkdir()
    (work / "dir.wav").mkdir()
    (work / "a_file").write_text("x")
    # checkpoint folders with one field of the shipped model's config made absurd
    config = json.loads((shipped / "config.json").read_text())
    edits = {
        "codec_nq_1e6": ("codec", "n_q", 10**6), "codec_bins_1e9": ("codec", "bins", 10**9),
        "codec_dim_1e9": ("codec", "dimension", 10**9), "codec_nfft_1e9": ("codec", "oscillator_n_fft", 10**9),
        "codec_sr_0": ("codec", "sample_rate", 0), "lm_layers_1e6": ("lm", "num_layers", 10**6),
        "lm_heads_0": ("lm", "num_heads", 0), "lm_dim_1e9": ("lm", "dim", 10**9),
        "chroma_frames_1e9": ("self_wav", "frames", 10**9), "max_duration_0": (None, "max_duration", 0),
        "format_version_99": (None, "format_version", 99), "sample_rate_0": (None, "sample_rate", 0),
        "delays_1e9": ("lm", "delays", [0, 1, 2, 10**9]),
    }
    for name, (section, key, value) in edits.items():
        folder = work / "cfg" / name
        folder.mkdir(parents=True)
        os.link(shipped / "model.safetensors", folder / "model.safetensors")
        edited = json.loads(json.dumps(config))
        target = edited["conditioners"]["self_wav"] if section == "self_wav" else (
            edited[section] if section else edited)
        target[key] = value
        (folder / "config.json").write_text(json.dumps(edited))
    # weights: NaN, integer, truncated
    from safetensors.torch import load_file, save_file

    weights = load_file(shipped / "model.safetensors")
    for name, change in {"nan_codec": "codec", "nan_lm": "lm", "int_weights": "int"}.items():
        folder = work / "cfg" / name
        folder.mkdir(parents=True)
        shutil.copy(shipped / "config.json", folder / "config.json")
        changed = dict(weights)
        key = next(k for k in weights if k.startswith(change)) if change != "int" else next(iter(weights))
        changed[key] = (weights[key].round().to(torch.int32) if change == "int"
                        else torch.full_like(weights[key], float("nan")))
        save_file(changed, str(folder / "model.safetensors"))
    folder = work / "cfg" / "truncated"
    folder.mkdir()
    shutil.copy(shipped / "config.json", folder / "config.json")
    blob = (shipped / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(blob[: len(blob) // 2])


def _bomb(work: Path) -> None:
    """A version-1 ``.wcodec`` (CRC over the payload only) claiming 1e8 frames of 0-bit codes: 300 bytes."""
    import struct
    import zlib

    subprocess.run([sys.executable, "-m", "wavecraft.cli", "compress", "t.wav", "ok.wcodec", "--no-progress"],
                   cwd=work, check=True, capture_output=True)
    raw = (work / "ok.wcodec").read_bytes()
    magic, _, size = struct.unpack_from("<4sBI", raw)
    header = json.loads(raw[9:9 + size])
    header.update(bits=0, frames=10**8)
    blob = json.dumps(header).encode()
    payload = b""
    (work / "bomb.wcodec").write_bytes(struct.pack("<4sBI", magic, 1, len(blob)) + blob + payload
                                       + struct.pack("<I", zlib.crc32(payload)))


def _cases(work: Path, long: bool) -> list[Case]:
    w = str(work)
    gen = ["generate", "calm piano", "--duration", "0.5", "--no-progress", "-o", f"{w}/g.wav"]
    cases = [
        # sampling and generation parameters
        Case("temperature nan", gen + ["--temperature", "nan"]),
        Case("cfg inf", gen + ["--cfg", "inf"]),
        Case("cfg 1e30", gen + ["--cfg", "1e30"]),
        Case("cfg-beta nan", gen + ["--cfg-beta", "nan"]),
        Case("top-p 2", gen + ["--top-p", "2"]),
        Case("top-k -3", gen + ["--top-k", "-3"]),
        Case("duration 1e9", gen[:3] + ["1e9"] + gen[4:], timeout=60),
        Case("duration nan", gen[:3] + ["nan"] + gen[4:]),
        Case("duration 0", gen[:3] + ["0"] + gen[4:]),
        Case("duration -1", gen[:3] + ["-1"] + gen[4:]),
        Case("extend-stride nan", gen + ["--extend-stride", "nan"]),
        Case("batch-size 0", gen + ["--batch-size", "0"]),
        Case("mp3-bitrate -5", gen[:-1] + [f"{w}/g.mp3", "--mp3-bitrate", "-5"]),
        Case("prompts-file /dev/zero", ["generate", "--prompts-file", "/dev/zero", "--duration", "0.5",
                                        "--no-progress", "-o", f"{w}/g.wav"], timeout=60),
        Case("prompts-file missing", ["generate", "--prompts-file", f"{w}/nope.txt", "-o", f"{w}/g.wav"]),
        Case("device cuda (no GPU)", gen + ["--device", "cuda"]),
        Case("device bogus", gen + ["--device", "bogus"]),
        Case("device meta", gen + ["--device", "meta"]),
        # continuation prompts
        Case("continue 1 sample", gen + ["--continue-from", f"{w}/one.wav"], expect="ok"),
        Case("continue 10 ms", gen + ["--continue-from", f"{w}/ten_ms.wav"], expect="ok"),
        Case("continue duration - 100 samples", gen[:3] + ["1"] + gen[4:] + ["--continue-from", f"{w}/almost.wav"],
             expect="ok"),
        Case("continue exactly duration", gen[:3] + ["1"] + gen[4:] + ["--continue-from", f"{w}/exact.wav"],
             expect="ok"),  # the prompt is the whole clip
        Case("continue longer than duration", gen[:3] + ["1"] + gen[4:] + ["--continue-from", f"{w}/longer.wav"]),
        Case("continue corrupt mp3", gen + ["--continue-from", f"{w}/corrupt.mp3"]),
        Case("melody empty file", gen + ["--melody", f"{w}/empty.wav"]),
        Case("melody NaN wav", gen + ["--melody", f"{w}/nan.wav"]),
        # outputs
        Case("-o is a directory", gen[:-1] + [f"{w}/dir.wav"]),
        Case("-o parent is a file", gen[:-1] + [f"{w}/a_file/g.wav"]),
        Case("-o 300-byte name", gen[:-1] + [f"{w}/{'n' * 300}.wav"]),
        Case("-o /dev/null", gen[:-1] + ["/dev/null"], check="not Path('/dev/null.wav').exists()"),
        Case("--stream -o directory", gen[:-1] + [f"{w}/dir.wav", "--stream"]),
        Case("-o = --continue-from", gen[:3] + ["2"] + gen[4:-1] + [f"{w}/t.wav", "--continue-from", f"{w}/t.wav"],
             unchanged=["t.wav"]),
        Case("generate file size limit", gen[:3] + ["1"] + gen[4:], fsize=20_000, message="too large",
             check="not (work / 'g.wav').exists()"),
        Case("two prompts, second output fails", ["generate", "a", "b", "--duration", "0.5", "--no-progress",
                                                  "-o", f"{w}/m.wav"], setup="mkdir m_1.wav",
             check="not (work / 'm_0.wav').exists()"),
        Case("SIGTERM during --stream", gen[:3] + ["4"] + gen[4:] + ["--stream"], term_when=".g.wav.tmp*"),
        # compress / decompress
        Case("compress 30.01 s", ["compress", f"{w}/t30.wav", f"{w}/c.wcodec", "--no-progress"], expect="ok"),
        Case("compress 1 sample", ["compress", f"{w}/one.wav", f"{w}/c.wcodec", "--no-progress"], expect="ok"),
        Case("compress 10 ms", ["compress", f"{w}/ten_ms.wav", f"{w}/c.wcodec", "--no-progress"], expect="ok"),
        Case("compress 2048 samples", ["compress", f"{w}/s2048.wav", f"{w}/c.wcodec", "--no-progress"],
             expect="ok"),
        Case("compress t.wav t.wav", ["compress", f"{w}/t.wav", f"{w}/t.wav"], unchanged=["t.wav"]),
        Case("bandwidth nan", ["compress", f"{w}/t.wav", f"{w}/c.wcodec", "--bandwidth", "nan"]),
        Case("bandwidth inf", ["compress", f"{w}/t.wav", f"{w}/c.wcodec", "--bandwidth", "inf"]),
        Case("bandwidth 0", ["compress", f"{w}/t.wav", f"{w}/c.wcodec", "--bandwidth", "0"]),
        Case("bandwidth -1", ["compress", f"{w}/t.wav", f"{w}/c.wcodec", "--bandwidth", "-1"]),
        Case("compress corrupt mp3", ["compress", f"{w}/corrupt.mp3", f"{w}/c.wcodec"]),
        Case("compress NaN wav", ["compress", f"{w}/nan.wav", f"{w}/c.wcodec"]),
        Case("compress empty file", ["compress", f"{w}/empty.wav", f"{w}/c.wcodec"]),
        Case("compress to a directory", ["compress", f"{w}/t.wav", f"{w}/a_dir"]),
        Case("compress parent is a file", ["compress", f"{w}/t.wav", f"{w}/a_file/c.wcodec"]),
        Case("compress 300-byte name", ["compress", f"{w}/t.wav", f"{w}/{'n' * 300}.wcodec"]),
        Case("compress file size limit", ["compress", f"{w}/t60.wav", f"{w}/big.wcodec", "--no-progress"],
             fsize=3000, message="too large", check="not (work / 'big.wcodec').exists()"),
        Case("SIGTERM during compress", ["compress", f"{w}/t300.wav", f"{w}/term.wcodec", "--no-progress"],
             term_after=2.5),
        Case("decompress to a directory", ["decompress", f"{w}/ok.wcodec", f"{w}/dir.wav"],
             setup=f"{sys.executable} -m wavecraft.cli compress t.wav ok.wcodec --no-progress"),
        Case("decompress empty file", ["decompress", f"{w}/empty.wav", f"{w}/d.wav"]),
        Case("decompress a wav", ["decompress", f"{w}/t.wav", f"{w}/d.wav"]),
        Case("decompress bits 0, 1e8 frames", ["decompress", f"{w}/bomb.wcodec", f"{w}/d.wav"],
             setup=_bomb),
        Case("decompress file size limit", ["decompress", f"{w}/ok10.wcodec", f"{w}/d10.wav", "--no-progress"],
             fsize=50_000, message="too large", check="not (work / 'd10.wav').exists()",
             setup=f"{sys.executable} -m wavecraft.cli compress t10.wav ok10.wcodec --no-progress"),
        # absurd or damaged checkpoints (the shipped model's folder with one thing changed)
        *[Case(f"config {name}", ["compress", f"{w}/t.wav", f"{w}/c.wcodec", "--model", f"{w}/cfg/{name}"],
               timeout=90) for name in ("codec_nq_1e6", "codec_bins_1e9", "codec_dim_1e9", "codec_nfft_1e9",
                                       "codec_sr_0", "nan_codec", "truncated")],
        *[Case(f"config {name}", gen + ["--model", f"{w}/cfg/{name}"], timeout=90)
          for name in ("lm_layers_1e6", "lm_heads_0", "lm_dim_1e9", "chroma_frames_1e9", "max_duration_0",
                       "format_version_99", "sample_rate_0", "delays_1e9", "nan_lm", "int_weights")],
        # the Python API
        *[Case(name, [code], api=True) for name, code in {
            "audio_read duration 1e12 pad": f"from wavecraft import audio_read; audio_read('{w}/t.wav', "
                                            "duration=1e12, pad=True)",
            "audio_read duration 1e5 pad": f"from wavecraft import audio_read; audio_read('{w}/t.wav', "
                                           "duration=1e5, pad=True)",
            "audio_write sample_rate 1e12": f"import torch; from wavecraft import audio_write; "
                                            f"audio_write('{w}/aw', torch.zeros(1, 100), 10**12)",
            "audio_write loudness headroom nan": f"import torch; from wavecraft import audio_write; audio_write("
                                                 f"'{w}/ln', torch.randn(1, 32000) * 0.1, 32000, strategy='loudness', "
                                                 "loudness_headroom_db=float('nan'))",
            "convert_audio to 1e9 Hz": "import torch; from wavecraft.data.audio_utils import convert_audio; "
                                       "convert_audio(torch.zeros(1, 32000), 32000, 10**9, 1)",
            "EnCodec.from_pretrained(None)": "from wavecraft import EnCodec; EnCodec.from_pretrained(None)",
            "decode 0 frames (empty audio)": "import torch; from wavecraft import EnCodec; m = EnCodec.from_pretrained("
                               "'wavecraft-small'); m.decode(torch.zeros(1, m.num_codebooks, 0, dtype=torch.long))",
            "set_bandwidth nan": "from wavecraft import EnCodec; EnCodec.from_pretrained('wavecraft-small')"
                                 ".set_bandwidth(float('nan'))",
            "1-sample continuation prompt (works)": "import torch; from wavecraft import MusicGen; "
                                                    "m = MusicGen.get_pretrained('wavecraft-small'); "
                                                    "m.set_generation_params(duration=0.5); "
                                                    "m.generate_continuation(torch.zeros(1, 1, 1), 32000, ['a'])",
            "set_generation_params duration 1e9": "from wavecraft import MusicGen; m = MusicGen.get_pretrained("
                                                  "'wavecraft-small'); m.set_generation_params(duration=1e9); "
                                                  "m.generate(['a'])",
            "set_generation_params temperature nan": "from wavecraft import MusicGen; m = MusicGen.get_pretrained("
                                                     "'wavecraft-small'); m.set_generation_params("
                                                     "temperature=float('nan'), duration=0.5); m.generate(['a'])",
        }.items()],
    ]
    for case in cases:
        if case.name.endswith("(empty audio)") or case.name.endswith("(works)"):
            case.expect = "ok"
    for case in cases:
        if case.name == "audio_write loudness headroom nan":
            # either refused, or a file whose samples are not all -1
            case.check = ("not (work / 'ln.wav').exists() or "
                          "not (__import__('soundfile').read(work / 'ln.wav')[0] <= -0.999).all()")
    if _mount_full_disk(work / "full"):
        cases += [
            Case("generate to a full disk", gen[:-1] + [f"{w}/full/g.wav"], message="no space left",
                 check="not any((work / 'full').iterdir())"),
            Case("compress to a full disk", ["compress", f"{w}/t300.wav", f"{w}/full/c.wcodec", "--no-progress"],
                 message="no space left", check="not any((work / 'full').iterdir())"),
            Case("decompress to a full disk", ["decompress", f"{w}/ok10.wcodec", f"{w}/full/d.wav",
                                               "--no-progress"],
                 message="no space left", check="not any((work / 'full').iterdir())",
                 setup=f"{sys.executable} -m wavecraft.cli compress t10.wav ok10.wcodec --no-progress"),
        ]
    if long:
        for minutes, sr, ch in ((10, 32000, 1), (60, 32000, 1), (10, 44100, 2), (60, 44100, 2)):
            name = f"long_{minutes}min_{sr}_{ch}ch"
            cases.append(Case(f"compress {minutes} min {sr} Hz {ch} ch",
                              ["compress", f"{w}/{name}.wav", f"{w}/{name}.wcodec", "--no-progress"],
                              expect="ok", timeout=1200, setup=f"LONG {name} {minutes * 60} {sr} {ch}"))
            cases.append(Case(f"decompress {minutes} min {sr} Hz {ch} ch",
                              ["decompress", f"{w}/{name}.wcodec", f"{w}/{name}.out.wav", "--no-progress"],
                              expect="ok", timeout=1200))
    return cases


def _mount_full_disk(folder: Path) -> bool:
    """A 16 KiB tmpfs at ``folder`` (a disk that fills at once); needs root, else those cases are left out."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def _peak_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _run(case: Case, work: Path, env: dict[str, str]) -> dict:
    if callable(case.setup):
        case.setup(work)
    elif case.setup:
        if case.setup.startswith("LONG "):
            _, name, seconds, sr, ch = case.setup.split()
            _long_wav(work / f"{name}.wav", float(seconds), int(sr), int(ch))
        else:
            subprocess.run(case.setup, shell=True, cwd=work, env=env, check=False, capture_output=True)
    before = {name: (work / name).read_bytes() for name in case.unchanged}
    temps_before = set(work.rglob(".*tmp*"))
    cmd = ([sys.executable, "-c", API_WRAPPER, case.argv[0]] if case.api
           else [sys.executable, "-m", "wavecraft.cli", *case.argv])

    def limits() -> None:
        if case.fsize is not None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))

    begin = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limits)
    peak, killed, termed = 0.0, None, False
    import threading

    out: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(), strict=True)))
    reader.start()
    while reader.is_alive():
        reader.join(0.05)
        peak = max(peak, _peak_mb(proc.pid))
        elapsed = time.monotonic() - begin
        if not termed and (case.term_after is not None and elapsed > case.term_after
                           or case.term_when is not None and any(work.glob(case.term_when))):
            proc.send_signal(signal.SIGTERM)
            termed = True
        if peak > MEMORY_BUDGET_MB and killed is None:
            killed = "memory"
            proc.kill()
        if elapsed > case.timeout and killed is None:
            killed = "hang"
            proc.kill()
    rc = proc.returncode
    stderr = out.get("stderr", b"").decode(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    if killed:
        outcome = killed
    elif rc is not None and rc < 0 and not termed:
        outcome = "signal"
    elif "Traceback (most recent call last)" in stderr:
        outcome = "traceback"
    elif rc == 0:
        outcome = "ok" if case.expect == "ok" or termed else "accepted"  # termed: it finished first
    else:
        errorish = [line for line in lines if "error:" in line or line.startswith("wavecraft: ")]
        argparse_error = rc == 2 and lines and lines[0].startswith("usage:") and len(lines) == 2
        if termed:
            outcome = "clean" if len(lines) <= 1 else "noisy"
        elif len(lines) == 1 and errorish or argparse_error:
            outcome = "clean"
        else:
            outcome = "noisy" if errorish else "traceback"
        if outcome == "clean" and case.message and case.message not in stderr.lower():
            outcome = "unclear"
        if case.expect == "ok":
            outcome = "failed" if outcome in ("clean", "noisy", "unclear") else outcome
    lost = [name for name, data in before.items() if (work / name).read_bytes() != data]
    leftovers = sorted(str(p.relative_to(work)) for p in set(work.rglob(".*tmp*")) - temps_before)
    if case.check and not eval(case.check, {"Path": Path, "work": work}):
        lost.append(f"check failed: {case.check}")
    if lost or leftovers:
        outcome = "lost"
    for p in leftovers:
        Path(work, p).unlink(missing_ok=True)
    for name, data in before.items():  # later cases use the same inputs
        (work / name).write_bytes(data)
    return {"case": case.name, "outcome": outcome, "rc": rc, "peak_mb": round(peak), "lines": len(lines),
            "last": lines[-1][:160] if lines else "", "seconds": round(time.monotonic() - begin, 1),
            "lost": lost + leftovers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                        help="the src folder of the wavecraft checkout to probe")
    parser.add_argument("--json", default=None, help="save the results here")
    parser.add_argument("--long", action="store_true", help="add the 10 min / 1 h compress and decompress cases")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(Path(args.src).resolve()), HF_HUB_OFFLINE="1", PYTHONWARNINGS="default")
    sys.path.insert(0, env["PYTHONPATH"])
    from wavecraft.checkpoints.shipped import shipped_folder

    results = []
    with tempfile.TemporaryDirectory(prefix="wavecraft-probe-") as tmp:
        work = Path(tmp)
        _fixtures(work, shipped_folder("wavecraft-small"))
        for case in _cases(work, args.long):
            if args.only and args.only not in case.name:
                continue
            result = _run(case, work, env)
            results.append(result)
            print(f"{result['outcome']:<9} {result['peak_mb']:>6} MB {result['seconds']:>6} s  {case.name}"
                  f"  | {result['last']}", flush=True)
            for name in ("g.wav", "c.wcodec", "d.wav", "m_0.wav"):
                if (work / name).is_file():
                    (work / name).unlink()
            if (work / "full").is_dir():
                for leftover in (work / "full").iterdir():
                    leftover.unlink()
        subprocess.run(["umount", str(work / "full")], capture_output=True)
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    good = sum(counts.get(k, 0) for k in GOOD)
    print(f"\n{len(results)} cases: {good} as promised ({counts.get('ok', 0)} ok, {counts.get('clean', 0)} clean "
          "errors); " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k not in GOOD))
    if args.json:
        Path(args.json).write_text(json.dumps({"src": args.src, "results": results}, indent=1))


if __name__ == "__main__":
    main()
