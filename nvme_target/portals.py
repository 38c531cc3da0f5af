"""NVMe/TCP portal specs: an address or a network interface name, with an optional port.

    10.0.0.5:4420    [fd00::5]:4420    storage0:4420    storage0    127.0.0.1

An interface name is resolved to its first address with pyroute2 (IPv4 preferred), so
a target can be told "listen on the storage NIC" without knowing its address.
"""

from __future__ import annotations

import ipaddress
import socket

from nvme_target.model import Portal
from sluice_common.errors import InvalidArgument, Unavailable

DEFAULT_PORT = "4420"


def split(spec: str) -> tuple[str, str]:
    """(host, port) of a spec; the port defaults to 4420."""
    spec = spec.strip()
    if not spec:
        raise InvalidArgument("portal: empty spec")
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else DEFAULT_PORT
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    else:
        host, port = spec, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"portal {spec!r}: bad port {port!r}")
    return host, port


def parse(spec: str) -> Portal:
    host, port = split(spec)
    addr = ipaddress.ip_address(resolve_host(host))
    return Portal(traddr=str(addr), trsvcid=port, adrfam="ipv4" if addr.version == 4 else "ipv6")


def resolve_host(host: str) -> str:
    """An IP address as given, or the address of the network interface of that name."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return interface_address(host)


def grpc_address(spec: str) -> str:
    """A gRPC listen spec (ADDR:PORT or IFACE:PORT) as host:port, IPv6 in brackets."""
    host, port = split(spec)
    addr = ipaddress.ip_address(resolve_host(host)) if host not in ("", "localhost") else None
    if addr is None:
        return f"{host or '0.0.0.0'}:{port}"
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def interface_address(ifname: str) -> str:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=ifname)
        if not links:
            raise InvalidArgument(f"portal: no network interface named {ifname!r}")
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in ipr.get_addr(index=links[0], family=family):
                address = msg.get_attr("IFA_ADDRESS")
                if address and not ipaddress.ip_address(address).is_link_local:
                    return address
    raise Unavailable(f"portal: interface {ifname!r} has no usable address")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(resolve_host(host.strip("[]"))).is_loopback
    except (ValueError, InvalidArgument, Unavailable):
        return False
