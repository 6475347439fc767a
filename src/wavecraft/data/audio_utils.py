"""AudioCraft's ``audiocraft.data.audio_utils`` path: the same conversion and normalization functions as
:mod:`wavecraft.audio` (aliases, not copies).

``normalize_audio(wav, normalize=True, strategy='peak', peak_clip_headroom_db=1, rms_headroom_db=18,
loudness_headroom_db=14, loudness_compressor=False, log_clipping=False, sample_rate=None, stem_name=None)`` has
AudioCraft's signature; ``convert_audio(wav, from_rate, to_rate, to_channels)`` and
``convert_audio_channels(wav, channels=2)`` too.
"""

from ..audio.convert import convert_audio, convert_audio_channels
from ..audio.normalize import normalize_audio, normalize_loudness

__all__ = ["convert_audio", "convert_audio_channels", "normalize_audio", "normalize_loudness"]
