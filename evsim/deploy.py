"""``evsim k8s manifest``: a Kubernetes Indexed Job running a fleet as shards, one ``evsim stations`` pod each.

The Job (``completionMode: Indexed``, ``completions`` = ``parallelism`` = the shard count) gives each pod its
completion index in ``JOB_COMPLETION_INDEX``; the pod runs ``evsim stations --shard $(JOB_COMPLETION_INDEX)/N``
(:mod:`evsim.shards`: contiguous, fleet-wide station numbers), writes its run directory to the ``results``
volume and prints its result as JSON to its log. ``evsim report --merge`` then combines the run directories.

The PKI (the CSMS root to trust and, for security profile 3, the station CA that issues each station's client
certificate) comes from the Secret ``<name>-pki`` mounted read-only; the Basic-auth password (profile 2) from the
Secret ``<name>-password``. Nothing secret is in the manifest or the image.

evsim sends traffic to loopback only. A CSMS elsewhere is reached through a forwarder sidecar listening on
127.0.0.1 in the pod (a Kubernetes native sidecar: an init container with ``restartPolicy: Always``, so the Job
still completes); the stations keep the CSMS's own URL and map its host to the forwarder with ``--resolve``, so
TLS is end to end and still checks the CSMS's name. The forwarder only moves TCP bytes.

The manifest is built as data (:func:`job_manifest`) and written as YAML by a small emitter for exactly this
subset (:func:`to_yaml`: mappings, lists, strings always double-quoted as JSON strings, which YAML reads the same
way, numbers and booleans), so no YAML library is needed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from evsim.errors import ConfigError
from evsim.net.base import is_loopback
from evsim.urls import parse_url

__all__ = ["FORWARDER_IMAGE", "job_manifest", "print_manifest", "to_yaml"]

FORWARDER_IMAGE = "docker.io/alpine/socat:1.8.0.3"
"""The TCP forwarder of the sidecar (any plain TCP proxy does: it never sees plaintext)."""

PKI_MOUNT = "/etc/evsim/pki"
EVSIM_UID = 10001
"""The user of ``deploy/Containerfile``'s image."""
RESULTS_MOUNT = "/results"


def job_manifest(
    *,
    shards: int,
    stations: int,
    csms: str,
    security_profile: int = 3,
    image: str = "evsim:latest",
    name: str = "evsim-stations",
    duration: str = "10m",
) -> dict[str, Any]:
    """The Indexed Job as data (what :func:`to_yaml` writes).

    Raises:
        ConfigError: fewer stations than shards, no shards, a profile other than 2 or 3, or a URL that is not
            ``wss://``.
    """
    if shards < 1 or stations < shards:
        raise ConfigError(
            f"{shards} shards of {stations} stations",
            path="--shards",
            value=shards,
            fix="use 1 to --stations shards",
        )
    if security_profile not in (2, 3):
        raise ConfigError(
            "the fleet uses TLS", path="--security-profile", value=security_profile, fix="use 2 or 3"
        )
    scheme, host, port, _path = parse_url(csms)
    if scheme != "wss":
        raise ConfigError(
            "a sharded fleet uses TLS", path="--csms", value=csms, fix="use wss://HOST:PORT/PATH"
        )
    args = [
        "stations",
        "--csms",
        csms,
        "--stations",
        str(stations),
        "--shard",
        f"$(JOB_COMPLETION_INDEX)/{shards}",
        "--security-profile",
        str(security_profile),
        "--ca",
        f"{PKI_MOUNT}/ca.crt",
        "--duration",
        duration,
        "--progress",
        "30s",
        "--out",
        RESULTS_MOUNT,
        "--json",
        "-q",
    ]
    env: list[dict[str, Any]] = []
    if security_profile == 3:
        args += ["--pki", PKI_MOUNT]
    else:
        env.append(
            {
                "name": "EVSIM_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": f"{name}-password", "key": "password"}},
            }
        )
        args += ["--password", "$(EVSIM_PASSWORD)"]
    sidecars: list[dict[str, Any]] = []
    bare_host = host.strip("[]")
    if not is_loopback(bare_host) and bare_host.lower() != "localhost":
        args += ["--resolve", f"{bare_host}=127.0.0.1"]
        sidecars.append(
            {
                "name": "csms-forwarder",
                "image": FORWARDER_IMAGE,
                "restartPolicy": "Always",
                "args": [f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"TCP:{bare_host}:{port}"],
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
            }
        )
    container: dict[str, Any] = {
        "name": "stations",
        "image": image,
        "args": args,
        "env": env,
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        # the image's unprivileged user; it reads the Secret and writes the results through the pod's fsGroup
        "securityContext": {"runAsUser": EVSIM_UID, "runAsNonRoot": True, "allowPrivilegeEscalation": False},
        "volumeMounts": [
            {"name": "pki", "mountPath": PKI_MOUNT, "readOnly": True},
            {"name": "results", "mountPath": RESULTS_MOUNT},
        ],
    }
    if not env:
        del container["env"]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"fsGroup": EVSIM_UID},
        "containers": [container],
        "volumes": [
            {"name": "pki", "secret": {"secretName": f"{name}-pki", "defaultMode": 0o440}},
            {"name": "results", "persistentVolumeClaim": {"claimName": f"{name}-results"}},
        ],
    }
    if sidecars:
        pod = {"initContainers": sidecars, **pod}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "evsim-stations"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": shards,
            # a retried shard would write a second run directory for the same index: merge refuses that
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "evsim-stations"}},
                "spec": pod,
            },
        },
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML of mappings, lists, strings (JSON-quoted), integers and booleans."""
    return "".join(_lines(value, indent))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"{type(value).__name__} has no YAML form here")


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list) and item:
                out.append(f"{pad}{key}:\n")
                out += _lines(item, indent + 2)
            else:
                out.append(
                    f"{pad}{key}: {_empty(item) if isinstance(item, Mapping | list) else _scalar(item)}\n"
                )
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if isinstance(item, Mapping | list) and item:
                first, *rest = _lines(item, indent + 2)
                out.append(f"{pad}- {first.lstrip()}")
                out += rest
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
    else:
        out.append(f"{pad}{_scalar(value)}\n")
    return out


def _empty(value: Mapping[str, Any] | list[Any]) -> str:
    return "{}" if isinstance(value, Mapping) else "[]"


def print_manifest(args: argparse.Namespace) -> int:
    """``evsim k8s manifest``: the Job as YAML on standard output."""
    manifest = job_manifest(
        shards=args.shards,
        stations=args.stations,
        csms=args.csms,
        security_profile=args.security_profile,
        image=args.image,
        name=args.name,
        duration=args.duration,
    )
    print(f"# evsim k8s manifest --shards {args.shards} --stations {args.stations} --csms {args.csms}")
    print(to_yaml(manifest), end="")
    return 0
