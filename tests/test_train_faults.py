"""Training under bad input and faults (issue 21): NaN audio, diverging steps, damaged checkpoints, torn logs,
interrupted saves, and resumption that is bit-exact whatever step the run stopped at."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from wavecraft.cli import main
from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.errors import CheckpointError, WavecraftError
from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions
from wavecraft.lm.model import LMModel
from wavecraft.train import checkpoint as ckpt
from wavecraft.train.codec_solver import CodecSolver, CodecTrainConfig, batches_from_manifest
from wavecraft.train.config import LMTrainConfig, load_config
from wavecraft.train.lm_run import LMRunConfig, train_lm
from wavecraft.train.lm_solver import LMSolver

LM = LMConfig(dim=32, num_heads=2, num_layers=2, card=16, n_q=4)
CODEC = CodecConfig(sample_rate=16000, n_filters=4, dimension=16, ratios=(4, 4), lstm_layers=1, n_q=2, bins=32,
                    kmeans_iters=5)
RATE = 8000


# --- tiny LM solver runs ------------------------------------------------------------------------------------------

def make_lm() -> LMModel:
    torch.manual_seed(0)
    return LMModel(LM)


def batch_at(step: int) -> tuple[torch.Tensor, Conditions]:
    g = torch.Generator().manual_seed(1000 + step)
    codes = torch.randint(0, 16, (4, 4, 8), generator=g)
    cond = Conditions(cross_src=torch.randn(4, 3, 32, generator=g), cross_mask=torch.ones(4, 3, dtype=torch.long))
    return codes, cond


def lm_cfg(out: Path, **changes) -> LMTrainConfig:
    base = LMTrainConfig(lr=3e-3, warmup_steps=2, total_steps=8, cfg_dropout=0.0, ema_decay=0.9, log_every=1,
                         checkpoint_every=2, output_dir=str(out))
    return dataclasses.replace(base, **changes)


def fit_lm(out: Path, max_steps: int | None = None, batches=batch_at, **changes) -> LMSolver:
    solver = LMSolver(make_lm(), lm_cfg(out, **changes))
    solver.fit(batches, max_steps=max_steps)
    return solver


@pytest.fixture(scope="module")
def lm_reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Weights after an uninterrupted tiny LM run of 8 steps."""
    return dict(fit_lm(tmp_path_factory.mktemp("ref") / "run").lm.state_dict())


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def leftovers(out: Path) -> list[str]:
    """Hidden files and folders anywhere in a run directory: temporaries."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*"))


# --- item 2: damaged checkpoints fall back to the previous one ---------------------------------------------------

class _Exploit:
    def __reduce__(self):  # what a malicious pickle does: run a command when unpickled
        return (os.system, ("touch /tmp/wavecraft-pwned",))


def _rewrite_digest(folder: Path) -> None:
    """Make checkpoint.json agree with the (tampered) files, so the loaders themselves must refuse them."""
    record = json.loads((folder / "checkpoint.json").read_text())
    record["sha256"] = {name: ckpt._sha256(folder / name) for name in record["sha256"]}
    (folder / "checkpoint.json").write_text(json.dumps(record))


def _damage(folder: Path, kind: str) -> str:
    """Damage the checkpoint in ``folder``; returns the name of the file the warning must point at."""
    model, state = folder / "model.safetensors", folder / "train_state.pt"
    if kind == "truncated model":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif kind == "truncated model, digest updated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        _rewrite_digest(folder)
    elif kind == "truncated state":
        state.write_bytes(state.read_bytes()[:100])
    elif kind == "empty state":
        state.write_bytes(b"")
    elif kind == "empty state, digest updated":
        state.write_bytes(b"")
        _rewrite_digest(folder)
    elif kind == "bit-flipped state":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0x10
        state.write_bytes(bytes(data))
    elif kind == "malicious state":
        torch.save({"step": 6, "payload": _Exploit()}, state)
        _rewrite_digest(folder)
    elif kind == "missing digest":
        (folder / "checkpoint.json").unlink()
    return str(folder)


DAMAGE = ["truncated model", "truncated model, digest updated", "truncated state", "empty state",
          "empty state, digest updated", "bit-flipped state", "malicious state", "missing digest"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, lm_reference, caplog, kind):
    out = tmp_path / "run"
    fit_lm(out, max_steps=6)  # checkpoints of steps 4 and 6 kept
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    where = _damage(out / "checkpoints" / "step-00000006", kind)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "lo')  # and the log's last line torn by a kill during an append
    with caplog.at_level(logging.WARNING):
        resumed = fit_lm(out)
    warnings = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(warnings) == 1 and where in warnings[0] and "\n" not in warnings[0]
    assert not os.path.exists("/tmp/wavecraft-pwned")
    assert resumed.step == 8
    assert_same(dict(resumed.lm.state_dict()), lm_reference)  # retrained from step 4: the same weights
    assert [m["step"] for m in metrics(out)] == list(range(1, 9))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]
    assert ckpt.load_checkpoint(out, make_lm())[0] == 8


def test_no_usable_checkpoint_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    fit_lm(out, max_steps=6)
    for folder in (out / "checkpoints").iterdir():
        _damage(folder, "truncated state")
    with pytest.raises(CheckpointError, match="no usable checkpoint") as info:
        fit_lm(out)
    message = str(info.value)
    assert "\n" not in message and "step-00000004" in message and "step-00000006" in message


def test_a_chosen_step_loads_exactly_that_checkpoint(tmp_path):
    # What the other ranks of a data-parallel run do: rank 0 picks, they load that step or fail, never fall back on
    # their own (ranks resuming from different checkpoints deadlocked on each other's collectives).
    out = tmp_path / "run"
    fit_lm(out, max_steps=6)
    _damage(out / "checkpoints" / "step-00000006", "truncated state")
    solver = LMSolver(make_lm(), lm_cfg(out))
    args = (out, solver.trainable, solver.optimizer, solver.scheduler)
    assert ckpt.load_checkpoint(*args)[0] == 4  # alone: falls back past the damaged one
    assert ckpt.load_checkpoint(*args, step=4)[0] == 4
    for step, reason in ((6, "no usable checkpoint"), (5, "no checkpoint of step 5")):
        with pytest.raises(CheckpointError, match=reason):
            ckpt.load_checkpoint(*args, step=step)


def test_single_checkpoint_layout_of_earlier_versions_resumes(tmp_path, lm_reference):
    out = tmp_path / "run"
    fit_lm(out, max_steps=5)
    newest = out / "checkpoints" / "step-00000005"
    for name in ("model.safetensors", "train_state.pt"):
        shutil.move(newest / name, out / name)
    shutil.rmtree(out / "checkpoints")
    resumed = fit_lm(out)
    assert resumed.step == 8
    assert_same(dict(resumed.lm.state_dict()), lm_reference)
    assert not (out / "train_state.pt").exists()  # pruned like any older checkpoint once two newer ones exist


# --- item 3: interrupted saves leave no temporaries --------------------------------------------------------------

def test_interrupt_during_save_leaves_no_temporaries(tmp_path, lm_reference, monkeypatch):
    out = tmp_path / "run"
    fit_lm(out, max_steps=4)
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, which the CLI turns into one) right after the write

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_lm(out, max_steps=2)
    monkeypatch.undo()
    assert leftovers(out) == []
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert_same(dict(fit_lm(out).lm.state_dict()), lm_reference)


def test_full_disk_during_save_is_a_one_line_error_and_keeps_the_checkpoint(tmp_path, lm_reference, monkeypatch):
    out = tmp_path / "run"
    fit_lm(out, max_steps=4)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="cannot write the checkpoint of step 6.*previous checkpoint is kept"):
        fit_lm(out, max_steps=2)
    monkeypatch.undo()
    assert leftovers(out) == []
    assert_same(dict(fit_lm(out).lm.state_dict()), lm_reference)


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path, lm_reference):
    out = tmp_path / "run"
    fit_lm(out, max_steps=4)
    # What kill -9 leaves: a half-written checkpoint folder, and the per-file temporaries of the previous writer.
    partial = out / "checkpoints" / ".step-00000006.tmp-0123456789ab"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)
    (out / ".model.safetensors.k2j3h4_x.tmp").write_bytes(b"\0" * 100)
    (out / ".train_state.pt.abc12345.tmp").write_bytes(b"")
    (out / "notes.tmp").write_text("not ours")
    assert_same(dict(fit_lm(out).lm.state_dict()), lm_reference)
    assert leftovers(out) == [] and (out / "notes.tmp").exists()


def test_sigterm_during_a_cli_save_cleans_up(lm_corpus, tmp_path, monkeypatch, capsys):
    manifest, codec = lm_corpus
    out = tmp_path / "cli"
    args = ["train", "lm", "--set", f"manifest={manifest}", "--set", f"codec={codec}", "--set",
            f"train.output_dir={out}", "--set", "segment_duration=1.0", "--set", "train.batch_size=2",
            "--set", "train.total_steps=4", "--set", "train.checkpoint_every=2", *sum((["--set", o] for o in TINY), [])]
    assert main([*args, "--max-steps", "2"]) == 0
    real_save = torch.save

    def terminated(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(torch, "save", terminated)
    assert main(args) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert leftovers(out) == []
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    capsys.readouterr()
    assert main(args) == 0 and (out / "final" / "model.safetensors").exists()


# --- item 1: non-finite inputs, losses and weights ---------------------------------------------------------------

def test_non_finite_loss_stops_lm_training_and_keeps_the_last_checkpoint(tmp_path, lm_reference):
    out = tmp_path / "run"

    def poisoned(step: int):
        codes, cond = batch_at(step)
        if step == 4:  # the fifth step
            cond.cross_src[0, 0, 0] = math.inf
        return codes, cond

    with pytest.raises(WavecraftError, match=r"step 5: training diverged \(loss nan") as info:
        fit_lm(out, batches=poisoned)
    assert "\n" not in str(info.value) and "step 4" in str(info.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert not (out / "final").exists()
    assert_same(dict(fit_lm(out).lm.state_dict()), lm_reference)  # the data fixed, the run resumes as if nothing


def test_non_finite_weights_are_never_saved_or_exported(tmp_path):
    solver = LMSolver(make_lm(), lm_cfg(tmp_path / "run"))
    with torch.no_grad():
        next(solver.lm.parameters())[0, 0] = math.nan
    with pytest.raises(CheckpointError, match="refusing to save"):
        solver.save()
    assert not (tmp_path / "run" / "checkpoints" / "step-00000000").exists()

    codec_solver = CodecSolver(make_codec(), CodecTrainConfig(codec=CODEC, total_steps=1,
                                                              output_dir=str(tmp_path / "codec")))
    codec_solver.step = 1
    with torch.no_grad():
        next(codec_solver.model.parameters())[0] = math.inf
    with pytest.raises(WavecraftError, match="refusing to export"):
        codec_solver.fit(lambda step: torch.zeros(2, 1, 4000), resume=False)
    assert not (tmp_path / "codec" / "final").exists()


def make_codec() -> EnCodec:
    torch.manual_seed(0)
    return EnCodec(CODEC)


@pytest.fixture(scope="module")
def codec_manifest(tmp_path_factory) -> Path:
    """Three good sine files and one float wav holding NaNs, listed in a manifest."""
    root = tmp_path_factory.mktemp("codec_audio")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        t = np.arange(16000) / 16000
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t).astype(np.float32)
        if i == 2:
            wav[::50] = np.nan
        sf.write(root / f"tone{i}.wav", wav, 16000, subtype="FLOAT")
        lines.append(json.dumps({"path": str(root / f"tone{i}.wav"), "duration": 1.0, "sample_rate": 16000}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl"


def codec_cfg(manifest: Path, out: Path, **changes) -> CodecTrainConfig:
    base = CodecTrainConfig(manifest=str(manifest), codec=CODEC, segment_duration=0.25, batch_size=2, lr=3e-3,
                            total_steps=4, log_every=1, checkpoint_every=2, output_dir=str(out))
    return dataclasses.replace(base, **changes)


def test_nan_wav_is_skipped_in_codec_training(codec_manifest, tmp_path, caplog):
    cfg = codec_cfg(codec_manifest, tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        CodecSolver(make_codec(), cfg).fit(batches_from_manifest(cfg))
    assert "tone2.wav" in caplog.text and "NaN" in caplog.text
    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in final.values())
    assert all(math.isfinite(m["loss"]) for m in metrics(tmp_path / "run"))


def test_non_finite_loss_stops_codec_training(codec_manifest, tmp_path):
    cfg = codec_cfg(codec_manifest, tmp_path / "run")
    good = batches_from_manifest(cfg)

    def poisoned(step: int) -> torch.Tensor:
        wav = good(step)
        if step == 2:
            wav[0, 0, 0] = math.nan
        return wav

    with pytest.raises(WavecraftError, match=r"step 3: training diverged") as info:
        CodecSolver(make_codec(), cfg).fit(poisoned)
    assert "\n" not in str(info.value)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (tmp_path / "run" / "final").exists()


# --- item 4: every stopping point resumes bit-exactly -----------------------------------------------------------

@pytest.fixture(scope="module")
def codec_reference(codec_manifest, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Weights (and RVQ buffers) after an uninterrupted tiny codec run."""
    cfg = codec_cfg(codec_manifest, tmp_path_factory.mktemp("codec_whole") / "run")
    whole = CodecSolver(make_codec(), cfg)
    whole.fit(batches_from_manifest(cfg))
    return dict(whole.model.state_dict())


