"""Autoregressive generation over a codebook pattern, with classifier-free guidance.

One loop serves every mode: plain conditional, batched CFG (conditional and null rows in one batch of 2B), and
two-step CFG (two separate passes and caches per step). Each step feeds the newest pattern step(s) through the
static-cache LM, combines the logits, picks the next codes and writes them where the pattern has a free slot.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .model import DecodeState, LMModel
from .patterns import Pattern, get_pattern_provider
from .sampling import sample_next_token


@dataclass
class Conditions:
    """Condition tensors for one pass: ``prefix [B, P, D]``, ``cross_src [B, L, D]`` (+ ``cross_mask``) and/or
    ``summed [B, F, D]`` (per codec frame, added to the input)."""

    prefix: torch.Tensor | None = None
    cross_src: torch.Tensor | None = None
    cross_mask: torch.Tensor | None = None
    summed: torch.Tensor | None = None

    @staticmethod
    def cat(*parts: Conditions) -> Conditions:
        """Stack along the batch (conditional rows, then null rows) for batched CFG."""
        def stack(xs: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if any(x is None for x in xs) else torch.cat(xs, dim=0)  # type: ignore[arg-type]
        return Conditions(stack([p.prefix for p in parts]), stack([p.cross_src for p in parts]),
                          stack([p.cross_mask for p in parts]), stack([p.summed for p in parts]))

    @property
    def batch_size(self) -> int | None:
        present = next((t for t in (self.prefix, self.cross_src, self.summed) if t is not None), None)
        return None if present is None else present.shape[0]

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[1]


@dataclass
class SamplingParams:
    use_sampling: bool = True
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0


class _Pass:
    """One stream of forward passes with its own decode state (and prefix, fed on the first call only)."""

    def __init__(self, lm: LMModel, cond: Conditions, batch: int, steps: int) -> None:
        self.lm = lm
        self.prefix = cond.prefix
        self.state: DecodeState = lm.new_state(batch, steps + cond.prefix_len, cond.cross_src, cond.cross_mask,
                                                     cond.summed)

    def __call__(self, sequence: torch.Tensor) -> torch.Tensor:
        logits = self.lm.step(sequence, self.state, self.prefix)
        self.prefix = None
        return logits[:, :, -1]  # [B, K, card]: the prediction for the next step


class DecodedStep(NamedTuple):
    """What :func:`generate_steps` yields after each decoding step (read-only views: do not modify).

    ``sequence [B, K, S]`` is the pattern sequence being filled (``-1`` where nothing is decoded yet); steps
    ``<= offset`` are final. ``pattern`` maps it back to codes ``[B, K, T]`` (``revert_pattern_sequence``).
    """

    offset: int
    sequence: torch.Tensor
    pattern: Pattern


@torch.inference_mode()
def generate(lm: LMModel, cond: Conditions, max_gen_len: int, null: Conditions | None = None,
             cfg_coef: float = 3.0, two_step_cfg: bool = False, prompt: torch.Tensor | None = None,
             sampling: SamplingParams | None = None, callback: Callable[[int, int], None] | None = None,
             generator: torch.Generator | None = None, cfg_coef_beta: float | None = None,
             mid: Conditions | None = None) -> torch.Tensor:
    """Generate ``max_gen_len`` frames of codes ``[B, K, max_gen_len]`` (prompt frames included, unchanged).

    ``null`` enables classifier-free guidance: ``logits = uncond + (cond - uncond) * cfg_coef``. In batched mode
    (default) ``cond`` and ``null`` must have equal prefix/cross lengths; with ``two_step_cfg`` they run as
    separate passes. ``prompt [B, K, T_p]`` codes are kept and generation continues after them.

    Double CFG (``cfg_coef_beta``, MusicGen-Style): a third batch ``mid`` (conditions without the description)
    gives ``logits = null + cfg_coef * (mid + beta * (cond - mid) - null)``.
    """
    steps = generate_steps(lm, cond, max_gen_len, null, cfg_coef, two_step_cfg, prompt, sampling, callback,
                           generator, cfg_coef_beta, mid)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@torch.inference_mode()
def generate_steps(lm: LMModel, cond: Conditions, max_gen_len: int, null: Conditions | None = None,
                   cfg_coef: float = 3.0, two_step_cfg: bool = False, prompt: torch.Tensor | None = None,
                   sampling: SamplingParams | None = None, callback: Callable[[int, int], None] | None = None,
                   generator: torch.Generator | None = None, cfg_coef_beta: float | None = None,
                   mid: Conditions | None = None) -> Generator[DecodedStep, None, torch.Tensor]:
    """:func:`generate` as a generator: yields a :class:`DecodedStep` after every decoding step, returns the codes.

    Streaming consumers read the frames completed so far between steps; :func:`generate` just drains it, so both
    run the very same computation. A prompt of ``max_gen_len`` frames leaves nothing to decode: no step is yielded
    and the prompt is returned.
    """
    sampling = sampling or SamplingParams()
    cfg = lm.cfg
    batch = cond.batch_size or (prompt.shape[0] if prompt is not None else 1)
    device = lm.linears[0].weight.device
    prompt_len = 0 if prompt is None else prompt.shape[-1]
    if max_gen_len < 1:
        raise ValueError(f"max_gen_len must be at least 1, got {max_gen_len}")
    if prompt_len > max_gen_len:
        raise ValueError(f"prompt of {prompt_len} frames is longer than max_gen_len={max_gen_len}")
    if prompt is not None and prompt_len == max_gen_len:
        # Nothing left to decode (the pattern has no step for timestep max_gen_len): the prompt is the result.
        return prompt.clone()

    pattern = get_pattern_provider(cfg.pattern, cfg.n_q, delays=list(cfg.delays)).get_pattern(max_gen_len)
    unknown = -1
    codes = torch.full((batch, cfg.n_q, max_gen_len), unknown, dtype=torch.long, device=device)
    if prompt is not None:
        codes[..., :prompt_len] = prompt
    sequence, _, valid = pattern.build_pattern_sequence(codes, cfg.special_token)
    steps = sequence.shape[-1]
    start = pattern.get_first_step_with_timesteps(prompt_len)

    double = cfg_coef_beta is not None
    if double and (null is None or mid is None or two_step_cfg):
        raise ValueError("double CFG needs null and mid conditions, in one batched pass")
    if null is None:
        passes = [_Pass(lm, cond, batch, steps)]
    elif double:
        passes = [_Pass(lm, Conditions.cat(cond, mid, null), 3 * batch, steps)]  # type: ignore[arg-type]
    elif two_step_cfg:
        passes = [_Pass(lm, cond, batch, steps), _Pass(lm, null, batch, steps)]
    else:
        passes = [_Pass(lm, Conditions.cat(cond, null), 2 * batch, steps)]

    previous = 0
    for offset in range(start, steps):
        current = sequence[..., previous:offset]
        if null is None:
            logits = passes[0](current)
        elif double:
            cond_logits, mid_logits, null_logits = passes[0](torch.cat([current] * 3, dim=0)).split(batch, dim=0)
            logits = null_logits + cfg_coef * (mid_logits + cfg_coef_beta * (cond_logits - mid_logits) - null_logits)
        elif two_step_cfg:
            cond_logits, null_logits = passes[0](current), passes[1](current)
            logits = null_logits + (cond_logits - null_logits) * cfg_coef
        else:
            cond_logits, null_logits = passes[0](torch.cat([current, current], dim=0)).split(batch, dim=0)
            logits = null_logits + (cond_logits - null_logits) * cfg_coef
        next_codes = sample_next_token(logits.float(), sampling.use_sampling, sampling.temperature, sampling.top_k,
                                       sampling.top_p, generator)  # [B, K, 1]
        slot_valid = valid[..., offset:offset + 1].expand(batch, -1, -1)
        next_codes[~slot_valid] = cfg.special_token
        slot = sequence[..., offset:offset + 1]
        sequence[..., offset:offset + 1] = torch.where(slot == unknown, next_codes, slot)
        previous = offset
        if callback is not None:
            callback(1 + offset - start, steps - start)
        yield DecodedStep(offset, sequence, pattern)

    out, _, out_valid = pattern.revert_pattern_sequence(sequence, special_token=unknown)
    if not bool((out[out_valid.expand_as(out)] != unknown).all()):
        raise RuntimeError("generation left unfilled codes (pattern bug)")
    return out[..., :max_gen_len]
