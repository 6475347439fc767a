"""Conditioning: attributes, text conditioners, fusion of conditions into the language model's input."""

from .attributes import ConditioningAttributes, WavCondition
from .fuser import ConditionFuser
from .text import SentenceConditioner, T5Conditioner, TextConditioner

__all__ = ["ConditionFuser", "ConditioningAttributes", "SentenceConditioner", "T5Conditioner", "TextConditioner",
           "WavCondition"]
