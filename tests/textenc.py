"""Tiny stand-ins for tests: a random T5 encoder + word-level tokenizer (for t5-base), tiny transformers configs."""

from __future__ import annotations

import torch


def tiny_t5(d_model: int = 768, seed: int = 0):
    """``(tokenizer, encoder)``: T5-style (``""`` -> one ``</s>`` token, right padding), random weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = ["a", "the", "and", "with", "of", "in", "slow", "fast", "piano", "guitar", "drums", "synth",
             "bass", "rock", "jazz", "calm", "upbeat", "music", "song", "bright", "dark", "warm", "soft",
             "loud", "waltz", "ballad", "pop", "beat", "strings", "sad", "happy"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", padding_side="right")
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    return tokenizer, T5EncoderModel(config).eval()


def tiny_hf_sub_configs() -> tuple[dict, dict]:
    """``(text_encoder, audio_encoder)`` config dicts of a tiny transformers MusicGen: a 1-layer T5 and a
    4-filter 32 kHz EnCodec with 64-entry codebooks (a decoder config of the caller's completes it)."""
    from transformers import EncodecConfig, T5Config

    text = T5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=2)
    audio = EncodecConfig(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=4,
                          hidden_size=16, codebook_size=64, use_causal_conv=False, use_conv_shortcut=False)
    return text.to_dict(), audio.to_dict()
