"""Codebook interleaving patterns (wavecraft.lm.patterns)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_meta
from wavecraft.lm.patterns import (
    DelayedPatternProvider,
    ParallelPatternProvider,
    Pattern,
    UnrolledPatternProvider,
    get_pattern_provider,
)

S_ = -1  # special token in the hand-written tables below


def _codes(B: int, K: int, T: int) -> torch.Tensor:
    """Distinct codes ``[B, K, T]``: value ``b * 1000 + q * 100 + t``."""
    return torch.arange(B)[:, None, None] * 1000 + torch.arange(K)[None, :, None] * 100 + torch.arange(T)


def _step_of(pattern: Pattern) -> dict[tuple[int, int], int]:
    return {coord: s for s, coords in enumerate(pattern.layout) for coord in coords}


PROVIDERS = [
    DelayedPatternProvider(4),
    DelayedPatternProvider(8, delays=[0, 0, 1, 1, 2, 2, 3, 3]),
    DelayedPatternProvider(3, delays=[1, 0, 4], flatten_first=2, empty_initial=2),
    ParallelPatternProvider(4),
    ParallelPatternProvider(4, empty_initial=False),
    UnrolledPatternProvider(4),
    UnrolledPatternProvider(4, flattening=[0, 1, 1, 2], delays=[0, 0, 1, 2]),
]


def test_delay_layout_exact():
    pattern = DelayedPatternProvider(4).get_pattern(5)
    values, indexes, mask = pattern.build_pattern_sequence(_codes(1, 4, 5), special_token=S_)
    a, b, c, d = (q * 100 + torch.arange(5) for q in range(4))
    expected = torch.full((4, 9), S_)
    for q, row in enumerate([a, b, c, d]):
        expected[q, q + 1 : q + 6] = row
    assert pattern.num_sequence_steps == 9 and pattern.max_delay == 3
    assert torch.equal(values[0], expected)
    assert torch.equal(mask, expected != S_)
    assert torch.equal(indexes[mask], (torch.arange(4)[:, None] * 5 + torch.arange(5)).flatten())
    assert (indexes[~mask] == 4 * 5).all()


def test_stereo_delays():
    pattern = DelayedPatternProvider(8, delays=[0, 0, 1, 1, 2, 2, 3, 3]).get_pattern(6)
    values, _, mask = pattern.build_pattern_sequence(_codes(2, 8, 6), special_token=S_)
    assert values.shape == (2, 8, 10) and pattern.max_delay == 3
    for q in range(8):
        first = 1 + q // 2
        assert torch.equal(mask[q].nonzero().flatten(), torch.arange(first, first + 6))
        assert torch.equal(values[:, q, first : first + 6], _codes(2, 8, 6)[:, q])


@pytest.mark.parametrize("name", ["musicgen", "stereo"])
def test_delay_matches_audiocraft(golden, name):
    io = load_file(str(golden / name / "io.safetensors"))
    codes = io["fwd_codes"]
    config = golden_meta(golden, name)["config"]  # "codebooks_pattern": "delay [0,1,2,3]"; special token = card
    kind, _, delays = config["codebooks_pattern"].partition(" ")
    assert kind == "delay"
    pattern = DelayedPatternProvider(codes.shape[1], json.loads(delays)).get_pattern(codes.shape[-1])
    values, _, _ = pattern.build_pattern_sequence(codes, special_token=config.get("special_token_id", config["card"]))
    assert torch.equal(values, io["fwd_sequence"])


def test_first_step_with_timesteps():
    pattern = DelayedPatternProvider(4).get_pattern(20)
    assert pattern.get_first_step_with_timesteps(0) == 1
    for prompt_len in (1, 7, 19):
        assert pattern.get_first_step_with_timesteps(prompt_len) == prompt_len + 1
    assert pattern.get_first_step_with_timesteps(3, q=2) == 3 + 2 + 1
    assert pattern.get_steps_with_timestep(3) == [4, 5, 6, 7]
    assert pattern.get_sequence_coords_with_timestep(3, q=1) == [(5, (3, 1))]
    with pytest.raises(ValueError):
        pattern.get_first_step_with_timesteps(20)
    stereo = DelayedPatternProvider(8, delays=[0, 0, 1, 1, 2, 2, 3, 3]).get_pattern(20)
    assert stereo.get_first_step_with_timesteps(10) == 11
    assert ParallelPatternProvider(4, empty_initial=False).get_pattern(20).get_first_step_with_timesteps(10) == 10


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: f"{type(p).__name__}")
@pytest.mark.parametrize("T", [1, 2, 7, 31])
def test_round_trip(provider, T):
    pattern = provider.get_pattern(T)
    z = _codes(2, provider.n_q, T)
    seq, _, seq_mask = pattern.build_pattern_sequence(z, special_token=S_)
    assert seq.shape == (2, provider.n_q, pattern.num_sequence_steps)
    assert int(seq_mask.sum()) == provider.n_q * T  # every code placed exactly once
    out, _, mask = pattern.revert_pattern_sequence(seq, special_token=S_)
    assert mask.all() and torch.equal(out, z)

    # Valid steps only: the last max_delay steps go, and the timesteps they carried come back masked.
    valid, _, valid_mask = pattern.build_pattern_sequence(z, special_token=S_, keep_only_valid_steps=True)
    assert valid.shape[-1] == pattern.num_sequence_steps - pattern.max_delay == len(pattern.valid_layout)
    assert torch.equal(valid, seq[..., : valid.shape[-1]])
    out, _, mask = pattern.revert_pattern_sequence(valid, special_token=S_, keep_only_valid_steps=True)
    step_of = _step_of(pattern)
    expected_mask = torch.tensor([[step_of[(t, q)] < valid.shape[-1] for t in range(T)] for q in range(provider.n_q)])
    assert torch.equal(mask, expected_mask)
    assert torch.equal(out, torch.where(mask, z, S_))


def test_keep_only_valid_steps_delay():
    pattern = DelayedPatternProvider(4).get_pattern(10)
    seq, _, _ = pattern.build_pattern_sequence(_codes(1, 4, 10), special_token=S_, keep_only_valid_steps=True)
    assert seq.shape[-1] == 11  # T + 1: the leading special step + T steps
    _, _, mask = pattern.revert_pattern_sequence(seq, special_token=S_, keep_only_valid_steps=True)
    for q in range(4):  # codebook q loses its last q timesteps
        assert mask[q].sum() == 10 - q and mask[q, : 10 - q].all()


def test_revert_pattern_logits_alignment():
    for provider in PROVIDERS:
        pattern = provider.get_pattern(9)
        K, S, card = provider.n_q, pattern.num_sequence_steps, 3
        # logits[b, c, q, s] encodes (s, q, c) so we can read back where each value came from.
        logits = (torch.arange(S)[None, None, :] * 100 + torch.arange(K)[None, :, None] * 10
                  + torch.arange(card)[:, None, None]).float().expand(2, card, K, S)
        out, _, mask = pattern.revert_pattern_logits(logits, float("nan"))
        assert out.shape == (2, card, K, 9)
        shift = 1 if pattern.starts_with_special_token() else 0
        for (t, q), s in _step_of(pattern).items():
            assert mask[q, t] == (s - shift >= 0)
            if mask[q, t]:
                assert torch.equal(out[:, :, q, t], logits[:, :, q, s - shift])
        assert out[:, :, ~mask].isnan().all()


def test_revert_pattern_logits_delay_valid_steps():
    pattern = DelayedPatternProvider(4).get_pattern(6)
    logits = torch.arange(7.0).expand(1, 2, 4, 7)  # valid layout: T + 1 = 7 steps, value = step
    out, _, mask = pattern.revert_pattern_logits(logits, float("nan"), keep_only_valid_steps=True)
    for q in range(4):
        t = torch.arange(6 - q)
        assert mask[q].sum() == 6 - q
        assert torch.equal(out[0, 0, q, : 6 - q], (t + q).float())  # (t, q) sits at step t + q + 1
        assert out[0, :, q, 6 - q :].isnan().all()


def test_parallel_empty_initial():
    z = _codes(1, 3, 4)
    with_start = ParallelPatternProvider(3).get_pattern(4)
    seq, _, mask = with_start.build_pattern_sequence(z, special_token=S_)
    assert seq.shape[-1] == 5 and (seq[..., 0] == S_).all() and torch.equal(seq[..., 1:], z)
    assert not mask[:, 0].any() and mask[:, 1:].all()
    without = ParallelPatternProvider(3, empty_initial=False).get_pattern(4)
    seq, _, mask = without.build_pattern_sequence(z, special_token=S_)
    assert torch.equal(seq, z) and mask.all() and without.max_delay == 0
    # No start step: the model predicts each step in place (MAGNeT), so logits are not shifted.
    logits = torch.arange(4.0).expand(1, 2, 3, 4)
    out, _, mask = without.revert_pattern_logits(logits, float("nan"))
    assert mask.all() and torch.equal(out, logits)


def test_unrolled_layout():
    pattern = UnrolledPatternProvider(3).get_pattern(2)
    assert pattern.layout == [[], [(0, 0)], [(0, 1)], [(0, 2)], [(1, 0)], [(1, 1)], [(1, 2)]]
    grouped = UnrolledPatternProvider(3, flattening=[0, 1, 1], delays=[0, 1, 1]).get_pattern(2)
    assert grouped.layout == [[], [(0, 0)], [], [(1, 0)], [(0, 1), (0, 2)], [], [(1, 1), (1, 2)]]


def test_partial_sequence_and_shorter_codes():
    pattern = DelayedPatternProvider(4).get_pattern(8)
    seq, _, _ = pattern.build_pattern_sequence(_codes(1, 4, 8), special_token=S_)
    out, _, mask = pattern.revert_pattern_sequence(seq[..., :5], special_token=S_)  # steps 0..4 only
    assert torch.equal(mask.sum(-1), torch.tensor([4, 3, 2, 1]))
    short, _, mask = pattern.build_pattern_sequence(_codes(1, 4, 3), special_token=S_)
    assert short.shape[-1] == pattern.num_sequence_steps and int(mask.sum()) == 12


def test_long_sequences_are_cheap():
    provider = DelayedPatternProvider(8, delays=[0, 0, 1, 1, 2, 2, 3, 3])
    pattern = provider.get_pattern(1500)
    z = torch.randint(0, 2048, (2, 8, 1500))
    seq, _, _ = pattern.build_pattern_sequence(z, special_token=2048)
    assert torch.equal(pattern.revert_pattern_sequence(seq, special_token=2048)[0], z)
    assert pattern.get_first_step_with_timesteps(1000) == 1001


def test_factory_and_validation():
    assert isinstance(get_pattern_provider("delay", 4), DelayedPatternProvider)
    assert isinstance(get_pattern_provider("parallel", 4, empty_initial=False), ParallelPatternProvider)
    assert get_pattern_provider("unroll", 2, flattening=[0, 0]).get_pattern(3).num_sequence_steps == 4
    with pytest.raises(ValueError):
        get_pattern_provider("coarse_first", 4)
    with pytest.raises(ValueError):
        DelayedPatternProvider(4, delays=[0, 1])
    with pytest.raises(ValueError):
        Pattern([[], [(0, 0)], [(0, 0)]], timesteps=1, n_q=1)  # same coordinate twice
    with pytest.raises(ValueError):
        Pattern([[(1, 0)]], timesteps=1, n_q=1)  # timestep out of range
    with pytest.raises(ValueError):
        DelayedPatternProvider(4).get_pattern(5).build_pattern_sequence(_codes(1, 3, 5), special_token=S_)
