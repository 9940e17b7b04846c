"""Live-run verification: digests of what an engine holds vs what the trainer meant to send."""
