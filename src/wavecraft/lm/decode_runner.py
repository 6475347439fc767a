"""Incremental decoding of a :class:`~wavecraft.lm.transformer.TransformerLM`: the runner that picks a backend.

Each call of :func:`step` runs the next positions through the first backend that applies:

* the native step (:mod:`wavecraft.lm.native_step`): one position on CPU in fp32 (or int8) weights, the whole
  layer stack and the heads in one call of ``decode.c``;
* the compiled step (:func:`compile_step`): one position through ``torch.compile``-d PyTorch layers with static
  shapes, where the model was compiled (GPUs, half precision, no C compiler);
* the PyTorch layers (:meth:`TransformerLM.forward_cached`): everything else (prefill, multi-step chunks).

Int8 weights (:mod:`wavecraft.lm.quantize`) are tensors swapped into the model: every backend runs them. The
state the backends keep per generation rides on :class:`DecodeState`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

from . import native, native_step
from .transformer import KVCache, TransformerLM

#: ``(sequence [B, K, 1], state, pos [1], step [1]) -> logits [B, K, 1, card]``: see :func:`static_step`.
CompiledStep = Callable[[torch.Tensor, "DecodeState", torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DecodeState(KVCache):
    """A :class:`KVCache` plus what the backends keep for one generation."""

    native_plan: native_step.DecodePlan | None = None  # built on the first native step
    zero_filled: bool = False  # caches zeroed: the compiled step may read (masked) unwritten positions


def new_state(lm: TransformerLM, batch: int, max_len: int, cross_src: torch.Tensor | None = None,
              cross_mask: torch.Tensor | None = None, summed: torch.Tensor | None = None,
              compiled: bool = False) -> DecodeState:
    """A decode state for ``max_len`` positions (see :meth:`TransformerLM.new_cache`); ``compiled``: ready for the
    compiled step."""
    # Uninitialised where only written positions are read. Zero-filling the musicgen-small caches of a 10 s
    # clip (200 MB) took about 0.1 s before the first step, a tenth of the time to the first audio. The
    # compiled step reads (masked) the whole cache: it needs zeros, as garbage could be NaN.
    state = cast(DecodeState, lm.new_cache(batch, max_len, cross_src, cross_mask, summed, zeros=compiled,
                                           cache_type=DecodeState))
    if compiled:
        state.zero_filled = True
        for cache in state.keys + state.values:
            torch._dynamo.mark_static_address(cache)
    return state


def step(lm: TransformerLM, sequence: torch.Tensor, state: DecodeState, prefix: torch.Tensor | None = None,
         compiled: CompiledStep | None = None) -> torch.Tensor:
    """Run the next ``S`` steps incrementally: ``sequence [B, K, S] -> logits [B, K, S, card]``.

    ``prefix [B, P, D]`` (prepended conditions) goes in front on the first call; its positions are not
    returned. Positions continue from ``state.pos``. ``compiled``: the model's compiled step, if any.
    """
    if native_step.applies(lm, state, sequence, prefix):
        x = lm.cached_inputs(sequence, state, prefix)
        if state.native_plan is None:
            state.native_plan = native_step.DecodePlan(lm, state)
        logits = state.native_plan(x[:, 0], state.pos)
        state.pos += 1
        return logits.unsqueeze(2)
    if compiled is not None and state.zero_filled and prefix is None and sequence.shape[-1] == 1 and state.pos > 0:
        state.check_room(1)
        pos = torch.full((1,), state.pos, dtype=torch.long, device=sequence.device)
        seq_step = torch.full((1,), state.steps, dtype=torch.long, device=sequence.device)
        # A CUDA-graph replay returns its static output buffer, which the next replay overwrites: two-step CFG
        # calls twice before reading either result.
        logits = compiled(sequence, state, pos, seq_step).clone()
        state.pos += 1
        state.steps += 1
        return logits
    return lm.forward_cached(sequence, state, prefix)


def static_step(lm: TransformerLM, sequence: torch.Tensor, state: DecodeState, pos: torch.Tensor,
                seq_step: torch.Tensor) -> torch.Tensor:
    """One position, given as tensors: ``sequence [B, K, 1]`` at cache position ``pos [1]`` and sequence step
    ``seq_step [1]`` -> logits ``[B, K, 1, card]``. Reads nothing from ``state`` that changes between steps (the
    caller advances ``state.pos``/``steps``), so its compiled graph never needs recompiling within a generation
    (see :func:`compile_step`)."""
    x = lm.with_positions(lm.input_embedding(sequence, state.summed, seq_step), pos)
    x = lm.transformer(x.to(state.keys[0].dtype), state.cross, state.cross_mask, None, state, pos)
    return lm.heads(x)


def compile_step(lm: TransformerLM, mode: str | None = None) -> CompiledStep:
    """:func:`static_step` of ``lm`` through ``torch.compile`` (prefill and multi-step chunks stay eager).

    The position is a tensor and attention spans the whole cache, so every step of a generation has the same
    shapes and the same host-side inputs and one compiled graph serves them all (another cache length compiles
    once more, then with a symbolic length). That is what ``mode="reduce-overhead"`` needs to capture the step as
    a CUDA graph and replay it: the caches are marked static addresses (:func:`new_state`), so a replay writes
    them in place rather than copying them in. What compiling removes is per-step Python and kernel-launch
    overhead, which pays off on long or repeated generations (the first one pays the compile time). On CPU,
    wherever the native step applies it runs instead (it has no such overhead left and was faster than any
    compiled step measured); the compiled step serves the rest (GPUs, half precision, no C compiler). See
    ``benchmarks/bench_generate.py --compile``.
    """
    native.available()  # build the native kernel now: tracing would break the graph at its build

    def compiled_step(sequence: torch.Tensor, state: DecodeState, pos: torch.Tensor, seq_step: torch.Tensor
                      ) -> torch.Tensor:
        return static_step(lm, sequence, state, pos, seq_step)

    return torch.compile(compiled_step, mode=mode)
