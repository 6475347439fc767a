"""AudioCraft's ``audiocraft.data.audio`` path: the same reading, probing and writing functions as
:mod:`wavecraft.audio` (aliases, not copies).

AudioCraft's ``audio_info`` returns an ``AudioFileInfo``; here it is :class:`~wavecraft.audio.io.AudioInfo`,
with the same fields (``sample_rate``, ``duration``, ``channels``), also under the name ``AudioFileInfo``.
"""

from ..audio.io import AudioInfo, audio_info, audio_read, audio_write

AudioFileInfo = AudioInfo

__all__ = ["AudioFileInfo", "AudioInfo", "audio_info", "audio_read", "audio_write"]
