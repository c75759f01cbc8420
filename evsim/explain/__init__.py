"""Explain mode: the story of a run and of a TLS handshake, in plain language."""
