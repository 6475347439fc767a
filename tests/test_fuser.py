"""Condition fusion order and routing (AudioCraft: text first, then waveform; each prepend goes in front)."""

from __future__ import annotations

import pytest
import torch

from wavecraft.conditioning import ConditionFuser, T5Conditioner


def _cond(value: float, length: int):
    return torch.full((1, length, 2), value), torch.ones(1, length, dtype=torch.long)


def test_prepend_order_and_cross_concat():
    fuser = ConditionFuser({"prepend": ["self_wav", "description"], "cross": ["tags", "extra"]})
    prefix, cross, mask, _ = fuser.fuse({"description": _cond(1, 2), "tags": _cond(3, 1), "self_wav": _cond(2, 3),
                                         "extra": _cond(4, 2)})
    assert prefix[0, :, 0].tolist() == [2, 2, 2, 1, 1]  # [self_wav, description]
    assert cross[0, :, 0].tolist() == [3, 4, 4] and mask.tolist() == [[1, 1, 1]]
    assert fuser.has_cross


def test_sum_adds_frame_conditions_and_checks_lengths():
    fuser = ConditionFuser({"sum": ["self_wav", "beat"], "cross": ["description"]})
    prefix, cross, _, summed = fuser.fuse({"description": _cond(1, 2), "self_wav": _cond(2, 5), "beat": _cond(3, 5)})
    assert prefix is None and cross.shape == (1, 2, 2)
    assert summed.shape == (1, 5, 2) and summed.eq(5).all()
    with pytest.raises(ValueError, match="frames"):
        fuser.fuse({"self_wav": _cond(2, 5), "beat": _cond(3, 4)})


def test_unsupported_fusion_rejected():
    with pytest.raises(ValueError, match="input_interpolate"):
        ConditionFuser({"input_interpolate": ["description"]})


def test_null_condition_shapes():
    emb, mask = _cond(5, 4)
    null_emb, null_mask = T5Conditioner.null((emb, mask))
    assert null_emb.shape == emb.shape and not null_emb.any() and not null_mask.any()
    assert T5Conditioner.null((emb, mask), length=1)[0].shape == (1, 1, 2)
