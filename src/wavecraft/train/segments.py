"""Training segments that are checked for NaN and infinite samples before a model sees them."""

from __future__ import annotations

import torch

from ..data import SegmentDataset, SegmentInfo
from ..data.manifest import AudioMeta
from ..errors import InvalidAudioError


class FiniteSegmentDataset(SegmentDataset):
    """A :class:`~wavecraft.data.SegmentDataset` whose segments with NaN or infinite samples (a float file can hold
    them) count as unreadable: in shuffled mode the pick is redrawn (with a warning naming the file), in the
    deterministic modes it raises a one-line :class:`InvalidAudioError`. One such segment would otherwise turn
    every weight it reaches into NaN.

    The redraw uses the item's own generator, so which items are replaced depends on the files only: a resumed run
    replaces exactly the items the uninterrupted one did.
    """

    def _load(self, meta: AudioMeta, seek_time: float) -> tuple[torch.Tensor, SegmentInfo]:
        wav, info = super()._load(meta, seek_time)
        if not bool(torch.isfinite(wav).all()):
            raise InvalidAudioError(f"{meta.path}: NaN or infinite samples in the segment at {seek_time:.2f} s; "
                                    "skipped")
        return wav, info
