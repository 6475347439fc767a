"""Bad input and faults on the CLI and generation front end: one-line errors, nothing lost, nothing left behind,
bounded memory and time (issue 21)."""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavecraft import MusicGen, cli, fileio
from wavecraft.cli import main
from wavecraft.errors import AudioFileError, WavecraftError
from wavecraft.models import generation_job
from wavecraft.models.genmodel import GenerationError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> MusicGen:
    return MusicGen.get_pretrained(device="cpu")


def _one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("wavecraft: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle.lower() in err.lower(), err
    return err


def _wav(path: Path, seconds: float = 0.2, rate: int = 32000) -> Path:
    sf.write(path, 0.2 * np.sin(np.arange(int(seconds * rate)) / 7.0), rate)
    return path


def _ours(folder: Path) -> list[str]:
    """Hidden temporaries of our naming left in ``folder``."""
    return [p.name for p in folder.iterdir() if fileio._TEMP_NAME.fullmatch(p.name)]


# -- item 1: continuation prompts of any length up to the duration --------------------------------------------------

@pytest.mark.parametrize("duration", [0.5, 0.71])  # 0.71 s is no whole number of frames (35.5)
@pytest.mark.parametrize("length", ["1 sample", "10 ms", "duration - 1 frame", "duration - 1 sample", "duration",
                                    "duration + 1 sample"])
def test_continuation_prompt_lengths(model: MusicGen, duration: float, length: str) -> None:
    rate, hop = model.sample_rate, round(model.sample_rate / model.frame_rate)
    n = int(duration * rate)
    samples = {"1 sample": 1, "10 ms": rate // 100, "duration - 1 frame": n - hop, "duration - 1 sample": n - 1,
               "duration": n, "duration + 1 sample": n + 1}[length]
    model.set_generation_params(duration=duration, seed=0, top_k=5)
    prompt = 0.1 * torch.randn(1, 1, samples, generator=torch.Generator().manual_seed(0))
    if samples > n:
        with pytest.raises(GenerationError, match="longer than the requested duration") as err:
            model.generate_continuation(prompt, rate, ["piano"])
        assert "\n" not in str(err.value) and str(samples) in str(err.value)
        return
    try:
        wav = model.generate_continuation(prompt, rate, ["piano"])
    except RuntimeError as e:  # the shipped codec's STFT reflect padding, fixed in wavecraft/codec/
        if "Padding size" in str(e) and samples <= rate // 100:
            pytest.xfail("codec: reflect padding of prompts shorter than the STFT window (codec/oscillator.py)")
        raise
    assert wav.shape == (1, 1, int(duration * model.frame_rate) * hop)


def test_lm_generate_with_a_prompt_that_fills_the_clip(model: MusicGen) -> None:
    """It raised 'ValueError: timestep 50 (codebook None) does not appear in the pattern'."""
    from wavecraft.lm.generate import generate

    model.set_generation_params(duration=1.0)
    conditions = model._conditions(["x"])
    prompt = torch.randint(0, 10, (1, model.lm.cfg.n_q, 50))
    out = generate(model.lm, conditions.cond, 50, prompt=prompt, **model._lm_kwargs(conditions, None))
    assert torch.equal(out, prompt)


def test_cli_continue_from_a_prompt_as_long_as_the_duration(tmp_path: Path) -> None:
    """0.71 s = 35.5 frames: a 0.71 s prompt encodes to 36 frames; it was 'the prompt is longer than the requested
    duration'."""
    start = _wav(tmp_path / "start.wav", seconds=0.71)
    out = tmp_path / "more.wav"
    assert main(["generate", "x", "--continue-from", str(start), "--duration", "0.71", "-o", str(out),
                 "--no-progress"]) == 0
    assert sf.info(out).frames == 35 * 640


# -- item 2: outputs checked before the work, OSError while writing is one line, all or nothing ---------------------

def _state(path: Path) -> tuple | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def _bad_outputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "afile").write_text("x")
    return {
        "is a folder": (str(tmp_path / "folder.wav"), "it is a folder"),
        "parent is a file": (str(tmp_path / "afile" / "o.wav"), "is not a folder"),
        "parent missing": (str(tmp_path / "nope" / "o.wav"), "does not exist"),
        "name over 255 bytes": (str(tmp_path / ("é" * 130 + ".wav")), "255 bytes"),
        "device": ("/dev/null", "not a regular file"),
    }


@pytest.mark.parametrize("case", ["is a folder", "parent is a file", "parent missing", "name over 255 bytes",
                                  "device"])
