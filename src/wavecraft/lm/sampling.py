"""Next-token selection from logits: greedy, temperature, top-k and top-p (nucleus) sampling.

Semantics follow AudioCraft's: top-k keeps every token whose probability reaches the k-th largest (ties kept),
top-p keeps the smallest prefix of the sorted distribution whose mass reaches ``p`` (the crossing token included),
and ``top_p`` wins over ``top_k`` when both are set.
"""

from __future__ import annotations

import torch


def multinomial(probs: torch.Tensor, num_samples: int = 1, generator: torch.Generator | None = None,
                replacement: bool = False) -> torch.Tensor:
    """Draw from ``probs [..., V]`` (non-negative, need not sum to 1) -> indices ``[..., num_samples]``."""
    # torch.multinomial only takes 1-D or 2-D input.
    flat = probs.reshape(-1, probs.shape[-1])
    samples = torch.multinomial(flat, num_samples=num_samples, replacement=replacement, generator=generator)
    return samples.reshape(*probs.shape[:-1], num_samples)


def sample_top_k(probs: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``[..., 1]`` from ``probs [..., V]`` restricted to the tokens at or above the k-th largest."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1 for top-k sampling, got {k}")
    kth = torch.topk(probs, min(k, probs.shape[-1]), dim=-1).values[..., -1:]
    kept = probs * (probs >= kth)
    return multinomial(kept / kept.sum(dim=-1, keepdim=True), generator=generator)


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``[..., 1]`` from the nucleus of ``probs [..., V]``: the top tokens whose mass first reaches ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {p}")
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    # Mass strictly before each token: a token is dropped only once the tokens ahead of it already exceed p.
    sorted_probs = sorted_probs * (torch.cumsum(sorted_probs, dim=-1) - sorted_probs <= p)
    choice = multinomial(sorted_probs / sorted_probs.sum(dim=-1, keepdim=True), generator=generator)
    return torch.gather(order, -1, choice)


def sample_next_token(logits: torch.Tensor, use_sampling: bool = True, temperature: float = 1.0, top_k: int = 0,
                      top_p: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from ``logits [..., V]`` -> ``[..., 1]`` (long).

    Greedy argmax when ``use_sampling`` is False or ``temperature == 0``; otherwise sample from
    ``softmax(logits / temperature)``, restricted to the top-p nucleus if ``top_p > 0``, else to the top-k
    tokens if ``top_k > 0``, else unrestricted.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not use_sampling or temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p > 0.0:
        return sample_top_p(probs, top_p, generator=generator)
    if top_k > 0:
        return sample_top_k(probs, top_k, generator=generator)
    return multinomial(probs, generator=generator)
