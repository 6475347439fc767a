"""Packed-weight linear layers: same results as F.linear, refreshed when weights change, off switch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wavecraft.lm import linear as fast


def test_matches_f_linear_for_any_rows():
    weight = torch.randn(96, 32)
    bias = torch.randn(96)
    with torch.inference_mode():
        for shape in [(2, 1, 32), (1, 32), (3, 7, 32)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(fast.linear(x, weight, bias), F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast.linear(x, weight, rows=(32, 64)), F.linear(x, weight[32:64]),
                                       atol=1e-5, rtol=1e-5)


def test_repacks_after_in_place_update():
    weight = torch.nn.Parameter(torch.randn(16, 8))
    x = torch.randn(2, 8)
    with torch.inference_mode():
        fast.linear(x, weight)
    with torch.no_grad():
        weight.mul_(2)
    with torch.inference_mode():
        torch.testing.assert_close(fast.linear(x, weight), F.linear(x, weight), atol=1e-5, rtol=1e-5)


def test_gradients_and_switch():
    weight = torch.randn(16, 8, requires_grad=True)
    x = torch.randn(2, 8)
    fast.linear(x, weight).sum().backward()  # grad mode: plain F.linear, differentiable
    assert weight.grad is not None
    was = fast.is_enabled()
    try:
        fast.set_enabled(False)
        with torch.inference_mode():
            assert torch.equal(fast.linear(x, weight), F.linear(x, weight))
    finally:
        fast.set_enabled(was)
