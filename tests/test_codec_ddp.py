"""Data-parallel codec training: two gloo ranks under torchrun match one process on the same global batch.

The run (see ``codec_main`` in ddp_worker.py) has the discriminator, the balancer, quantizer dropout and
validation on, and resumes half-way, so it covers DDP gradients, the discriminator's averaged gradients, the
EMA codebook statistics summed over ranks, k-means initialisation and dead-code replacement on gathered latents,
and the balancer's norms averaged over ranks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from ddp_launch import run_worker, torchrun
from wavecraft.codec import EnCodec
from wavecraft.train.codec_losses import multiscale_mel_loss
from wavecraft.train.codec_solver import CodecSolver, CodecTrainConfig
from wavecraft.train.distributed import shard


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_ranks_match_one_process(tmp_path):
    run_worker([sys.executable], tmp_path / "single.pt", tmp_path / "single", "codec")
    run_worker(torchrun(), tmp_path / "ddp.pt", tmp_path / "ddp", "codec")

    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert single["step"] == ddp["step"] == 6
    for part in ("model", "discriminator"):
        assert single[part].keys() == ddp[part].keys()
        for name, value in single[part].items():  # parameters and the RVQ's EMA codebook buffers alike
            # Relative to each tensor's scale: float rounding of sums split over ranks, amplified a little by Adam.
            error = float((ddp[part][name] - value).abs().max())
            assert error <= 1e-4 * float(value.abs().max()) + 1e-7, f"{name}: max difference {error}"
    assert any(name.endswith("_codebook.embed") for name in single["model"])
    assert_close(ddp["balancer"], single["balancer"], atol=1e-5, rtol=1e-4)
    # Logged values are means over ranks, so the metrics equal the single-process ones (one line per step).
    logs, reference = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single")
    assert [r["step"] for r in logs] == list(range(1, 7))
    assert any("d_loss" in r for r in logs) and all("valid_mel" in r for r in logs[1::2])
    for got, want in zip(logs, reference, strict=True):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_mel_loss_of_shards_matches_global_batch():
    """The mel loss left out of the torchrun run: means over equal shards give the global loss and gradients."""
    torch.manual_seed(0)
    wav, target = torch.randn(4, 1, 3000), torch.randn(4, 1, 3000)
    pred = wav.clone().requires_grad_()
    multiscale_mel_loss(pred, target, 16000).backward()
    total = torch.zeros(())
    shard_grads = []
    for rank in range(2):
        part = shard(wav, rank, 2).clone().requires_grad_()
        loss = multiscale_mel_loss(part, shard(target, rank, 2), 16000)
        loss.backward()
        total = total + loss.detach() / 2
        shard_grads.append(part.grad / 2)  # what DDP's average over two ranks makes of it
    assert_close(torch.cat(shard_grads), pred.grad, atol=1e-7, rtol=1e-5)
    assert_close(total, multiscale_mel_loss(wav, target, 16000))


def test_batch_must_split_over_ranks(monkeypatch):
    monkeypatch.setattr("wavecraft.train.codec_solver.rank_and_world_size", lambda: (0, 3))
    from wavecraft.errors import WavecraftError

    with pytest.raises(WavecraftError, match="does not split"):
        CodecSolver(EnCodec(CodecTrainConfig().codec), CodecTrainConfig(batch_size=8))
