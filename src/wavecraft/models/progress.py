"""A terminal progress bar for generation: decoding steps and the real-time factor."""

from __future__ import annotations

import time

from tqdm.auto import tqdm


class GenerationProgress:
    """Callable ``(done_steps, total_steps)`` for ``set_custom_progress_callback``.

    Shows steps and the real-time factor (seconds of audio generated per second of wall time, for the whole batch
    item); one frame of codes is one step at ``frame_rate`` Hz.
    """

    def __init__(self, frame_rate: float, desc: str = "generate", disable: bool = False) -> None:
        self.frame_rate = frame_rate
        self.desc = desc
        self.disable = disable
        self.bar: tqdm | None = None
        self.start = 0.0
        self.first = 0  # steps done when the clock started

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit="step", disable=self.disable, leave=False)
            self.start = time.perf_counter()
            self.first = done
        self.bar.update(done - self.bar.n)
        # Steps since the clock started over the time since: counting the first report's steps too showed
        # thousands of times real time right after it.
        elapsed = time.perf_counter() - self.start
        if done > self.first and elapsed > 0:
            self.bar.set_postfix(rtf=f"{(done - self.first) / self.frame_rate / elapsed:.2f}x", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
