"""Neural audio codecs: EnCodec and the compression-model interface."""

from .compression import CompressionModel, EnCodec, InterleaveStereoCompressionModel
from .config import CodecConfig, codec_configs

__all__ = ["CodecConfig", "CompressionModel", "EnCodec", "InterleaveStereoCompressionModel", "codec_configs"]
