"""Codebook interleaving patterns: how codes ``z [B, K, T]`` are laid out as a model sequence ``s [B, K, S]``.

A :class:`Pattern` is a *layout*: a list of ``S`` sequence steps, each holding the coordinates ``(t, q)``
(timestep, codebook) whose codes sit at that step. Slots of a step that hold no code carry a special token.
The language model predicts one sequence step at a time, so the layout decides which codebooks are predicted
together (parallel), one after another (unrolled) or with a per-codebook lag (delayed, MusicGen).

Providers build the layout for a given number of timesteps; the :class:`Pattern` turns it into gather indexes
so that going from codes to sequence and back (including the model's logits) is a single indexing operation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

LayoutCoord = tuple[int, int]
"""``(t, q)``: timestep ``t`` of codebook ``q``."""

PatternLayout = list[list[LayoutCoord]]


@dataclass
class Pattern:
    """A layout of ``timesteps`` timesteps of ``n_q`` codebooks over ``len(layout)`` sequence steps.

    Every coordinate ``(t, q)`` must satisfy ``0 <= t < timesteps`` and ``0 <= q < n_q``, may appear at most once
    in the whole layout, and a step holds at most one coordinate per codebook. Treat the layout as immutable once
    built: index tensors derived from it are cached on the instance.
    """

    layout: PatternLayout
    timesteps: int
    n_q: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.layout:
            raise ValueError("a pattern layout needs at least one sequence step")
        steps, ts, qs = self._coords()
        if len(ts) and (ts.min() < 0 or ts.max() >= self.timesteps or qs.min() < 0 or qs.max() >= self.n_q):
            raise ValueError(f"layout coordinate out of range for timesteps={self.timesteps}, n_q={self.n_q}")
        if len(torch.unique(steps * self.n_q + qs)) != len(qs):
            raise ValueError("a sequence step holds the same codebook twice")
        if len(torch.unique(ts * self.n_q + qs)) != len(qs):
            raise ValueError("a (timestep, codebook) coordinate appears at more than one sequence step")

    def _coords(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flattened layout as three CPU long tensors ``(step, t, q)``, one entry per coordinate."""
        if "coords" not in self._cache:
            flat = [(s, t, q) for s, coords in enumerate(self.layout) for t, q in coords]
            table = torch.tensor(flat, dtype=torch.long).reshape(-1, 3)
            self._cache["coords"] = (table[:, 0], table[:, 1], table[:, 2])
        return self._cache["coords"]

    @property
    def num_sequence_steps(self) -> int:
        """Number of sequence steps ``S`` of the full layout."""
        return len(self.layout)

    @property
    def max_delay(self) -> int:
        """Number of trailing steps after the first step that reaches the last timestep ``timesteps - 1``.

        These steps only exist to complete the lagging codebooks of the final timesteps: ``max(delays)`` for the
        delay pattern (with delays starting at 0), 0 for the parallel one.
        """
        if "max_delay" not in self._cache:
            last = self.get_steps_with_timestep(self.timesteps - 1)
            self._cache["max_delay"] = len(self.layout) - 1 - last[0] if last else 0
        return self._cache["max_delay"]

    @property
    def valid_layout(self) -> PatternLayout:
        """The layout without its last ``max_delay`` steps (the ones in which the leading codebook has run out)."""
        return self.layout[: len(self.layout) - self.max_delay]

    def starts_with_special_token(self) -> bool:
        """Whether the first sequence step is empty (a start token the model conditions on)."""
        return len(self.layout[0]) == 0

    def get_sequence_coords_with_timestep(self, t: int, q: int | None = None) -> list[tuple[int, LayoutCoord]]:
        """All ``(step, (t, q))`` of the layout at timestep ``t`` (restricted to codebook ``q`` if given), by step."""
        steps, ts, qs = self._coords()
        hit = (ts == t) if q is None else (ts == t) & (qs == q)
        return [(s, (t, cq)) for s, cq in zip(steps[hit].tolist(), qs[hit].tolist(), strict=True)]

    def get_steps_with_timestep(self, t: int, q: int | None = None) -> list[int]:
        """Sequence steps holding timestep ``t`` (of codebook ``q`` if given), in order."""
        return [s for s, _ in self.get_sequence_coords_with_timestep(t, q)]

    def get_first_step_with_timesteps(self, t: int, q: int | None = None) -> int:
        """First sequence step holding timestep ``t`` (of codebook ``q`` if given).

        With a prompt of ``T_p`` frames this is where decoding starts: ``get_first_step_with_timesteps(T_p)``
        (``T_p + 1`` for the delay pattern with delays starting at 0).
        """
        steps = self.get_steps_with_timestep(t, q)
        if not steps:
            raise ValueError(f"timestep {t} (codebook {q}) does not appear in the pattern")
        return steps[0]

    def _layout_len(self, keep_only_valid_steps: bool) -> int:
        return len(self.valid_layout) if keep_only_valid_steps else len(self.layout)

    def _sequence_indexes(self, timesteps: int, keep_only_valid_steps: bool,
                          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather indexes ``[K, S]`` into codes flattened as ``q * timesteps + t``; ``K * timesteps`` = special."""
        key = ("build", timesteps, keep_only_valid_steps, device)
        if key not in self._cache:
            num_steps = self._layout_len(keep_only_valid_steps)
            steps, ts, qs = self._coords()
            keep = (steps < num_steps) & (ts < timesteps)
            steps, ts, qs = steps[keep], ts[keep], qs[keep]
            indexes = torch.full((self.n_q, num_steps), self.n_q * timesteps, dtype=torch.long)
            indexes[qs, steps] = qs * timesteps + ts
            mask = torch.zeros(self.n_q, num_steps, dtype=torch.bool)
            mask[qs, steps] = True
            self._cache[key] = (indexes.to(device), mask.to(device))
        return self._cache[key]

    def _revert_indexes(self, sequence_steps: int, keep_only_valid_steps: bool, shift: int,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather indexes ``[K, T]`` into a sequence flattened as ``q * S + step - shift``; ``K * S`` = special."""
        key = ("revert", sequence_steps, keep_only_valid_steps, shift, device)
        if key not in self._cache:
            steps, ts, qs = self._coords()
            pos = steps - shift  # position on the sequence axis that carries coordinate (t, q)
            keep = (steps < self._layout_len(keep_only_valid_steps)) & (pos >= 0) & (pos < sequence_steps)
            pos, ts, qs = pos[keep], ts[keep], qs[keep]
            indexes = torch.full((self.n_q, self.timesteps), self.n_q * sequence_steps, dtype=torch.long)
            indexes[qs, ts] = qs * sequence_steps + pos
            mask = torch.zeros(self.n_q, self.timesteps, dtype=torch.bool)
            mask[qs, ts] = True
            self._cache[key] = (indexes.to(device), mask.to(device))
        return self._cache[key]

    def _check_shape(self, x: torch.Tensor, dims: int, max_last: int) -> None:
        """``x`` must be ``dims``-D with ``n_q`` codebooks on dim -2 and at most ``max_last`` entries on dim -1."""
        if x.dim() != dims or x.shape[-2] != self.n_q or x.shape[-1] > max_last:
            raise ValueError(f"shape {tuple(x.shape)} does not fit a pattern of n_q={self.n_q} (last dim <={max_last})")

    @staticmethod
    def _gather(x: torch.Tensor, indexes: torch.Tensor, mask: torch.Tensor, special: float) -> torch.Tensor:
        """``x [..., K, N]`` -> ``[..., K, M]`` via flat ``indexes [K, M]``; ``special`` wherever ``mask`` is False."""
        flat = x.reshape(*x.shape[:-2], -1)
        if flat.shape[-1] == 0:
            return x.new_full((*x.shape[:-2], *indexes.shape), special)
        # gather + masked_fill beats appending a special column and fancy-indexing (no copy of x, ~2x faster).
        index = indexes.reshape(-1).clamp(max=flat.shape[-1] - 1).expand(*flat.shape[:-1], -1)
        out = flat.gather(-1, index).masked_fill_(~mask.reshape(-1), special)
        return out.reshape(*x.shape[:-2], *indexes.shape)

    def build_pattern_sequence(self, z: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Lay codes out as a sequence.

        Args:
            z: codes ``[B, K, T]`` with ``K == n_q`` and ``T <= timesteps`` (coordinates past ``T`` stay special).
            special_token: value of the slots that hold no code.
            keep_only_valid_steps: use :attr:`valid_layout` instead of the full layout.
        Returns:
            ``values [B, K, S]``, ``indexes [K, S]`` (flat ``q * T + t`` index into ``z``, ``K * T`` for special
            slots) and ``mask [K, S]`` (True where a code was placed).
        """
        self._check_shape(z, 3, self.timesteps)
        indexes, mask = self._sequence_indexes(z.shape[-1], keep_only_valid_steps, z.device)
        return self._gather(z, indexes, mask, special_token), indexes, mask

    def revert_pattern_sequence(self, s: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`build_pattern_sequence`.

        Args:
            s: sequence ``[B, K, S]``; ``S`` may be shorter than the layout (later steps count as missing).
        Returns:
            ``values [B, K, timesteps]``, ``indexes [K, timesteps]`` (flat ``q * S + step``, ``K * S`` = missing)
            and ``mask [K, timesteps]``; timesteps absent from the first ``S`` steps are ``special_token``/False.
        """
        self._check_shape(s, 3, self._layout_len(keep_only_valid_steps))
        indexes, mask = self._revert_indexes(s.shape[-1], keep_only_valid_steps, 0, s.device)
        return self._gather(s, indexes, mask, special_token), indexes, mask

    def revert_pattern_logits(self, logits: torch.Tensor, special_token: float, keep_only_valid_steps: bool = False
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Align model outputs ``logits [B, card, K, S]`` with the timesteps: ``[B, card, K, timesteps]``.

        When the layout starts with an empty (special) step, the model output at step ``s`` predicts step
        ``s + 1``, so the coordinate placed at layout step ``s + 1`` takes ``logits[..., s]`` and the last output
        is unused. Layouts without that start step (MAGNeT's parallel pattern) predict each step in place.
        Missing entries are ``special_token`` (callers pass ``float('nan')``); returns ``(values, indexes, mask)``.
        """
        self._check_shape(logits, 4, self._layout_len(keep_only_valid_steps))
        shift = 1 if self.starts_with_special_token() else 0
        indexes, mask = self._revert_indexes(logits.shape[-1], keep_only_valid_steps, shift, logits.device)
        return self._gather(logits, indexes, mask, special_token), indexes, mask


class PatternProvider(ABC):
    """Builds the :class:`Pattern` of ``n_q`` codebooks for any number of timesteps."""

    def __init__(self, n_q: int) -> None:
        if n_q < 1:
            raise ValueError(f"n_q must be >= 1, got {n_q}")
        self.n_q = n_q

    @abstractmethod
    def get_pattern(self, timesteps: int) -> Pattern: ...


class DelayedPatternProvider(PatternProvider):
    """Codebook ``q`` lags by ``delays[q]`` steps (MusicGen; stereo uses ``[0, 0, 1, 1, 2, 2, 3, 3]``).

    Layout: one leading empty step (a start token), ``empty_initial`` further empty steps, then the first
    ``flatten_first`` timesteps fully flattened (one step per ``(t, q)``, in ``q`` order), then for
    ``t`` in ``[flatten_first, T + max(delays))`` one step holding ``(t - delays[q], q)`` for every codebook with
    ``flatten_first <= t - delays[q] < T``. ``empty_initial=-1`` drops the leading empty step (AudioCraft's
    convention, used by MAGNeT). For delays ``0..K-1`` and no extras, ``S = T + K`` and code ``(t, q)`` sits at
    step ``t + q + 1``.
    """

    def __init__(self, n_q: int, delays: list[int] | None = None, flatten_first: int = 0,
                 empty_initial: int = 0) -> None:
        super().__init__(n_q)
        self.delays = list(range(n_q)) if delays is None else list(delays)
        if len(self.delays) != n_q or min(self.delays) < 0:
            raise ValueError(f"need {n_q} non-negative delays, got {self.delays}")
        if flatten_first < 0 or empty_initial < -1:
            raise ValueError("flatten_first must be >= 0 and empty_initial >= -1")
        self.flatten_first = flatten_first
        self.empty_initial = empty_initial

    def get_pattern(self, timesteps: int) -> Pattern:
        layout: PatternLayout = [[] for _ in range(1 + self.empty_initial)]
        layout += [[(t, q)] for t in range(min(timesteps, self.flatten_first)) for q in range(self.n_q)]
        for t in range(self.flatten_first, timesteps + max(self.delays)):
            layout.append([(t - d, q) for q, d in enumerate(self.delays) if self.flatten_first <= t - d < timesteps])
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


class ParallelPatternProvider(DelayedPatternProvider):
    """All codebooks of timestep ``t`` share one step: step ``t + 1`` (``empty_initial=True``, MusicGen-style
    start token, ``S = T + 1``) or step ``t`` (``empty_initial=False``, MAGNeT, ``S = T``)."""

    def __init__(self, n_q: int, empty_initial: bool = True) -> None:
        super().__init__(n_q, delays=[0] * n_q, empty_initial=0 if empty_initial else -1)


class UnrolledPatternProvider(PatternProvider):
    """Each timestep spans ``F = max(flattening) + 1`` steps; codebooks with equal ``flattening`` share a step.

    Layout: one leading empty step, then code ``(t, q)`` sits at step
    ``1 + (t + delays[q]) * F + flattening[q]``, for ``S = 1 + (T + max(delays)) * F`` steps. The default
    flattening ``range(n_q)`` is the fully flattened pattern (one codebook per step); ``delays`` (default 0)
    shift a codebook by whole timesteps.
    """

    def __init__(self, n_q: int, flattening: list[int] | None = None, delays: list[int] | None = None) -> None:
        super().__init__(n_q)
        self.flattening = list(range(n_q)) if flattening is None else list(flattening)
        self.delays = [0] * n_q if delays is None else list(delays)
        if len(self.flattening) != n_q or min(self.flattening) < 0:
            raise ValueError(f"need {n_q} non-negative flattening values, got {self.flattening}")
        if len(self.delays) != n_q or min(self.delays) < 0:
            raise ValueError(f"need {n_q} non-negative delays, got {self.delays}")

    def get_pattern(self, timesteps: int) -> Pattern:
        inner = max(self.flattening) + 1
        layout: PatternLayout = [[] for _ in range(1 + (timesteps + max(self.delays)) * inner)]
        # Visiting q in order keeps each step's coordinates sorted by codebook.
        for t in range(timesteps):
            for q in range(self.n_q):
                layout[1 + (t + self.delays[q]) * inner + self.flattening[q]].append((t, q))
        return Pattern(layout, timesteps=timesteps, n_q=self.n_q)


_PROVIDERS: dict[str, type[PatternProvider]] = {
    "delay": DelayedPatternProvider,
    "parallel": ParallelPatternProvider,
    "unroll": UnrolledPatternProvider,
}


def get_pattern_provider(name: str, n_q: int, **kwargs) -> PatternProvider:
    """Provider by name: ``'delay'``, ``'parallel'`` or ``'unroll'``; ``kwargs`` go to its constructor."""
    if name not in _PROVIDERS:
        raise ValueError(f"unknown pattern {name!r}; expected one of {sorted(_PROVIDERS)}")
    return _PROVIDERS[name](n_q, **kwargs)