@pytest.mark.parametrize("command", ["compress", "decompress", "generate", "manifest"])
def test_bad_outputs_fail_first_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, case: str,
                                            command: str) -> None:
    output, message = _bad_outputs(tmp_path)[case]
    if command == "manifest" and output.endswith(".wav"):
        output = output[:-4] + ".jsonl"
        if case == "is a folder":
            (tmp_path / "folder.jsonl").mkdir()
    source = _wav(tmp_path / "in.wav")
    argv = {"compress": ["compress", str(source), output],
            "decompress": ["decompress", str(tmp_path / "missing.wcodec"), output],
            "generate": ["generate", "x", "--duration", "0.2", "--stream", "-o", output, "--no-progress"],
            "manifest": ["data", "manifest", str(tmp_path), "-o", output]}[command]
    before = sorted(p.name for p in tmp_path.iterdir())
    beside_null = _state(Path("/dev/null.wav"))  # what -o /dev/null used to write
    assert main(argv) == 1
    _one_line_error(capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _state(Path("/dev/null.wav")) == beside_null


def test_unwritable_folder(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root may write anywhere: the permission check is what is tested (os.access says no)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    assert main(["compress", str(_wav(tmp_path / "in.wav")), str(locked / "o.wcodec")]) == 1
    _one_line_error(capsys, "no permission", str(locked))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_for_real(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["compress", str(_wav(tmp_path / "in.wav")), str(locked / "o.wcodec")]) == 1
    _one_line_error(capsys, "no permission")


def test_every_generated_name_is_checked_before_generating(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def never(self):  # noqa: ANN001, ANN202
        raise AssertionError("generation started")

    monkeypatch.setattr(generation_job.GenerationJob, "run", never)
    (tmp_path / "song_1.wav").mkdir()
    assert main(["generate", "a", "b", "-o", str(tmp_path / "song.wav"), "--stream"]) == 1
    _one_line_error(capsys, "song_1.wav", "folder")
    (tmp_path / "d.wav").mkdir()
    assert main(["generate", "a", "-o", str(tmp_path / "d"), "--stream"]) == 1  # writes d.wav: a folder
    _one_line_error(capsys, "d.wav")
    stem = "s" * 250  # fits alone; stem_0.wav does not
    assert main(["generate", "a", "b", "-o", str(tmp_path / stem)]) == 1
    _one_line_error(capsys, "255 bytes")
    prompt = _wav(tmp_path / "p_0.wav")
    assert main(["generate", "a", "b", "--continue-from", str(prompt), "-o", str(tmp_path / "p.wav")]) == 1
    _one_line_error(capsys, "also an input")


def test_disk_full_while_writing_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``f.write`` raising ENOSPC names no file: the message names the output."""
    def full(self, data):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "o.wcodec"
    assert main(["compress", str(_wav(tmp_path / "in.wav")), str(out)]) == 1
    _one_line_error(capsys, f"cannot write {out}: no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_file_size_limit_in_a_child_is_one_line(tmp_path: Path) -> None:
    """A real write failure (RLIMIT_FSIZE: EFBIG) in a real process: one line, exit 1, no partial file."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    out = tmp_path / "o.wcodec"
    source = _wav(tmp_path / "in.wav")
    done = subprocess.run([sys.executable, "-m", "wavecraft.cli", "compress", str(source), str(out),
                           "--no-progress"], capture_output=True, text=True, preexec_fn=limit, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("wavecraft: error:") and done.stderr.count("\n") == 1, done.stderr
    assert "too large" in done.stderr.lower() and "o.wcodec" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.parametrize("stream", [False, True])
def test_several_prompts_all_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    """The second file fails: the first is not left behind and a file that was there keeps its content."""
    (tmp_path / "song_0.wav").write_bytes(b"old")
    real = generation_job.audio_write
    calls = []

    def fail_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(args[0])
        if len(calls) == 2:
            raise AudioFileError(f"cannot write audio file {args[0]}: No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(generation_job, "audio_write", fail_second)
    argv = ["generate", "a", "b", "c", "--duration", "0.2", "-o", str(tmp_path / "song.wav"), "--no-progress"]
    assert main([*argv, *(["--stream", "--batch-size", "1"] if stream else [])]) == 1
    err = _one_line_error(capsys, "song_1.wav")
    assert ".tmp-" not in err  # the message names the user's file, not the temporary one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song_0.wav"]
    assert (tmp_path / "song_0.wav").read_bytes() == b"old"


def test_atomic_outputs_undoes_renames_when_one_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("old a")
    real = os.replace
    renames = []

    def replace(src, dst):  # noqa: ANN001, ANN202
        if Path(dst) == b:
            raise OSError(errno.EIO, "I/O error", str(dst))
        renames.append(dst)
        return real(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    with pytest.raises(OSError), fileio.atomic_outputs([a, b]) as temps:
        for tmp in temps:
            tmp.write_text("new")
    assert renames and a.read_text() == "old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# -- item 3: SIGTERM cleans up; a SIGKILL'd writer's leftovers go on the next write --------------------------------

def _child(args: list[str], cwd: Path, code: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "wavecraft.cli", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_temp(folder: Path, process: subprocess.Popen, kind: str, timeout: float = 240) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [p for p in folder.iterdir() if f".{kind}-{process.pid}-" in p.name]
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"child ended early: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("no temporary file appeared")


def test_sigterm_during_stream_leaves_nothing(tmp_path: Path) -> None:
    child = _child(["generate", "piano", "--duration", "60", "--stream", "-o", str(tmp_path / "o.wav"),
                    "--no-progress"], tmp_path)
    _wait_for_temp(tmp_path, child, "live")
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and err.strip().splitlines()[-1] == "wavecraft: terminated", err
    assert list(tmp_path.iterdir()) == []


# The write sleeps with its temporary in place: SIGTERM arrives while writing.
_SLOW_WRITE = """
import sys, time
from pathlib import Path
from wavecraft.cli import main
real = Path.write_bytes
def slow(self, data):
    real(self, data)
    time.sleep(60)
Path.write_bytes = slow
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_compress_writes_leaves_nothing(tmp_path: Path) -> None:
    source = _wav(tmp_path / "in.wav")
    child = _child(["compress", str(source), str(tmp_path / "o.wcodec"), "--no-progress"], tmp_path, _SLOW_WRITE)
    _wait_for_temp(tmp_path, child, "tmp")
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and "wavecraft: terminated" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_sigterm_while_generate_writes_cleans_up(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM raises :class:`cli.Terminated` where the program is: here in the middle of the second file."""
    real = generation_job.audio_write
    calls = []

    def interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        real(*args, **kwargs)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(generation_job, "audio_write", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    code = main(["generate", "a", "b", "--duration", "0.2", "-o", str(tmp_path / "o.wav"), "--no-progress"])
    assert code == 143 and capsys.readouterr().err.strip() == "wavecraft: terminated"
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # main() puts the old handler back


def test_sigkilled_writer_leftover_is_removed_by_the_next_write(tmp_path: Path) -> None:
    child = _child(["generate", "piano", "--duration", "60", "--stream", "-o", str(tmp_path / "o.wav"),
                    "--no-progress"], tmp_path)
    leftover = _wait_for_temp(tmp_path, child, "live")
    child.kill()
    child.wait(timeout=60)
    assert leftover.exists()
    old = time.time() - fileio.STALE_DEAD_SECONDS - 1
    os.utime(leftover, (old, old))
    # Not ours to remove: a live writer's file (this process), a fresh file, another program's name.
    mine = tmp_path / f".x.wav.tmp-{os.getpid()}-{'a' * 12}.wav"
    fresh = tmp_path / f".y.wav.tmp-999999999-{'b' * 12}.wav"
    foreign = tmp_path / ".z.wav.tmp-something.wav"
    for path in (mine, fresh, foreign):
        path.write_bytes(b"x")
    os.utime(mine, (old, old))
    os.utime(foreign, (old, old))
    fileio._cleaned.discard(os.path.abspath(tmp_path))
    assert main(["compress", str(_wav(tmp_path / "in.wav")), str(tmp_path / "o.wcodec"), "--no-progress"]) == 0
    assert not leftover.exists()
    assert mine.exists() and fresh.exists() and foreign.exists()
    very_old = time.time() - fileio.STALE_ANY_SECONDS - 1
    os.utime(mine, (very_old, very_old))  # past the hour: whatever its pid
    assert fileio.remove_stale_temporaries(tmp_path, force=True) == [mine]


# -- item 4: limits on everything that could run or read without end -----------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--duration", "1e9"], "--allow-long"),
    (["--duration", "3601"], "limit of 3600 s"),
    (["--duration", "1e9", "--allow-long"], "limit of 86400 s"),
    (["--duration", "-1"], "positive"),
    (["--duration", "inf"], "positive"),
    (["--extend-stride", "nan"], "--extend-stride"),
    (["--extend-stride", "0"], "--extend-stride"),
    (["--extend-stride", "-2"], "--extend-stride"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--mp3-bitrate", "0"], "--mp3-bitrate"),
    (["--mp3-bitrate", "100000"], "--mp3-bitrate"),
    (["--prompts-file", "/dev/zero"], "larger than 1 MiB"),
    (["--prompts-file", "{tmp}"], "cannot read prompts file"),
    (["--prompts-file", "{tmp}/long.txt"], "line 2: 10001 characters"),
    (["--prompts-file", "{tmp}/nul.txt"], "NUL"),
    (["--prompts-file", "{tmp}/latin1.txt"], "UTF-8"),
    (["--prompts-file", "{tmp}/many.txt"], "300 prompts"),
    (["{long}"], "1000000 characters"),
])
def test_limits_fail_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                    extra: list[str], message: str) -> None:
    def never(self):  # noqa: ANN001, ANN202
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(generation_job.GenerationJob, "load_model", never)
    (tmp_path / "long.txt").write_text("ok\n" + "a" * 10_001 + "\n")
    (tmp_path / "nul.txt").write_bytes(b"piano\0\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "many.txt").write_text("p\n" * 300)
    extra = [a.format(tmp=tmp_path, long="a" * 10**6) for a in extra]
    prompts = [] if "--prompts-file" in extra or extra[0].startswith("a") else ["x"]
    assert main(["generate", *prompts, *extra, "-o", str(tmp_path / "o.wav"), "--no-progress"]) == 1
    _one_line_error(capsys, message)
    assert not (tmp_path / "o.wav").exists()


def test_prompts_file_from_a_device_reads_bounded_memory(tmp_path: Path) -> None:
    """/dev/zero was read until memory ran out; now at most 1 MiB is read (peak RSS in a child)."""
    (tmp_path / "p.txt").write_text("piano\n")
    code = f"""
import sys
from wavecraft.cli import main
def peak():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
args = ["generate", "--duration", "1e9", "-o", {str(tmp_path / 'o.wav')!r}, "--prompts-file"]
assert main([*args, {str(tmp_path / 'p.txt')!r}]) == 1  # imports everything, reads a small file
before = peak()
assert main([*args, "/dev/zero"]) == 1
print(peak() - before)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "larger than 1 MiB" in done.stderr
    assert int(done.stdout.split()[-1]) < 32 * 1024  # kB: the 1 MiB read and its copies, nothing like the file


def test_huge_batch_size_is_all_prompts() -> None:
    args = cli._build_parser().parse_args(["generate", "a", "b", "--batch-size", str(10**18)])
    args.output = "o.wav"
    assert generation_job.GenerationJob.from_args(args, kind="music").batch_size == 2


def test_api_duration_and_stride_limits(model: MusicGen) -> None:
    for bad in ({"duration": 1e9}, {"duration": 3600.5}, {"duration": 10, "extend_stride": 1e-9}):
        with pytest.raises(GenerationError) as err:
            model.set_generation_params(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(GenerationError, match="max_generation_duration"):
        model.set_generation_params(duration=1e9)
    model.max_generation_duration = 7200.0  # the way to ask for more
    try:
        model.set_generation_params(duration=7000)
    finally:
        del model.max_generation_duration
    model.set_generation_params(duration=1.0)


def test_api_megabyte_prompt_is_refused_at_once(model: MusicGen) -> None:
    model.set_generation_params(duration=0.2)
    with pytest.raises(GenerationError, match="too long"):
        model.generate(["a" * 10**6])


# -- item 5: last-resort errors in one line ------------------------------------------------------------------------

@pytest.mark.parametrize("error, message", [
    (MemoryError(), "out of memory"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text"), "out of memory"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"), "out of memory"),
    (WavecraftError("first line\nsecond line\r\n"), "first line second line"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "/x/o.wav"), "cannot write /x/o.wav: read-only file system"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/x/o.wav"), "cannot write /x/o.wav"),
])
def test_last_resort_errors_are_one_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                         error: BaseException, message: str) -> None:
    def fail(args):  # noqa: ANN001, ANN202
        raise error

    monkeypatch.setattr(cli, "_models", fail)
    assert main(["models"]) == 1
    _one_line_error(capsys, message)


def test_write_error_without_a_file_name_names_the_output(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``f.write`` raising ENOSPC carries no file name: the last resort names the outputs this run checked."""
    out = tmp_path / "o.wcodec"

    def compress(args):  # noqa: ANN001, ANN202
        cli._check_output(args.output)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli, "_compress", compress)
    assert main(["compress", "in.wav", str(out)]) == 1
    _one_line_error(capsys, f"cannot write {out}: no space left on device")


def test_other_runtime_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(args):  # noqa: ANN001, ANN202
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "_models", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["models"])


def test_check_duration_messages() -> None:
    from wavecraft.models.genmodel import check_duration

    assert check_duration(2, 10) == 2.0
    for bad in (math.nan, 0, -1, True, "1", math.inf, 11):
        with pytest.raises(GenerationError):
            check_duration(bad, 10)


def test_manifest_disk_full_is_one_line_and_keeps_the_old_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from wavecraft.data import manifest

    _wav(tmp_path / "a.wav")
    out = tmp_path / "m.jsonl"
    out.write_text("old\n")

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest, "_open_text", lambda path, mode: Full())
    assert main(["data", "manifest", str(tmp_path), "-o", str(out)]) == 1
    _one_line_error(capsys, f"cannot write manifest {out}: no space left on device")
    assert out.read_text() == "old\n" and not _ours(tmp_path)
