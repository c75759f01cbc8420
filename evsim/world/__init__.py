"""A whole charging network as a trio nursery: ``async with open_world(...) as world``.

See :mod:`evsim.world.core` for how it works, :mod:`evsim.world.specs` for how nodes are told about TLS, and
:mod:`evsim.world.actions` for the timeline actions a scenario (or a Python caller) applies to a world.
"""

from evsim.world import file_actions as file_actions  # registers update_firmware and get_log
from evsim.world.clocks import ClockSpec, NtsServerNode
from evsim.world.core import RUN_PASSWORD, WORLD_START, World, check_clock, open_world, run
from evsim.world.files import FileRoute, FileServerNode, FileSettings, FirmwareRelease
from evsim.world.nodes import ControllerNode, CsmsNode, NodeHandle, StationGroup, StationNode
from evsim.world.pki import WorldPki
from evsim.world.specs import (
    DEFAULT_TRUST,
    CertificateSpec,
    ChangeSpec,
    PinSetSpec,
    PinSpec,
    Route,
    Tls,
    TrustSpec,
)

__all__ = [
    "DEFAULT_TRUST",
    "RUN_PASSWORD",
    "WORLD_START",
    "CertificateSpec",
    "ChangeSpec",
    "ClockSpec",
    "ControllerNode",
    "CsmsNode",
    "FileRoute",
    "FileServerNode",
    "FileSettings",
    "FirmwareRelease",
    "NodeHandle",
    "NtsServerNode",
    "PinSetSpec",
    "PinSpec",
    "Route",
    "StationGroup",
    "StationNode",
    "Tls",
    "TrustSpec",
    "World",
    "WorldPki",
    "check_clock",
    "open_world",
    "run",
]
