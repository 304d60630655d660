"""The Google Gemini API request shape (batchEmbedContents).

POST ``…/models/{model}:batchEmbedContents`` ``{"requests": [{"model": "models/{model}", "content":
{"parts": [{"text": …}]}, "taskType", "outputDimensionality"}]}`` → ``embeddings[i].values``. The instance's
endpoint may name the ``:embedContent`` or ``:batchEmbedContents`` method of a model (the built-in
definition does), or be the API base (``https://generativelanguage.googleapis.com/v1beta``).
"""

from __future__ import annotations

from typing import Any

from vdb_grpc.providers.shape import EmbedForm, ProviderTarget

TASK_TYPE = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}


class GeminiShape:
    name = "gemini"
    max_inputs = 100

    def url(self, target: ProviderTarget) -> str:
        base, sep, method = target.endpoint.rpartition(":")
        if sep and "/models/" in base and method in ("embedContent", "batchEmbedContents"):
            return f"{base}:batchEmbedContents"
        return f"{target.endpoint.rstrip('/')}/models/{target.model}:batchEmbedContents"

    def body(self, target: ProviderTarget, texts: list[str], form: EmbedForm) -> dict[str, Any]:
        model = target.model if target.model.startswith("models/") else f"models/{target.model}"
        return {
            "requests": [
                {
                    "model": model,
                    "content": {"parts": [{"text": t}]},
                    "taskType": TASK_TYPE[form],
                    "outputDimensionality": target.dimensions,
                }
                for t in texts
            ]
        }

    def vectors(self, answer: Any) -> list[Any]:
        try:
            return [e["values"] for e in answer["embeddings"]]
        except (KeyError, TypeError):
            raise ValueError("expected {'embeddings': [{'values': [...]}, ...]}") from None


SHAPE = GeminiShape()
