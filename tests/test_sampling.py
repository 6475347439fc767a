"""Next-token selection (wavecraft.lm.sampling)."""

from __future__ import annotations

import pytest
import torch

from wavecraft.lm.sampling import multinomial, sample_next_token, sample_top_k, sample_top_p

PROBS = torch.tensor([0.1, 0.4, 0.2, 0.3])
N = 20000


def _draws(fn, *args, seed: int = 0, **kwargs) -> torch.Tensor:
    """``N`` draws from ``PROBS`` in one batched call -> counts per token ``[4]``."""
    gen = torch.Generator().manual_seed(seed)
    out = fn(PROBS.expand(N, 4), *args, generator=gen, **kwargs)
    assert out.shape == (N, 1) and out.dtype == torch.long
    return torch.bincount(out.flatten(), minlength=4)


def test_multinomial_shapes_and_frequencies():
    gen = torch.Generator().manual_seed(0)
    assert multinomial(PROBS.expand(2, 3, 4), num_samples=2, generator=gen).shape == (2, 3, 2)
    freq = _draws(multinomial).float() / N
    assert torch.allclose(freq, PROBS, atol=0.015)


def test_top_k_keeps_k_largest():
    counts = _draws(sample_top_k, 2)
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1] / N - 0.4 / 0.7) < 0.015 and abs(counts[3] / N - 0.3 / 0.7) < 0.015
    assert _draws(sample_top_k, 1).tolist() == [0, N, 0, 0]
    assert (_draws(sample_top_k, 10) > 0).all()  # k > V keeps everything


def test_top_k_keeps_ties():
    gen = torch.Generator().manual_seed(0)
    out = sample_top_k(torch.tensor([0.3, 0.3, 0.1, 0.3]).expand(N, 4), 2, generator=gen)
    assert set(out.flatten().tolist()) == {0, 1, 3}


def test_top_p_nucleus():
    # Mass before each sorted token: 1 -> 0.0, 3 -> 0.4, 2 -> 0.7, 0 -> 0.9.
    counts = _draws(sample_top_p, 0.5)
    assert counts[0] == 0 and counts[2] == 0
    assert abs(counts[1] / N - 0.4 / 0.7) < 0.015
    assert _draws(sample_top_p, 0.35).tolist() == [0, N, 0, 0]
    assert (_draws(sample_top_p, 1.0) > 0).all()


def test_sample_next_token_modes():
    logits = PROBS.log().expand(N, 4)
    gen = torch.Generator().manual_seed(0)
    # top_p wins over top_k: top_k=1 alone would only ever give token 1.
    out = sample_next_token(logits, top_k=1, top_p=0.5, generator=gen)
    assert set(out.flatten().tolist()) == {1, 3}
    out = sample_next_token(logits, top_k=2, generator=gen)
    assert set(out.flatten().tolist()) == {1, 3}
    out = sample_next_token(logits, generator=gen)
    assert set(out.flatten().tolist()) == {0, 1, 2, 3}


def test_greedy_equals_argmax():
    logits = torch.randn(2, 4, 50)
    expected = logits.argmax(-1, keepdim=True)
    assert torch.equal(sample_next_token(logits, use_sampling=False, top_k=5), expected)
    assert torch.equal(sample_next_token(logits, temperature=0.0, top_p=0.9), expected)


def test_temperature():
    logits = torch.randn(8, 100)
    gen = torch.Generator().manual_seed(0)
    cold = torch.stack([sample_next_token(logits, temperature=1e-3, generator=gen) for _ in range(20)])
    assert (cold == logits.argmax(-1, keepdim=True)).all()
    # Two tokens with logits [0, 2]: token 1 is drawn with probability sigmoid(2 / temperature).
    logits = torch.tensor([0.0, 2.0]).expand(N, 2)
    for temperature in (0.5, 1.0, 4.0, 100.0):
        freq = sample_next_token(logits, temperature=temperature, generator=gen).float().mean()
        assert abs(freq - torch.sigmoid(torch.tensor(2.0 / temperature))) < 0.015

def test_seeded_reproducibility_and_batch_shape():
    logits = torch.randn(3, 4, 64)
    runs = [sample_next_token(logits, temperature=1.5, top_k=10, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert runs[0].shape == (3, 4, 1) and torch.equal(runs[0], runs[1])
    for kwargs in ({}, {"top_p": 0.8}, {"top_k": 5}, {"use_sampling": False}):
        out = sample_next_token(logits, generator=torch.Generator().manual_seed(1), **kwargs)
        assert out.shape == (3, 4, 1) and out.dtype == torch.long
        assert ((out >= 0) & (out < 64)).all()


@pytest.mark.parametrize("kwargs", [{"temperature": -1.0}, {"top_p": 1.5}, {"top_p": -0.1}, {"top_k": -1}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_next_token(torch.randn(2, 8), **kwargs)
    with pytest.raises(ValueError):
        sample_top_k(PROBS, 0)
