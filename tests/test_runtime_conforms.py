"""``evsim.runtime.conforms``: a protocol check answered once per class, agreeing with ``isinstance``."""

from __future__ import annotations

from evsim.net.base import IdleState, NowaitSend
from evsim.runtime import conforms


class _Sender:
    def send_nowait(self, data: bytes, /) -> bool | None:
        return True


class _Plain:
    pass


def test_conforms_agrees_with_isinstance() -> None:
    for obj in (_Sender(), _Plain(), b"", 3):
        for protocol in (NowaitSend, IdleState):
            assert conforms(obj, protocol) is isinstance(obj, protocol)
    assert conforms(_Sender(), NowaitSend)
    assert not conforms(_Plain(), NowaitSend)


def test_conforms_answers_per_class() -> None:
    first, second = _Plain(), _Plain()
    assert not conforms(first, NowaitSend)
    second.send_nowait = lambda data: True  # type: ignore[attr-defined]
    # the answer belongs to the class: evsim's protocols are methods a class defines
    assert not conforms(second, NowaitSend)
