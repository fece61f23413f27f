"""Address parsing and interface lookup for bind/advertise/interface settings."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

DEFAULT_PORT = 7946
_SIOCGIFADDR = 0x8915


class AddressError(ValueError):
    pass


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``ip``, ``ip:port``, ``[v6]:port`` or ``v6`` like Go's net.SplitHostPort."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"address {text}: missing ']' in address")
        host = text[1:end]
        rest = text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"address {text}: unexpected characters after ']'")
            port = _parse_port(text, rest[1:])
    elif text.count(":") == 1:
        host, _, raw_port = text.partition(":")
        port = _parse_port(text, raw_port)
    return host, port


def _parse_port(text: str, raw: str) -> int:
    """A port as Go's net.ResolveTCPAddr reads it: a number (sign allowed, empty is 0) or a
    service name from /etc/services; its errors name only the port, as Go's do."""
    digits = raw[1:] if raw[:1] in ("+", "-") else raw
    if not raw:
        return 0
    if digits.isascii() and digits.isdigit():
        port = -int(digits) if raw[0] == "-" else int(digits)
    else:
        try:
            port = socket.getservbyname(raw, "tcp")
        except (OSError, UnicodeError):
            raise AddressError(f"address tcp/{raw}: unknown port") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"address {raw}: invalid port")
    return port


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
