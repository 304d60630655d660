"""The Cohere Embed API v2 request shape.

POST ``endpoint`` (``https://api.cohere.com/v2/embed``) ``{"model", "texts", "input_type",
"embedding_types": ["float"], "truncate": "NONE"}`` → ``embeddings.float``. Documents are embedded as
``search_document``, queries as ``search_query``. ``truncate: NONE`` makes Cohere refuse a too-long text
instead of silently cutting it. ``output_dimension`` is sent for embed-v4 models asked for fewer than 1536.
"""

from __future__ import annotations

from typing import Any

from vdb_grpc.providers.shape import EmbedForm, ProviderTarget

INPUT_TYPE = {"document": "search_document", "query": "search_query"}


class CohereShape:
    name = "cohere"
    max_inputs = 96

    def url(self, target: ProviderTarget) -> str:
        return target.endpoint

    def body(self, target: ProviderTarget, texts: list[str], form: EmbedForm) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": target.model,
            "texts": texts,
            "input_type": INPUT_TYPE[form],
            "embedding_types": ["float"],
            "truncate": "NONE",
        }
        if target.model.startswith("embed-v4") and target.dimensions < 1536:
            body["output_dimension"] = target.dimensions
        return body

    def vectors(self, answer: Any) -> list[Any]:
        try:
            return list(answer["embeddings"]["float"])
        except (KeyError, TypeError):
            raise ValueError("expected {'embeddings': {'float': [[...], ...]}}") from None


SHAPE = CohereShape()
