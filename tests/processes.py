"""``evsim`` commands as separate processes in loopback tests."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Sequence

import trio

EVSIM = [sys.executable, "-m", "evsim"]


async def start_csms(nursery: trio.Nursery, argv: Sequence[str]) -> tuple[trio.Process, str]:
    """Start ``evsim csms ARGV`` (give ``--listen 127.0.0.1:0``) in ``nursery``; the process and the port it
    says it listens on, once it has said so."""
    csms: trio.Process = await nursery.start(
        functools.partial(trio.run_process, [*EVSIM, "csms", *argv], stdout=subprocess.PIPE, check=False)
    )
    assert csms.stdout is not None
    buf = b""
    while b"CSMS listening on " not in buf:
        chunk = await csms.stdout.receive_some()
        assert chunk, "evsim csms exited before listening"
        buf += chunk
    url = buf.split(b"CSMS listening on ")[1].split(b"/<station-id>")[0].decode()
    return csms, url.rsplit(":", 1)[1].split("/")[0]
