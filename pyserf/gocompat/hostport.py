"""Go's ``net`` host:port rules: SplitHostPort, JoinHostPort, port lookup, ``TCPAddr`` and
``IP`` strings, and the two ways serf and memberlist add a default port."""

from __future__ import annotations

import ipaddress
import socket

from pyserf.gocompat.strconv import parse_uint

_PORT_CUTOFF = 1 << 30  # Go's parsePort clamps at this, so huge numbers stay "invalid port"


class AddrError(ValueError):
    """``*net.AddrError``: ``address <addr>: <err>``."""

    def __init__(self, err: str, addr: str) -> None:
        super().__init__(f"address {addr}: {err}" if addr else err)
        self.err = err
        self.addr = addr


MISSING_PORT = "missing port in address"
TOO_MANY_COLONS = "too many colons in address"


def split_host_port(hostport: str) -> tuple[str, str]:
    """``net.SplitHostPort``: ``host:port``, ``[v6]:port`` or ``[v6%zone]:port``."""
    colon = hostport.rfind(":")
    if colon < 0:
        raise AddrError(MISSING_PORT, hostport)
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise AddrError("missing ']' in address", hostport)
        if end + 1 == len(hostport):
            raise AddrError(MISSING_PORT, hostport)
        if end + 1 != colon:
            if hostport[end + 1] == ":":
                raise AddrError(TOO_MANY_COLONS, hostport)
            raise AddrError(MISSING_PORT, hostport)
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:colon]
        if ":" in host:
            raise AddrError(TOO_MANY_COLONS, hostport)
        j = k = 0
    if "[" in hostport[j:]:
        raise AddrError("unexpected '[' in address", hostport)
    if "]" in hostport[k:]:
        raise AddrError("unexpected ']' in address", hostport)
    return host, hostport[colon + 1:]


def join_host_port(host: str, port: int | str) -> str:
    """``net.JoinHostPort``: brackets around a host with a colon (IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_tcp_addr(ip: str, port: int) -> str:
    """``net.TCPAddr.String()``: a nil IP prints as empty (``:7946``)."""
    return join_host_port("" if ip == "<nil>" else ip, port)


def ip_string(raw: bytes | str | None) -> str:
    """``net.IP.String()`` of raw bytes (an IPv4-mapped IPv6 address as a dotted quad)."""
    if raw is None:
        return "<nil>"
    if isinstance(raw, str):
        return raw
    if len(raw) == 0:
        return "<nil>"
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        addr = ipaddress.IPv6Address(raw)
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(addr)
    return "?" + raw.hex()


def parse_port(service: str) -> int:
    """A TCP port as ``net.LookupPort`` reads it: a number with an optional sign (an empty
    string, or a bare sign, is 0), else a service name from /etc/services."""
    digits = service[1:] if service[:1] in ("+", "-") else service
    if digits.isascii() and (digits.isdigit() or digits == ""):
        stripped = digits.lstrip("0")
        number = _PORT_CUTOFF if len(stripped) > 10 else min(int(stripped or "0"), _PORT_CUTOFF)
        port = -number if service[:1] == "-" else number
    else:
        try:
            port = socket.getservbyname(service, "tcp")
        except (OSError, UnicodeError):
            raise AddrError("unknown port", "tcp/" + service) from None
    if not 0 <= port <= 0xFFFF:
        raise AddrError("invalid port", service)
    return port


def addr_parts(address: str, default_port: int) -> tuple[str, int]:
    """serf's ``AddrParts`` (bind and advertise): SplitHostPort, adding the default port when
    it says the port is missing, then the port looked up. Where adding a port cannot help
    (``[::1]x``) serf loops forever; this reports the missing port instead."""
    try:
        host, port = split_host_port(address)
    except AddrError as exc:
        if exc.err != MISSING_PORT:
            raise
        try:
            host, port = split_host_port(f"{address}:{default_port}")
        except AddrError:
            raise exc from None
    return host, parse_port(port)


def ensure_port(address: str, default_port: int) -> str:
    """memberlist's ``ensurePort`` (join addresses, as serf 0.9.4 vendors it): a bare host or
    IPv6 address, bracketed or not, gets the default port."""
    if address.rfind("[") == 0:
        has_port = address.rfind(":") > address.rfind("]")
    else:
        has_port = address.count(":") == 1
    if has_port:
        return address
    return join_host_port(address.strip("[]"), default_port)


def join_parts(address: str, default_port: int) -> tuple[str, str, int]:
    """memberlist's reading of a join address: an optional ``name/`` prefix, then
    ensurePort, SplitHostPort and ``strconv.ParseUint(port, 10, 16)`` (no service names, no
    sign). Returns (node name, host, port); ValueError with Go's text."""
    name = ""
    slash = address.find("/")
    if slash >= 0:
        if slash == 0:
            raise ValueError("empty node name provided")
        name, address = address[:slash], address[slash + 1:]
    host, port = split_host_port(ensure_port(address, default_port))
    return name, host, parse_uint(port, 10, 16)


def is_domain_name(name: str) -> bool:
    """Go's isDomainName: what its resolver sends to a DNS server at all."""
    if name == ".":
        return True
    if not name or len(name) > 254 or (len(name) == 254 and name[-1] != "."):
        return False
    last = "."
    non_numeric = False
    part = 0
    for ch in name:
        if ch.isascii() and (ch.isalpha() or ch == "_"):
            non_numeric = True
            part += 1
        elif ch.isascii() and ch.isdigit():
            part += 1
        elif ch == "-":
            if last == ".":
                return False
            part += 1
            non_numeric = True
        elif ch == ".":
            if last in ".-" or not 0 < part <= 63:
                return False
            part = 0
        else:
            return False
        last = ch
    return last != "-" and part <= 63 and non_numeric


def _nameserver() -> str:
    """The first nameserver of /etc/resolv.conf as Go names it in errors, or ""."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return join_host_port(parts[1], 53)
    except OSError:
        pass
    return ""


def lookup_error(host: str) -> str:
    """Go's ``*net.DNSError`` for a name that does not resolve: a name that is not a domain
    name never reaches a server, so the text names none."""
    server = _nameserver() if is_domain_name(host) else ""
    where = f" on {server}" if server else ""
    return f"lookup {host}{where}: no such host"
