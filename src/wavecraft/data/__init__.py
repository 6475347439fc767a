"""Training data: audio manifests (JSONL) and datasets of fixed-length segments."""

from .dataset import SegmentDataset, SegmentInfo, collate
from .manifest import AUDIO_EXTENSIONS, AudioMeta, build_manifest, read_manifest, write_manifest
from .sidecar import read_sidecar

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioMeta",
    "SegmentDataset",
    "SegmentInfo",
    "build_manifest",
    "collate",
    "read_manifest",
    "read_sidecar",
    "write_manifest",
]
