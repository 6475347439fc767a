"""Data-parallel LM training: two gloo ranks under torchrun match one process on the same global batch."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch.testing import assert_close

from ddp_launch import run_worker, torchrun
from wavecraft.lm.generate import Conditions
from wavecraft.train.distributed import init_from_env, is_main, shard


def test_two_gloo_ranks_match_one_process(tmp_path):
    run_worker([sys.executable], tmp_path / "single.pt", tmp_path / "single")
    run_worker(torchrun(), tmp_path / "ddp.pt", tmp_path / "ddp")

    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert single["step"] == ddp["step"] == 8
    assert single["model"].keys() == ddp["model"].keys()
    for name, value in single["model"].items():
        assert_close(ddp["model"][name], value, atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    # Logged losses are means over ranks, so the metrics equal the single-process ones (one line per step).
    logs = [json.loads(line) for line in (tmp_path / "ddp/metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, 9))
    for got, want in zip(logs, reference, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_shard_splits_tensors_and_conditions():
    codes = torch.arange(8).view(4, 2)
    cond = Conditions(cross_src=torch.arange(4.0)[:, None], cross_mask=torch.ones(4, 1))
    parts = [shard((codes, cond), rank, 2) for rank in range(2)]
    assert_close(torch.cat([c for c, _ in parts]), codes)
    assert_close(parts[1][1].cross_src, torch.tensor([[2.0], [3.0]]))
    assert parts[0][1].prefix is None
    assert shard(codes, 0, 1) is codes
    with pytest.raises(ValueError, match="does not split evenly"):
        shard(codes, 0, 3)


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env() == (0, 1)
    assert is_main()
