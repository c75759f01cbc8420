"""evsim: a Trio-based, structured-concurrency simulator of an EV charging network secured with TLS."""

__version__ = "0.1.0"

DEV_PASSWORD = "evsim-dev-password-0001"  # >= 16 chars (OCPP A00.FR.205 passwordString minimum)
"""The default Basic-auth password of ``evsim csms`` and ``evsim stations``: public, so both warn when they use it."""
