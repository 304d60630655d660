"""The OpenAI embeddings request shape; also every OpenAI-compatible server (vLLM, llama.cpp, LM Studio,
Ollama's ``/v1/embeddings``).

POST ``endpoint`` ``{"model", "input": [...], "encoding_format": "float"}`` → ``data[i].embedding`` (ordered
by ``data[i].index``). ``dimensions`` is sent when the instance asks for fewer than a text-embedding-3
model's default (those models shorten their vectors on request; other servers may reject the member).
"""

from __future__ import annotations

from typing import Any

from vdb_grpc.providers.shape import EmbedForm, ProviderTarget

#: Default output sizes of the models that accept ``dimensions``.
DEFAULT_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


class OpenAIShape:
    name = "openai"
    max_inputs = 2048

    def url(self, target: ProviderTarget) -> str:
        return target.endpoint

    def body(self, target: ProviderTarget, texts: list[str], form: EmbedForm) -> dict[str, Any]:
        body: dict[str, Any] = {"model": target.model, "input": texts, "encoding_format": "float"}
        default = DEFAULT_DIMENSIONS.get(target.model)
        if default is not None and target.dimensions < default:
            body["dimensions"] = target.dimensions
        return body

    def vectors(self, answer: Any) -> list[Any]:
        try:
            data = answer["data"]
            items = sorted(data, key=lambda d: d.get("index", 0)) if all("index" in d for d in data) else data
            return [d["embedding"] for d in items]
        except (KeyError, TypeError, AttributeError):
            raise ValueError("expected {'data': [{'embedding': [...]}, ...]}") from None


SHAPE = OpenAIShape()
