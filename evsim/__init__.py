"""evsim: a Trio-based, structured-concurrency simulator of an EV charging network secured with TLS."""

__version__ = "0.1.0"
