"""Address parsing and interface lookup for bind/advertise/interface settings."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from pyserf.gocompat.hostport import AddrError, addr_parts

DEFAULT_PORT = 7946
_SIOCGIFADDR = 0x8915


class AddressError(ValueError):
    pass


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """A bind or advertise address (``ip``, ``ip:port``, ``[v6]:port``, ``[v6]``) read as
    serf's AddrParts reads it; errors are Go's (``address ::1: too many colons in address``)."""
    try:
        return addr_parts(text, default_port)
    except AddrError as exc:
        raise AddressError(str(exc)) from None


def parse_ip(host: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError as exc:
        raise AddressError(f"Failed to parse {what} IP {host!r}: not an IP address") from exc


def interface_ipv4(name: str) -> str:
    """First IPv4 address of a network interface (e.g. ``eth1`` in a Vagrant box)."""
    names = {n for _, n in socket.if_nameindex()}
    if name not in names:
        raise AddressError(f"Invalid network interface: {name}: no such network interface")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError as exc:
            raise AddressError(
                f"Invalid network interface: {name} has no IPv4 address") from exc
    return socket.inet_ntoa(packed[20:24])


def default_advertise_ip() -> str:
    """The address peers should use when bound to 0.0.0.0: the first private IPv4 address,
    else the first non-loopback one (memberlist prefers RFC 1918 addresses)."""
    candidates: list[str] = []
    for _, name in socket.if_nameindex():
        try:
            candidates.append(interface_ipv4(name))
        except AddressError:
            continue
    for ip in candidates:
        if ipaddress.ip_address(ip).is_private and not ipaddress.ip_address(ip).is_loopback:
            return ip
    for ip in candidates:
        if not ipaddress.ip_address(ip).is_loopback:
            return ip
    raise AddressError("No private IP address found, and explicit IP not provided")