@pytest.mark.parametrize("stop", range(1, 4))
def test_codec_resume_is_bit_exact_at_every_step(codec_manifest, codec_reference, tmp_path, stop):
    cfg = codec_cfg(codec_manifest, tmp_path / "split")
    CodecSolver(make_codec(), cfg).fit(batches_from_manifest(cfg), max_steps=stop)
    torch.manual_seed(123)
    resumed = CodecSolver(EnCodec(CODEC), cfg)
    resumed.fit(batches_from_manifest(cfg))
    assert_same(dict(resumed.model.state_dict()), codec_reference)


TINY = ["lm.dim=32", "lm.num_heads=2", "lm.num_layers=2"]
STEPS = 8


@pytest.fixture(scope="module")
def lm_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random codec and four captioned tone clips (as in test_train_lm_run)."""
    root = tmp_path_factory.mktemp("lm_corpus")
    torch.manual_seed(0)
    EnCodec(CodecConfig(sample_rate=RATE, n_filters=4, dimension=16, ratios=(8, 5, 4), lstm_layers=1, n_q=2,
                        bins=32)).save_pretrained(root / "codec")
    lines = []
    for i, (freq, caption) in enumerate([(220, "a low hum"), (1760, "a high whistle"), (330, "a low drone"),
                                         (1320, "a bright beep")]):
        t = np.arange(2 * RATE) / RATE
        sf.write(root / f"clip{i}.wav", 0.5 * np.sin(2 * math.pi * freq * t), RATE)
        lines.append(json.dumps({"path": f"clip{i}.wav", "duration": 2.0, "sample_rate": RATE,
                                 "description": caption}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl", root / "codec"


def run_cfg(corpus: tuple[Path, Path], out: Path, *extra: str) -> LMRunConfig:
    manifest, codec = corpus
    return load_config(LMRunConfig, None, [
        f"manifest={manifest}", f"codec={codec}", f"train.output_dir={out}", "segment_duration=1.0",
        "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=5", "train.log_every=5",
        "train.checkpoint_every=4", f"train.total_steps={STEPS}", *TINY, *extra])


@pytest.fixture(scope="module")
def lm_run_reference(lm_corpus, tmp_path_factory) -> dict[str, torch.Tensor]:
    final = train_lm(run_cfg(lm_corpus, tmp_path_factory.mktemp("whole") / "run"))
    return load_file(str(final / "model.safetensors"))


@pytest.mark.parametrize("stop", range(1, STEPS))
def test_lm_run_resume_is_bit_exact_at_every_step(lm_corpus, lm_run_reference, tmp_path, stop):
    """The sentence encoder caches caption embeddings; when a caption was first encoded inside a padded batch, its
    embedding depended on the step that first saw it, and a resumed run drifted (stops 4 and 7 here)."""
    cfg = run_cfg(lm_corpus, tmp_path / "run")
    assert train_lm(cfg, max_steps=stop) is None
    final = train_lm(cfg)
    assert_same(load_file(str(final / "model.safetensors")), lm_run_reference)


def test_nan_wav_is_skipped_in_lm_training(lm_corpus, tmp_path, caplog):
    manifest, codec = lm_corpus
    wav = (0.3 * np.sin(np.arange(2 * RATE) / RATE * 2 * math.pi * 440)).astype(np.float32)
    wav[::100] = np.nan  # every segment of it holds some
    sf.write(tmp_path / "nan.wav", wav, RATE, subtype="FLOAT")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in records:
        r["path"] = str(manifest.parent / r["path"])
    records.append({"path": str(tmp_path / "nan.wav"), "duration": 2.0, "sample_rate": RATE,
                    "description": "broken"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for mode in ("memory", "on_the_fly"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            final = train_lm(run_cfg((bad, codec), tmp_path / mode, f"codes={mode}", "train.total_steps=3",
                                     "segment_duration=0.5"))
        assert "nan.wav" in caplog.text, mode
        assert all(torch.isfinite(v).all() for v in load_file(str(final / "model.safetensors")).values())
