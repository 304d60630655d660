"""What keeps a running server observable and healthy: logging, metrics, rate limits, read routing."""
