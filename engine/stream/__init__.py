"""Streaming: a causal few-step student that makes an endless clip chunk by chunk
(docs/ARCHITECTURE.md §5.8)."""
