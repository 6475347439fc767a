"""The native decoding step (``decode.c`` through :mod:`wavecraft.lm.native_step`): the same logits and cache as
the PyTorch layers for every layer option, fp32 and int8 weights, and the PyTorch layers wherever it does not
apply."""

from __future__ import annotations

import shutil

import pytest
import torch

from wavecraft.lm import linear as fast
from wavecraft.lm import native, native_step
from wavecraft.lm.config import LMConfig
from wavecraft.lm.model import LMModel
from wavecraft.lm.quantize import quantize_int8

pytestmark = pytest.mark.skipif(
    not (native._cpu_supported() and native._torch_uses_libgomp() and (shutil.which("cc") or shutil.which("gcc"))),
    reason="needs a C compiler, an AVX2/FMA x86-64 CPU and torch on libgomp")


def random_lm(**options) -> LMModel:
    torch.manual_seed(0)
    lm = LMModel(LMConfig(**{"dim": 64, "num_heads": 4, "num_layers": 2, "card": 48, **options})).eval()
    with torch.no_grad():
        for p in lm.parameters():
            if p.dim() == 1:  # norms and biases away from their 1 / 0 init, so that a missed one shows
                p.normal_(0.5, 0.2)
    return lm


def decode(lm: LMModel, rows: int, enabled: bool, cross_mask: torch.Tensor | None = None, steps: int = 6,
           cross_len: int = 5):
    """Prefill 3 positions, then ``steps`` one-position steps, a 2-position chunk and one more step."""
    torch.manual_seed(1)
    cross = torch.randn(rows, cross_len, lm.cfg.dim) if lm.cfg.cross_attention else None
    was = fast.is_enabled()
    fast.set_enabled(enabled)
    try:
        with torch.inference_mode():
            state = lm.new_state(rows, 3 + steps + 3, cross, cross_mask)
            lm.step(torch.randint(0, lm.cfg.card, (rows, lm.cfg.n_q, 3)), state)
            logits = [lm.step(torch.randint(0, lm.cfg.card, (rows, lm.cfg.n_q, 1)), state) for _ in range(steps)]
            logits.append(lm.step(torch.randint(0, lm.cfg.card, (rows, lm.cfg.n_q, 2)), state)[:, :, -1:])
            logits.append(lm.step(torch.randint(0, lm.cfg.card, (rows, lm.cfg.n_q, 1)), state))
    finally:
        fast.set_enabled(was)
    return torch.cat(logits, dim=2), state


OPTIONS = [  # layer options the native step must follow (test_native_memory_safety.py runs them too)
    {},
    {"bias_attn": True, "bias_ff": True, "bias_proj": True, "cross_attention_mask": True},
    {"cross_attention": False},
    {"dim": 128, "num_heads": 2},  # head size 64, as every MusicGen: decode.c's register-resident attention
]
ROWS = [1, 2, 8]  # 1 and 2 take the few-row product tiles, 8 the other one


@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("rows", ROWS)
def test_same_logits_and_cache_as_the_pytorch_layers(options, rows, quantized, native_isa):
    """int8: the PyTorch layers multiply by the dequantized weights (quantize.int8_linear with fast=False). The
    kernels built for AVX2 and (where the CPU has it) AVX-512."""
    lm = random_lm(**options)
    mask = torch.ones(rows, 5, dtype=torch.long)
    mask[0, 3:] = 0  # padded text positions; with cross_attention_mask they are left out
    if quantized:
        fp32_logits, _ = decode(lm, rows, False, mask)
        quantize_int8(lm)
    native_logits, native_state = decode(lm, rows, True, mask)
    plain_logits, plain_state = decode(lm, rows, False, mask)
    assert native_state.native_plan is not None and plain_state.native_plan is None
    assert native_logits.shape == (rows, lm.cfg.n_q, 8, lm.cfg.card)
    torch.testing.assert_close(native_logits, plain_logits, atol=2e-5, rtol=1e-5)
    if quantized:  # the int8 weights were used: close to fp32, not equal
        assert 1e-4 < (native_logits - fp32_logits).abs().max() < 0.1 * fp32_logits.abs().max()
    assert native_state.pos == plain_state.pos
    written = slice(0, plain_state.pos)  # the caches are uninitialised beyond
    for native_keys, plain_keys in zip(native_state.keys + native_state.values, plain_state.keys + plain_state.values,
                                       strict=True):
        torch.testing.assert_close(native_keys[:, :, written], plain_keys[:, :, written], atol=2e-5, rtol=1e-5)


def test_condition_longer_than_the_generation():
    """A long text condition on a short generation: the attention scratch must hold the longer of the two."""
    lm = random_lm()
    native_logits, _ = decode(lm, 2, True, steps=2, cross_len=40)
    plain_logits, _ = decode(lm, 2, False, steps=2, cross_len=40)
    torch.testing.assert_close(native_logits, plain_logits, atol=2e-5, rtol=1e-5)


def test_position_outside_the_cache_or_wrong_rows_are_refused():
    lm = random_lm()
    with torch.inference_mode():
        state = lm.new_state(2, 4, torch.randn(2, 5, 64))
        lm.step(torch.zeros(2, lm.cfg.n_q, 1, dtype=torch.long), state)
        with pytest.raises(ValueError, match="outside"):
            state.native_plan(torch.zeros(2, 64), 4)
        with pytest.raises(ValueError, match="rows"):
            state.native_plan(torch.zeros(3, 64), 1)


def test_where_it_does_not_apply():
    lm = random_lm()
    seq = torch.zeros(2, lm.cfg.n_q, 1, dtype=torch.long)
    with torch.inference_mode():
        state = lm.new_state(2, 8, torch.randn(2, 5, 64))
        assert native_step.applies(lm, state, seq, None)
        assert not native_step.applies(lm, state, seq.expand(-1, -1, 2), None)  # a multi-position chunk
        assert not native_step.applies(lm, state, seq, torch.randn(2, 1, 64))  # a prefix
        fast.set_enabled(False)
        try:
            assert not native_step.applies(lm, state, seq, None)
        finally:
            fast.set_enabled(True)
    with torch.no_grad():
        assert native_step.applies(lm, state, seq, None)
    assert not native_step.applies(lm, state, seq, None)  # autograd on: training
    lm.half()
    with torch.inference_mode():
        assert not native_step.applies(lm, lm.new_state(2, 8, torch.randn(2, 5, 64).half()), seq, None)
