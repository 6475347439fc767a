"""User-facing errors.

Everything a user can cause (bad files, bad arguments, unsafe or mismatched checkpoints) raises a
subclass of :class:`WavecraftError` with a one-line message. The CLI prints these without a traceback.
"""


class WavecraftError(Exception):
    """Base class of every error a user can cause."""


class AudioFileError(WavecraftError):
    """An audio file is missing, empty, corrupt or cannot be decoded."""


class InvalidAudioError(WavecraftError, ValueError):
    """An audio tensor is unusable: wrong shape or channel count, no samples, NaN or infinite values."""


class ConfigError(WavecraftError, ValueError):
    """A model config value is out of range, of the wrong type, inconsistent with another, or too big to build."""


class CheckpointError(WavecraftError):
    """A checkpoint cannot be found, is unsafe to load, or does not match its config."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need arbitrary unpickling (code execution) to load."""


class CodecFileError(WavecraftError):
    """A ``.wcodec`` file is malformed or was written by an incompatible version."""
