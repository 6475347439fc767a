"""Evaluation metrics that run offline."""

from .chroma import chroma_cosine_similarity

__all__ = ["chroma_cosine_similarity"]
