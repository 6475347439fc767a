"""Training examples cut from audio files: :class:`SegmentDataset` and its :func:`collate`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..audio import audio_read, convert_audio
from ..errors import AudioFileError, WavecraftError
from .manifest import AudioMeta

if TYPE_CHECKING:
    from ..conditioning.attributes import ConditioningAttributes

logger = logging.getLogger(__name__)


@dataclass
class SegmentInfo:
    """Where an example came from: ``n_frames`` valid samples, then zeros up to ``total_frames``.

    ``sample_rate`` and ``channels`` are those of the returned waveform (the dataset's), not the file's.
    """

    meta: AudioMeta
    seek_time: float  # seconds into the file where the example starts
    n_frames: int
    total_frames: int
    sample_rate: int
    channels: int

    def to_condition_attributes(self) -> ConditioningAttributes:
        """The text conditions of this example: ``{'description': meta.description}`` (``None`` = no text).

        ``wav`` is left empty: a training loop that needs a waveform condition (e.g. melody) attaches it from the
        batch, since only it knows which conditioner wants which signal.
        """
        # Imported here so that `wavecraft.data` stays light: the conditioning package pulls in text encoders.
        from ..conditioning.attributes import ConditioningAttributes

        return ConditioningAttributes(text={"description": self.meta.description})


class SegmentDataset(Dataset):
    """Fixed-length segments (or whole files) from a list of :class:`AudioMeta`, at one rate and channel count.

    Segment mode (``segment_duration`` set): with ``shuffle``, item ``i`` picks a file at random, with probability
    proportional to its duration (as AudioCraft does, so every second of audio is equally likely) or uniformly
    without ``sample_on_duration``, then a uniform start in ``[0, max(0, duration - segment_duration)]``. The
    randomness is seeded by ``(seed, i)`` only, so an item is the same in every epoch, process and worker. Without
    ``shuffle`` (e.g. for validation), item ``i`` is the start of file ``i % len(metas)``. Files shorter than
    ``segment_duration * min_segment_ratio`` are left out. Each segment is converted to ``sample_rate`` and
    ``channels`` and cropped to ``int(segment_duration * sample_rate)`` samples; with ``pad`` shorter ones are
    zero-padded to exactly that, otherwise they stay short (:func:`collate` pads a batch).

    Whole-file mode (``segment_duration=None``): item ``i`` is all of file ``i % len(metas)``, converted.

    ``len(dataset)`` is ``num_samples``, by default the number of files. An item is ``(wav [C, T], SegmentInfo)``,
    or just ``wav [C, T]`` without ``return_info``. In shuffled segment mode a file that fails to read is replaced
    by another random pick up to ``max_retries`` times before :class:`AudioFileError` is raised; in the
    deterministic modes it raises at once.
    """

    def __init__(
        self,
        metas: Sequence[AudioMeta],
        segment_duration: float | None,
        sample_rate: int,
        channels: int,
        num_samples: int | None = None,
        shuffle: bool = True,
        min_segment_ratio: float = 0.5,
        pad: bool = True,
        seed: int = 0,
        return_info: bool = True,
        sample_on_duration: bool = True,
        max_retries: int = 3,
    ) -> None:
        if segment_duration is not None and not segment_duration > 0:
            raise WavecraftError(f"segment_duration must be > 0 seconds or None, got {segment_duration!r}")
        if sample_rate <= 0 or channels <= 0:
            raise WavecraftError(f"sample_rate and channels must be positive, got {sample_rate}, {channels}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise WavecraftError(f"seed must be an integer >= 0, got {seed!r}")
        metas = list(metas)
        if segment_duration is not None:
            min_duration = segment_duration * min_segment_ratio
            kept = [m for m in metas if m.duration > 0 and m.duration >= min_duration]
            if len(kept) < len(metas):
                logger.info("left out %d file(s) shorter than %g s", len(metas) - len(kept), min_duration)
            metas = kept
        if not metas:
            raise WavecraftError("no audio files to sample from (empty manifest, or all files too short)")
        if num_samples is not None and num_samples <= 0:
            raise WavecraftError(f"num_samples must be positive, got {num_samples}")

        self.metas = metas
        self.segment_duration = segment_duration
        self.sample_rate = sample_rate
        self.channels = channels
        self.num_samples = len(metas) if num_samples is None else num_samples
        self.shuffle = shuffle
        self.pad = pad
        self.seed = seed
        self.return_info = return_info
        self.max_retries = max_retries
        self._warned: set[str] = set()  # files already reported unreadable
        weights = np.array([m.duration for m in metas] if sample_on_duration else [1.0] * len(metas), np.float64)
        # Cumulative weights let each pick be one binary search instead of an O(files) normalisation.
        self._cumulative = np.cumsum(weights)

    def __len__(self) -> int:
        return self.num_samples

    def _pick(self, rng: np.random.Generator) -> tuple[AudioMeta, float]:
        """A random file (by weight) and a random start in it, in seconds."""
        index = int(np.searchsorted(self._cumulative, rng.random() * self._cumulative[-1], side="right"))
        meta = self.metas[min(index, len(self.metas) - 1)]  # min() guards against float rounding at the top end
        assert self.segment_duration is not None
        return meta, float(rng.uniform(0.0, max(0.0, meta.duration - self.segment_duration)))

    def _load(self, meta: AudioMeta, seek_time: float) -> tuple[torch.Tensor, SegmentInfo]:
        """Read, convert and crop/pad one example; raises :class:`WavecraftError` if the file is unusable."""
        duration = -1.0 if self.segment_duration is None else self.segment_duration
        wav, rate = audio_read(meta.path, seek_time, duration)
        wav = convert_audio(wav, rate, self.sample_rate, self.channels)
        if self.segment_duration is not None:
            # Resampling rounds the length, so crop/pad at the target rate to get an exact size.
            target = int(self.segment_duration * self.sample_rate)
            wav = wav[:, :target]
        n_frames = wav.shape[-1]
        if self.segment_duration is not None and self.pad:
            wav = F.pad(wav, (0, target - n_frames))
        info = SegmentInfo(meta, seek_time, n_frames, wav.shape[-1], self.sample_rate, self.channels)
        return wav, info

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, SegmentInfo]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for a dataset of {self.num_samples} items")
        if self.segment_duration is None or not self.shuffle:
            wav, info = self._load(self.metas[index % len(self.metas)], 0.0)
        else:
            rng = np.random.default_rng([self.seed, index])
            for _attempt in range(self.max_retries + 1):
                meta, seek_time = self._pick(rng)
                try:
                    wav, info = self._load(meta, seek_time)
                    break
                except WavecraftError as e:
                    # once per file: a bad file is picked again and again over a long run
                    log = logger.debug if meta.path in self._warned else logger.warning
                    self._warned.add(meta.path)
                    log("cannot read %s (skipped; later picks redraw): %s", meta.path, e)
                    error = e
            else:
                raise AudioFileError(f"no readable audio after {self.max_retries + 1} attempts: {error}")
        return (wav, info) if self.return_info else wav


def collate(
    batch: Sequence[torch.Tensor | tuple[torch.Tensor, SegmentInfo]],
) -> tuple[torch.Tensor, torch.Tensor, list[SegmentInfo] | None]:
    """Batch items of a :class:`SegmentDataset` into ``(wav [B, C, T], lengths [B], infos)``.

    Items shorter than the longest are zero-padded at the end. ``lengths`` (int64) counts the valid samples of each
    item: ``info.n_frames`` when infos are present (so padding done by the dataset is excluded too), else each
    item's length. ``infos`` is ``None`` for items returned without info. Always a 3-tuple, fixed length or not.
    """
    if not batch:
        raise WavecraftError("cannot collate an empty batch")
    with_info = isinstance(batch[0], tuple)
    wavs = [item[0] if with_info else item for item in batch]
    infos = [item[1] for item in batch] if with_info else None
    longest = max(w.shape[-1] for w in wavs)
    wav = torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in wavs])
    counts = [i.n_frames for i in infos] if infos is not None else [w.shape[-1] for w in wavs]
    return wav, torch.tensor(counts, dtype=torch.int64), infos
