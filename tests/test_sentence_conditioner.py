"""The BERT sentence encoder behind the shipped model's text conditioner, against transformers' BertModel."""

from __future__ import annotations

import pytest
import torch

from wavecraft.conditioning import SentenceConditioner
from wavecraft.conditioning.bert import BertTextEncoder, mean_pool
from wavecraft.conditioning.text import sentence_encoder_folder
from wavecraft.errors import CheckpointError

transformers = pytest.importorskip("transformers")


def test_bert_encoder_matches_transformers_on_the_packaged_minilm() -> None:
    folder = sentence_encoder_folder("all-MiniLM-L6-v2")
    ours = BertTextEncoder(folder)
    ref = transformers.BertModel.from_pretrained(str(folder)).eval()
    texts = ["a gentle piano waltz", "fast jazz drums with a walking bass line, 180 bpm", "x"]
    hidden, mask = ours.encode(texts)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    batch = tok(texts, return_tensors="pt", padding=True)
    assert torch.equal(mask, batch["attention_mask"])
    with torch.no_grad():
        expected = ref(**batch).last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(hidden[valid], expected[valid], atol=1e-4, rtol=1e-4)


def test_sentence_embeddings_place_paraphrases_together() -> None:
    encoder = BertTextEncoder(sentence_encoder_folder("all-MiniLM-L6-v2"))
    emb = mean_pool(*encoder.encode(["a cheerful piano melody in C major", "happy upbeat piano tune",
                                     "a dog barking in the rain"]))
    sims = emb @ emb.T
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert sims[0, 1] > sims[0, 2] + 0.3


def test_sentence_conditioner_pooling_and_null_rows() -> None:
    torch.manual_seed(0)
    cond = SentenceConditioner(16)
    emb, mask = cond(["a slow chorale", None, "a slow chorale"])
    assert emb.shape == (3, 1, 16) and mask.tolist() == [[1], [0], [1]]
    assert torch.equal(emb[1], torch.zeros(1, 16)) and torch.equal(emb[0], emb[2])
    tokens = SentenceConditioner(16, pooling="tokens")
    emb, mask = tokens(["a slow chorale", "fast"])
    assert emb.shape[1] == mask.shape[1] > 1 and mask[1].sum() < mask[0].sum()


def test_wrong_encoder_folder_is_one_clear_error(tmp_path) -> None:
    cond = SentenceConditioner(8)
    cond.use_encoder(str(tmp_path))
    with pytest.raises(CheckpointError, match="missing config.json"):
        cond(["hello"])
