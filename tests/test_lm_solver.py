"""LM solver: learning, exact resumption, config parsing and weights-only checkpoints."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file

from wavecraft.errors import WavecraftError
from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions
from wavecraft.lm.model import LMModel
from wavecraft.train.config import LMTrainConfig, config_to_dict, load_config
from wavecraft.train.lm_solver import LMSolver

CFG = LMConfig(dim=32, num_heads=2, num_layers=2, card=16, n_q=4)


def make_lm() -> LMModel:
    torch.manual_seed(0)
    return LMModel(CFG)


def null_condition(cond: Conditions) -> Conditions:
    return Conditions(cross_src=torch.zeros_like(cond.cross_src), cross_mask=torch.zeros_like(cond.cross_mask))


def batch_at(step: int) -> tuple[torch.Tensor, Conditions]:
    """Batch of a global step: a fresh generator per step makes it reproducible in any order."""
    g = torch.Generator().manual_seed(1000 + step)
    codes = torch.randint(0, 16, (4, 4, 8), generator=g)
    cond = Conditions(cross_src=torch.randn(4, 3, 32, generator=g), cross_mask=torch.ones(4, 3, dtype=torch.long))
    return codes, cond


def train_cfg(tmp_path, **changes) -> LMTrainConfig:
    base = LMTrainConfig(lr=3e-3, warmup_steps=5, total_steps=60, cfg_dropout=0.3, ema_decay=0.9, log_every=5,
                         checkpoint_every=20, output_dir=str(tmp_path / "run"))
    return dataclasses.replace(base, **changes)


def test_loss_goes_down_on_fixed_data(tmp_path):
    lm = make_lm()
    solver = LMSolver(lm, train_cfg(tmp_path, total_steps=100, cfg_dropout=0.0, ema_decay=None))
    codes, cond = batch_at(0)
    losses = [solver.train_step(codes, cond)["loss"] for _ in range(100)]
    assert losses[-1] < 0.5 * losses[0]
    metrics = solver.train_step(codes, cond)
    assert {"loss", "lr", "grad_norm", "ce_q0", "ce_q3"} <= set(metrics)


def test_resume_is_exact(tmp_path):
    full = LMSolver(make_lm(), train_cfg(tmp_path / "a"), null_condition)
    full.fit(batch_at)

    cfg = train_cfg(tmp_path / "b")
    first = LMSolver(make_lm(), cfg, null_condition)
    first.fit(batch_at, max_steps=30)
    assert first.step == 30
    torch.manual_seed(123)  # the new process's global RNG differs; the checkpoint must restore it
    second = LMSolver(make_lm(), cfg, null_condition)
    second.fit(batch_at)
    assert second.step == 60

    for name, value in full.lm.state_dict().items():
        torch.testing.assert_close(second.lm.state_dict()[name], value, atol=1e-6, rtol=0)
    for name, value in full.ema.state_dict().items():
        torch.testing.assert_close(second.ema.state_dict()[name], value, atol=1e-6, rtol=0)
    logs = [json.loads(line) for line in (tmp_path / "b/run/metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "a/run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(5, 61, 5))
    assert [r["loss"] for r in logs] == pytest.approx([r["loss"] for r in reference], abs=1e-6)


def test_resume_drops_log_lines_past_the_checkpoint(tmp_path):
    """A crash after logging but before checkpointing must not duplicate those steps on resume."""
    cfg = train_cfg(tmp_path, total_steps=30, ema_decay=None)

    def crashing(step: int):
        if step == 25:
            raise KeyboardInterrupt
        return batch_at(step)

    with pytest.raises(KeyboardInterrupt):
        LMSolver(make_lm(), cfg).fit(crashing)  # checkpoint at 20, logs up to 25
    LMSolver(make_lm(), cfg).fit(batch_at)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_checkpoint_files_load_weights_only(tmp_path):
    solver = LMSolver(make_lm(), train_cfg(tmp_path, total_steps=3, checkpoint_every=1))
    solver.fit(batch_at)
    folder = tmp_path / "run/checkpoints/step-00000003"
    state = torch.load(folder / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and "ema" in state["extra"]
    assert set(load_file(folder / "model.safetensors")) == set(solver.lm.state_dict())
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"config.yaml", "checkpoints"}
    # The newest checkpoint and the previous one, and no temporaries left.
    assert {p.name for p in (tmp_path / "run/checkpoints").iterdir()} == {"step-00000002", "step-00000003"}
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "train_state.pt", "checkpoint.json"}


@dataclass(frozen=True)
class Nested:
    train: LMTrainConfig = field(default_factory=lambda: LMTrainConfig(lr=0.5))
    lm: LMConfig = field(default_factory=LMConfig)
    name: str = "x"


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  total_steps: 50\n  betas: [0.8, 0.9]\nlm:\n  dim: 64\n  num_heads: 2\n")
    cfg = load_config(Nested, path, ["train.lr=2", "train.ema_decay=0.99", "lm.delays=[0, 2, 4, 6]", "name=y"])
    assert cfg.train == LMTrainConfig(lr=2.0, total_steps=50, betas=(0.8, 0.9), ema_decay=0.99)
    assert isinstance(cfg.train.lr, float)  # ints are accepted for floats, and converted
    assert cfg.lm == LMConfig(dim=64, num_heads=2, delays=(0, 2, 4, 6)) and cfg.name == "y"
    assert load_config(Nested, None, []).train.lr == 0.5  # nested defaults from the default factory
    assert load_config(Nested, None, ["train.ema_decay=null"]).train.ema_decay is None
    assert load_config(LMTrainConfig, None, [f"{k}={json.dumps(v)}" for k, v in
                                             config_to_dict(LMTrainConfig(seed=3)).items()]) == LMTrainConfig(seed=3)


@pytest.mark.parametrize("yaml_text, overrides, message", [
    ("train:\n  lrr: 1\n", [], "'train.lrr'"),
    ("", ["lm.foo.bar=1"], "'lm.foo'"),
    ("", ["train.total_steps=1.5"], "'train.total_steps': expected int"),
    ("", ["train.betas=[0.9]"], "'train.betas'"),
    ("", ["train.ema_decay=yes"], "'train.ema_decay'"),
    ("lm: 3\n", [], "lm"),
    ("", ["lm.dim=30"], "not divisible"),
])
def test_config_errors_name_the_key(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    with pytest.raises(WavecraftError, match=message.replace("[", r"\[")):
        load_config(Nested, path, overrides)
