"""A tiny random T5 encoder + word-level tokenizer built offline, standing in for t5-base in tests."""

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
