"""A terminal progress bar for generation: decoding steps and the real-time factor.

Real-time factor, everywhere in wavecraft: seconds of audio generated per second of wall time, shown as
``2.50x real time`` (above 1x is faster than real time).
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm


class GenerationProgress:
    """Callable ``(done_steps, total_steps)`` for ``set_custom_progress_callback``.

    Shows the steps of the whole generation (all its sliding windows: ``done`` only grows and ends at ``total``)
    and the real-time factor of the batch item; one decoding step stands for one frame at ``frame_rate`` Hz.
    A report that goes back (``done`` below the last one) or changes ``total`` starts the next generation (the
    next ``--batch-size`` batch) on a fresh bar.
    """

    def __init__(self, frame_rate: float, desc: str = "generate", disable: bool = False) -> None:
        self.frame_rate = frame_rate
        self.desc = desc
        self.disable = disable
        self.bar: tqdm | None = None
        self.start = 0.0
        self.first = 0  # steps done when the clock started
        self.done = 0  # steps the bar shows

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total or done < self.done:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit="step", disable=self.disable, leave=False)
            self.start = time.perf_counter()
            self.first = done
        self.bar.update(min(done, total) - self.done)
        self.done = min(done, total)
        # Steps since the clock started over the time since: counting the first report's steps too showed
        # thousands of times real time right after it.
        elapsed = time.perf_counter() - self.start
        if done > self.first and elapsed > 0:
            self.bar.set_postfix_str(f"{(done - self.first) / self.frame_rate / elapsed:.2f}x real time",
                                     refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.done = 0
