"""mDNS discovery (``discover`` / ``-discover=<cluster>``), compatible with serf's agent/mdns.go.

Like serf, the agent advertises the service ``_serf_<cluster>._tcp.local.`` with its node name
as the instance, its advertise address and gossip port, and the TXT string
``Serf '<cluster>' cluster``; it asks for that service at start and every 60 s, and joins each
newly seen ``host:port`` once 100 ms pass without another new one (so a burst of answers makes
one join), honouring ``replay_on_join``.

Differences from serf, all on the side of finding peers sooner:

- The mDNS socket stays open, so answers and announcements are acted on whenever they arrive
  (serf only listens for one second after each of its queries). A pyserf agent announces
  itself when it starts, so pyserf peers join it at once; a serf agent never announces, but it
  queries when it starts, which makes it join us.
- A second query follows the first after a couple of seconds, in case the first was lost.
- The agent's own address is not joined, and a join that reached nobody is retried on the
  next answer instead of being marked as done for good (serf marks every address it tried).
  A peer that withdraws its record (mDNS goodbye) is forgotten, so it is joined again if it
  comes back at the same address.

The SRV target of our record is the instance name itself, with the A record there. Serf's
mDNS client (hashicorp/mdns) ties an A record to a service only if it comes after the SRV
that names its host in the same packet, and zeroconf orders those records arbitrarily; with
one name for both, the order does not matter.

zeroconf is imported only here, and this module only when ``discover`` is set: it costs
about 4 MiB of resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from typing import TYPE_CHECKING, Any

from pyserf.agent import netutil
from pyserf.gocompat.hostport import join_host_port

if TYPE_CHECKING:
    from pyserf.agent.api import AgentAPI

log = logging.getLogger("pyserf.agent")

POLL_INTERVAL = 60.0  # serf's mdnsPollInterval
QUIET_INTERVAL = 0.1  # serf's mdnsQuietInterval
RESOLVE_TIMEOUT_MS = 1000  # serf's query timeout (1 s)
REQUERY_AFTER = 2.0
CLOSE_TIMEOUT = 2.0

# DNS constants (RFC 1035, RFC 2782, RFC 3596)
_TYPE_A = 1
_TYPE_PTR = 12
_TYPE_SRV = 33
_TYPE_AAAA = 28
_CLASS_IN = 1
_FLAGS_QUERY = 0


class DiscoveryError(Exception):
    """mDNS could not be started; printed as ``==> Error starting mDNS listener: ...``."""


def service_type(cluster: str) -> str:
    """The DNS-SD service type serf uses for a discovery cluster name."""
    return f"_serf_{cluster}._tcp.local."


def txt_record(cluster: str) -> bytes:
    """TXT rdata: the single string serf publishes."""
    text = f"Serf '{cluster}' cluster".encode()[:255]
    return bytes([len(text)]) + text


# Bounds on what mDNS answers may make us remember (ours: mDNS has no authentication).
MAX_DISCOVERED = 1024
MAX_ADDRS_PER_PEER = 16


class Discovery:
    """Advertise this agent over mDNS and join the peers that answer or announce."""

    def __init__(self, agent: AgentAPI, cluster: str, interface: str = "",
                 replay: bool = False) -> None:
        self.agent = agent
        self.cluster = cluster
        self.interface = interface
        self.replay = replay
        self.type = service_type(cluster)
        self._type_key = self.type.lower()
        self._suffix = "." + self._type_key
        self.instance = f"{agent.node_name}.{self.type}"
        self._instance_key = self.instance.lower()
        self._self_addr = (agent.advertise[0], agent.advertise[1])
        self.seen: set[tuple[str, int]] = set()
        # instance name (lower case) -> addresses it resolved to, to forget them on goodbye
        self._instances: dict[str, set[tuple[str, int]]] = {}
        self._pending: list[tuple[str, int]] = []
        self._quiet: asyncio.TimerHandle | None = None
        self._resolving: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._join_lock = asyncio.Lock()
        self._aiozc: Any = None
        self._listener: Any = None
        self._info: Any = None
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            import zeroconf
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
        except ImportError as exc:
            raise DiscoveryError(f"the zeroconf package is not installed ({exc})") from exc
        ip, port = self._self_addr
        v6 = ipaddress.ip_address(ip).version == 6
        interfaces: Any = zeroconf.InterfaceChoice.All
        if self.interface:
            try:
                interfaces = ([socket.if_nametoindex(self.interface)] if v6
                              else [netutil.interface_ipv4(self.interface)])
            except (OSError, netutil.AddressError) as exc:
                raise DiscoveryError(str(exc)) from exc
        version = zeroconf.IPVersion.V6Only if v6 else zeroconf.IPVersion.V4Only
        try:
            self._aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=version)
            await self._aiozc.zeroconf.async_wait_for_start()
        except Exception as exc:  # sockets, no usable interface, ...
            await self._close_zeroconf()
            raise DiscoveryError(str(exc) or type(exc).__name__) from exc

        discovery = self

        class Listener(zeroconf.RecordUpdateListener):
            def async_update_records(self, zc: Any, now: float, records: list) -> None:
                try:
                    discovery._on_records(now, [update.new for update in records])
                except Exception:
                    log.exception("agent.mdns: internal error handling mDNS records")

            def async_update_records_complete(self) -> None:
                pass

        self._listener = Listener()
        self._aiozc.zeroconf.async_add_listener(self._listener, None)
        try:
            self._info = AsyncServiceInfo(
                self.type, self.instance, port=port,
                addresses=[ipaddress.ip_address(ip).packed], server=self.instance,
                properties=txt_record(self.cluster))
        except Exception as exc:  # e.g. a node name longer than a DNS label (63 bytes)
            log.error("agent.mdns: Failed to advertise %s: %s", self.instance,
                      exc or type(exc).__name__)
        else:
            self._spawn(self._register())
        self._spawn(self._poll_loop())

    async def stop(self) -> None:
        """Withdraw our record (goodbye packets) and close the mDNS sockets."""
        if self._closed:
            return
        self._closed = True
        if self._quiet is not None:
            self._quiet.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self._close_zeroconf()

    async def _close_zeroconf(self) -> None:
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        if self._listener is not None:
            with contextlib.suppress(Exception):
                aiozc.zeroconf.async_remove_listener(self._listener)
        try:
            await asyncio.wait_for(aiozc.async_close(), CLOSE_TIMEOUT)
        except Exception as exc:
            log.debug("agent.mdns: closing mDNS: %s", exc or type(exc).__name__)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _register(self) -> None:
        try:
            await self._aiozc.async_register_service(self._info, strict=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("agent.mdns: Failed to advertise %s: %s", self.instance,
                      exc or type(exc).__name__)
            return
        log.debug("agent.mdns: Advertising %s at %s", self.instance,
                  join_host_port(*self._self_addr))

    # -- polling ------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        self.poll()
        await asyncio.sleep(REQUERY_AFTER)
        while True:
            self.poll()
            await asyncio.sleep(POLL_INTERVAL * random.uniform(0.95, 1.0))

    def poll(self) -> None:
        """Multicast a question for our service; answers arrive through the record listener."""
        from zeroconf import DNSOutgoing, DNSQuestion

        if self._aiozc is None:
            return
        try:
            out = DNSOutgoing(_FLAGS_QUERY, True)
            out.add_question(DNSQuestion(self.type, _TYPE_PTR, _CLASS_IN))
            self._aiozc.zeroconf.async_send(out)
        except Exception as exc:
            log.error("agent.mdns: Failed to poll for new hosts: %s", exc or type(exc).__name__)
            return
        log.debug("agent.mdns: Polling for %s", self.type)

    # -- records in ---------------------------------------------------------------------------

    def _on_records(self, now: float, records: list) -> None:
        """All records from one mDNS packet: SRVs of our service type name peers."""
        addresses: dict[str, list[str]] = {}
        for rec in records:
            if rec.type in (_TYPE_A, _TYPE_AAAA) and not rec.is_expired(now):
                ip = _unpack_ip(rec.address)
                if ip is not None:
                    addresses.setdefault(rec.key, []).append(ip)
        with_srv: set[str] = set()
        for rec in records:
            if rec.type == _TYPE_SRV and rec.key.endswith(self._suffix):
                with_srv.add(rec.key)
                if rec.key == self._instance_key:
                    continue
                if rec.is_expired(now):
                    self._forget(rec.key)
                    continue
                ips = addresses.get(rec.server_key) or self._cached_addresses(rec.server, now)
                if ips:
                    for ip in ips:
                        self._found(rec.key, ip, rec.port)
                else:
                    self._resolve(rec.name)
        for rec in records:
            if rec.type == _TYPE_PTR and rec.key == self._type_key:
                if rec.alias_key == self._instance_key or rec.alias_key in with_srv:
                    continue
                if rec.is_expired(now):
                    self._forget(rec.alias_key)
                elif rec.alias_key not in self._instances:
                    self._resolve(rec.alias)

    def _cached_addresses(self, name: str, now: float) -> list[str]:
        cache = self._aiozc.zeroconf.cache
        ips = []
        for rtype in (_TYPE_A, _TYPE_AAAA):
            for rec in cache.async_all_by_details(name, rtype, _CLASS_IN):
                ip = None if rec.is_expired(now) else _unpack_ip(rec.address)
                if ip is not None:
                    ips.append(ip)
        return ips

    def _resolve(self, name: str) -> None:
        """Ask for a service instance's SRV and address records (1 s timeout)."""
        key = name.lower()
        if key in self._resolving or self._aiozc is None:
            return
        self._resolving.add(key)
        self._spawn(self._resolve_task(name, key))

    async def _resolve_task(self, name: str, key: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        try:
            info = AsyncServiceInfo(self.type, name)
            if await info.async_request(self._aiozc.zeroconf, RESOLVE_TIMEOUT_MS) and info.port:
                for ip in info.parsed_addresses():
                    self._found(key, ip, info.port)
            else:
                log.debug("agent.mdns: Could not resolve %s", name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("agent.mdns: Failed to resolve %s: %s", name, exc or type(exc).__name__)
        finally:
            self._resolving.discard(key)

    def _forget(self, key: str) -> None:
        """A peer withdrew its record: if it comes back at the same address, join it again."""
        for addr in self._instances.pop(key, ()):
            self.seen.discard(addr)

    # -- joining ------------------------------------------------------------------------------

    def _found(self, key: str, ip: str, port: int) -> None:
        addr = (ip, port)
        if self._closed or addr == self._self_addr or port == 0:
            return
        known = self._instances.get(key)
        if (known is None and len(self._instances) >= MAX_DISCOVERED) or (
                known is not None and addr not in known and len(known) >= MAX_ADDRS_PER_PEER):
            # Anyone on the link can answer mDNS; a flood of records must not grow our tables.
            log.debug("agent.mdns: Ignoring %s: too many discovered peers", key)
            return
        self._instances.setdefault(key, set()).add(addr)
        if addr in self.seen or addr in self._pending:
            return
        log.debug("agent.mdns: Found %s at %s", key, join_host_port(ip, port))
        self._pending.append(addr)
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = asyncio.get_running_loop().call_later(QUIET_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._quiet = None
        batch, self._pending = self._pending, []
        if batch and not self._closed:
            self._spawn(self._join(batch))

    async def _join(self, batch: list[tuple[str, int]]) -> None:
        async with self._join_lock:
            batch = [addr for addr in batch if addr not in self.seen]
            if not batch:
                return
            num, error = await self.agent.join([join_host_port(*a) for a in batch], self.replay)
            if error:
                log.error("agent.mdns: Failed to join: %s", error.rstrip())
            if num > 0:
                log.info("agent.mdns: Joined %d hosts", num)
                self.seen.update(batch)


def _unpack_ip(packed: bytes) -> str | None:
    try:
        return str(ipaddress.ip_address(packed))
    except ValueError:
        return None
