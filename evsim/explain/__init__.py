"""Explain mode in plain language: the story of a run (``run_story``) and one TLS handshake step by step
(``handshake``)."""
