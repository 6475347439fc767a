"""Conditioning: attributes, text conditioners, fusion of conditions into the language model's input."""

from .attributes import ConditioningAttributes, WavCondition
from .fuser import ConditionFuser
from .text import T5Conditioner

__all__ = ["ConditionFuser", "ConditioningAttributes", "T5Conditioner", "WavCondition"]
