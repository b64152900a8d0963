"""InfiniBand / RoCE adapters from sysfs: /sys/class/infiniband/<dev>/ports/<n>/{rate,state,link_layer}.

The kernel writes these files for every RDMA-capable adapter, InfiniBand or RoCE, with the
same text `ibstatus` prints: `rate` is "200 Gb/sec (4X HDR)", `state` is "4: ACTIVE",
`link_layer` is "InfiniBand" or "Ethernet".
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from holo_jax.topology import serialize
from holo_jax.topology.probes import ProbeUnavailable

SYSFS_ROOT = Path("/sys/class/infiniband")
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*Gb/sec")


@dataclasses.dataclass(frozen=True)
class Port:
    device: str  # e.g. "mlx5_0"
    port: int
    rate_gbit: float | None
    state: str | None  # "ACTIVE", "DOWN", "INIT", ...
    link_layer: str | None


def read_ports(root: Path = SYSFS_ROOT) -> list[Port]:
    """Every port of every adapter under `root`; ProbeUnavailable if there are none."""
    if not root.is_dir():
        raise ProbeUnavailable(f"{root} does not exist (no RDMA driver loaded or no InfiniBand/RoCE adapter)")
    ports = []
    for device in sorted(p for p in root.iterdir() if (p / "ports").is_dir()):
        for port_dir in sorted((device / "ports").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1):
            if not port_dir.name.isdigit():
                continue
            rate = _read(port_dir / "rate")
            state = _read(port_dir / "state")
            match = _RATE.match(rate or "")
            ports.append(Port(
                device=device.name,
                port=int(port_dir.name),
                rate_gbit=float(match.group(1)) if match else None,
                # "4: ACTIVE" -> "ACTIVE"
                state=state.split(":", 1)[-1].strip() if state else None,
                link_layer=_read(port_dir / "link_layer"),
            ))
    if not ports:
        raise ProbeUnavailable(f"{root} lists no adapter ports")
    return ports


def adapters(ports: list[Port]) -> dict[str, tuple[float | None, str | None, str | None]]:
    """Per adapter: (rate of its active ports added up, ACTIVE if any port is, link layer).

    A dual-port adapter with both ports up carries both ports' traffic; a down port adds nothing.
    """
    out: dict[str, tuple[float | None, str | None, str | None]] = {}
    for device in dict.fromkeys(p.device for p in ports):
        mine = [p for p in ports if p.device == device]
        active = [p for p in mine if p.state == "ACTIVE"]
        rates = [p.rate_gbit for p in active if p.rate_gbit is not None]
        state = "ACTIVE" if active else (mine[0].state or None)
        out[device] = (sum(rates) if rates else None, state, mine[0].link_layer)
    return out


def _read(path: Path) -> str | None:
    """The stripped text of one sysfs attribute; None if it cannot be read (a missing
    attribute is normal: older drivers lack `link_layer`). Undecodable bytes are an error,
    not "unknown": they mean the directory is not what it claims to be."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return serialize.decode_text(data, f"InfiniBand attribute file {path}").strip() or None
