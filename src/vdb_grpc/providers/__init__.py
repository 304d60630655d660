"""Provider clients: the service embeds texts itself, through an LLM service instance's provider and API key.

One module per request shape (``openai``, ``cohere``, ``gemini``, ``ollama``) turns texts into a request and
a response into vectors; ``client`` sends them (one shared ``httpx.AsyncClient``, retries, deadlines, the
per-instance concurrency limit, key placement, error mapping); ``egress`` decides which addresses an
endpoint may reach. See docs/server-side-embedding.md.
"""

from __future__ import annotations

from vdb_grpc.providers.client import ProviderClient, TextTooLong
from vdb_grpc.providers.shape import NULL_OBSERVER, EmbedForm, ProviderObserver, ProviderTarget

__all__ = ["NULL_OBSERVER", "EmbedForm", "ProviderClient", "ProviderObserver", "ProviderTarget", "TextTooLong"]
