"""torch.compile-d one-step decoding gives the same greedy tokens as eager decoding (random weights, fp32); on CPU the
native step, where it applies, takes precedence over it."""

from __future__ import annotations

import torch

from wavecraft.lm import native
from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions, SamplingParams, generate
from wavecraft.lm.model import LMModel
from wavecraft.lm.quantize import quantize_int8


def test_compiled_int8_decoding_matches_eager(native_off):
    """int8 weights under torch.compile (where the native step cannot run): the int8 products run eagerly inside
    the compiled step, with the same greedy tokens."""
    lm, cond, null = tiny_lm_and_conditions()
    quantize_int8(lm)
    greedy = SamplingParams(use_sampling=False)
    eager = generate(lm, cond, 16, null=null, sampling=greedy)
    calls = compile_counting(lm)
    assert torch.equal(generate(lm, cond, 16, null=null, sampling=greedy), eager) and len(calls) >= 15


def test_compiled_decoding_matches_eager_greedy_tokens(monkeypatch):
    monkeypatch.setenv("WAVECRAFT_NATIVE", "0")  # the native step would take every one-position step
    native.reset()
    try:
        check_compiled_decoding(expect_compiled=True)
    finally:
        monkeypatch.undo()
        native.reset()
    if native.available():
        check_compiled_decoding(expect_compiled=False)


def check_compiled_decoding(expect_compiled: bool) -> None:
    lm, cond, null = tiny_lm_and_conditions(summed=True)
    greedy = SamplingParams(use_sampling=False)
    eager = generate(lm, cond, 24, null=null, sampling=greedy)
    torch._dynamo.reset()  # other tests compiled the same step function for other models
    calls = compile_counting(lm)
    # One graph serves every step of a generation and the next one of the same length (a new decode state):
    # nothing the compiled step sees changes from step to step, which CUDA-graph replay needs.
    with torch._dynamo.config.patch(error_on_recompile=True, automatic_dynamic_shapes=False):
        assert torch.equal(generate(lm, cond, 24, null=null, sampling=greedy), eager)
        assert torch.equal(generate(lm, cond, 24, null=null, sampling=greedy), eager)
    if expect_compiled:
        assert len(calls) >= 2 * 24  # every step after the first went through the compiled function
    else:
        assert not calls
    # A second generation (new decode state, another length) reuses the compiled code and still agrees.
    reference = LMModel(lm.cfg).eval()
    reference.load_state_dict(lm.state_dict())
    assert torch.equal(generate(lm, cond, 16, null=null, sampling=greedy),
                       generate(reference, cond, 16, null=null, sampling=greedy))


def tiny_lm_and_conditions(summed: bool = False) -> tuple[LMModel, Conditions, Conditions]:
    """A random 2-layer LM with cross-attention, a text condition and its null (CFG) condition; ``summed`` adds a
    summed condition (as a melody chroma)."""
    torch.manual_seed(0)
    lm = LMModel(LMConfig(dim=64, num_heads=4, num_layers=2, card=64, n_q=4, delays=(0, 1, 2, 3),
                          cross_attention=True)).eval()
    cond = Conditions(cross_src=torch.randn(2, 3, 64), cross_mask=torch.ones(2, 3, dtype=torch.long),
                      summed=torch.randn(2, 20, 64) if summed else None)
    null = Conditions(cross_src=torch.zeros(2, 3, 64), cross_mask=torch.zeros(2, 3, dtype=torch.long),
                      summed=torch.zeros(2, 20, 64) if summed else None)
    return lm, cond, null


def compile_counting(lm: LMModel) -> list:
    """Compile ``lm``'s decoding; the returned list grows by one per call of the compiled step."""
    lm.compile_decoding()
    calls: list = []
    compiled = lm._compiled_step
    lm._compiled_step = lambda *args: calls.append(1) or compiled(*args)
    return calls
