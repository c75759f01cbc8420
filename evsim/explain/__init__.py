"""Explanations: TLS handshakes step by step (``handshake``) and the story of a run."""
