"""The admin socket of ``evsim csms``: an operator triggers certificate renewal or installs a root on the
connected stations from another shell (``evsim admin``).

Theory of operation. ``evsim csms --admin-socket PATH`` listens on a unix-domain socket at ``PATH`` (local to
the machine by construction; created with mode 0600, so only its owner can connect; a stale socket file from an
earlier run is replaced, any other existing file is refused). Each connection carries one request line and gets
one response line, then it is closed; connections are served one at a time and each has
:data:`CONNECTION_DEADLINE_S` to send its line. The lines are :mod:`evsim.nodes.csms_admin`'s (sans-IO); this
module only moves them. A refused line is answered ``{"ok": false, "error": ...}`` and recorded once
(``admin_refused`` with the reason).
"""

from __future__ import annotations

import contextlib
import os
import socket as stdlib_socket
import stat
from pathlib import Path
from typing import Any, Final

import trio

from evsim.errors import ConfigError
from evsim.nodes.csms import Csms
from evsim.nodes.csms_admin import (
    MAX_LINE,
    AdminRefused,
    AdminRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    execute,
)

__all__ = ["CONNECTION_DEADLINE_S", "admin_call", "serve_admin"]

CONNECTION_DEADLINE_S: Final = 10.0
"""How long a client may take to send its request line (wall-clock seconds)."""


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise AdminRefused(f"line longer than {MAX_LINE} bytes")
    return bytes(buf.split(b"\n", 1)[0])


def _clear_stale_socket(where: Path) -> None:
    """Remove a socket file an earlier run left at ``where``; refuse any other kind of file there."""
    if where.exists() or where.is_symlink():
        if not stat.S_ISSOCK(where.lstat().st_mode):
            raise ConfigError(
                "the admin socket path exists and is not a socket",
                path="--admin-socket",
                value=str(where),
                fix="choose another path, or remove the file",
            )
        where.unlink()


def _remove(where: Path) -> None:
    with contextlib.suppress(OSError):
        where.unlink()


async def serve_admin(
    csms: Csms, path: str | os.PathLike[str], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve admin requests for ``csms`` on the unix socket ``path`` until cancelled (see the module doc).

    Raises:
        ConfigError: ``path`` exists and is not a socket.
    """
    where = Path(path)
    _clear_stale_socket(where)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is created 0600: only its owner may connect
    try:
        await sock.bind(str(where))
    finally:
        os.umask(old)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    try:
        async with listener:
            task_status.started()
            while True:
                stream = await listener.accept()
                async with stream:
                    await _serve_one(csms, stream)
    finally:
        _remove(where)


async def _serve_one(csms: Csms, stream: trio.SocketStream) -> None:
    response: dict[str, Any]
    try:
        with trio.fail_after(CONNECTION_DEADLINE_S):
            request = decode_request(await _read_line(stream))
    except (AdminRefused, trio.TooSlowError, trio.BrokenResourceError) as exc:
        reason = str(exc) if isinstance(exc, AdminRefused) else "no request line in time"
        csms.recorder.emit(csms.config.name, "admin_refused", reason=reason)
        response = {"ok": False, "error": reason}
    else:
        response = await execute(csms, request)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(encode_response(response))


async def admin_call(path: str | os.PathLike[str], request: AdminRequest) -> dict[str, Any]:
    """Send ``request`` to the admin socket at ``path`` and return the response object.

    Raises:
        OSError: nothing listens at ``path``.
        AdminRefused: the answer is not a response line.
    """
    stream = await trio.open_unix_socket(os.fspath(path))
    async with stream:
        await stream.send_all(encode_request(request))
        return decode_response(await _read_line(stream))
