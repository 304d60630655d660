"""The Ollama native request shape.

POST ``endpoint`` (``http://127.0.0.1:11434/api/embed``) ``{"model", "input": [...], "truncate": false}`` →
``embeddings``. ``truncate: false`` makes Ollama refuse a text longer than the model's context instead of
silently cutting it.
"""

from __future__ import annotations

from typing import Any

from vdb_grpc.providers.shape import EmbedForm, ProviderTarget


class OllamaShape:
    name = "ollama"
    max_inputs = 512

    def url(self, target: ProviderTarget) -> str:
        return target.endpoint

    def body(self, target: ProviderTarget, texts: list[str], form: EmbedForm) -> dict[str, Any]:
        return {"model": target.model, "input": texts, "truncate": False}

    def vectors(self, answer: Any) -> list[Any]:
        try:
            return list(answer["embeddings"])
        except (KeyError, TypeError):
            raise ValueError("expected {'embeddings': [[...], ...]}") from None


SHAPE = OllamaShape()
