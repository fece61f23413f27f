"""Push-pull, memberlist's anti-entropy: the full-state exchange over a stream, merging a peer's
state, the periodic sync, and the catch-up syncs (eager, settling, after a merge of clusters)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Container, Sequence

from pyserf.memberlist import codec, fields
from pyserf.memberlist.catchup import merge_sync_targets
from pyserf.memberlist.codec import (
    Alive,
    Dead,
    DecodeError,
    MsgType,
    NodeStateKind,
    PushNodeState,
    PushPull,
    Suspect,
)
from pyserf.memberlist.profiles import push_pull_scale
from pyserf.memberlist.state import NodeStates
from pyserf.memberlist.types import Address, AllBut, Node, peer_text

log = logging.getLogger("pyserf.memberlist")

MAX_PUSH_PULL_REQUESTS = 128
# Catch-up syncs per membership change, cluster-wide (see _start_eager_sync), and the least
# time between two of one node's; CatchUpBudget caps how many one node runs.
EAGER_SYNCS = 2.0
EAGER_MIN_GAP = 1.0


class PushPullSync(NodeStates):
    """Full-state exchanges with peers, periodic and catch-up."""

    def _local_state(self, join: bool, now: float) -> bytes:
        return self._encode_local_state(join, now)[0]

    def _encode_local_state(self, join: bool, now: float
                            ) -> tuple[bytes, Callable[[], set[bytes]]]:
        """Our push-pull state, and a function giving the encoded entries a peer's state may
        leave out when it repeats them byte for byte: merged, each would change nothing.
        Suspect entries are not among them: merging one confirms the suspicion in our name, as
        memberlist does. The set is built only when asked for: a join exchange, or a reply
        that comes back after our members changed, decodes everything anyway."""
        nodes = self.nodes
        # Kept on the member between changes: re-encoding every member of a large cluster was
        # the biggest single cost of a push-pull.
        entries = [n.wire or _encode_entry(n) for n in nodes]
        # As they are now: the reply comes later.
        suspect = NodeStateKind.SUSPECT
        suspects = [n.wire for n in nodes if n.state == suspect] if self._suspicions else []

        def own() -> set[bytes]:
            # Each member's entry names it, so the entries are distinct.
            return set(entries).difference(suspects)

        return codec.encode_push_pull(join, entries, self.delegate.local_state(join, now)), own

    def _push_pull(self, addr: Address, join: bool, now: float,
                   on_done: Callable[[str | None, float], None]) -> None:
        self._pending_push_pulls += 1
        settled = False

        def finish(error: str | None, when: float) -> None:
            # Exactly once per exchange, even when handling the reply itself failed.
            nonlocal settled
            if not settled:
                settled = True
                self._pending_push_pulls -= 1
                self.metrics.sample("memberlist.pushPullNode", (when - now) * 1000.0)
                on_done(error, when)

        def on_reply(kind: int, body: bytes, when: float) -> None:
            if kind == MsgType.ERR:
                try:
                    message = fields.text(codec.unpack_body(body), b"Error",
                                          codec.MAX_ERROR_TEXT)
                except DecodeError:
                    message = "malformed error reply"
                finish(f"remote error: {message}", when)
                return
            if kind != MsgType.PUSH_PULL:
                finish(f"expected push-pull reply, got message type {kind}", when)
                return
            try:
                remote = PushPull.decode_stream(body, own_entries)
            except DecodeError as exc:
                finish(str(exc), when)
                return
            self._merge_remote(remote, when, addr)
            finish(None, when)

        def own_entries(remote_join: bool) -> Container[bytes]:
            # What we sent still merges as no-ops unless a member was learned or changed state
            # since (an incarnation older than ours is ignored anyway). Join exchanges decode
            # everything: the merge syncs compare the peer's whole list with ours.
            if join or remote_join or self._changes != changes:
                return ()
            return own()

        state, own = self._encode_local_state(join, now)
        changes = self._changes
        self._open_stream(addr, state, now + self.timing.tcp_timeout, on_reply, finish)

    def _merge_remote(self, remote: PushPull, now: float, source: Address) -> None:
        admitted = self._admissible(remote.nodes, source, now)
        merge_syncs: list[str] = []
        if remote.join and self.config.eager_sync and not self.left:
            merge_syncs = merge_sync_targets(admitted, self.node_map, self.config.name,
                                             source[0], self.rng)
        news, self._merging = self._news, True
        try:
            self._merge_state(admitted, now)
        finally:
            self._merging = False
            self._merge_news = self._news - news
        for name in merge_syncs:
            if self._merge_budget.spend(now, len(self.nodes)):
                self.scheduler.call_at(now + self.rng.uniform(0.05, 0.3),
                                       functools.partial(self._merge_sync, name))
        if remote.user_state:
            self.delegate.merge_remote_state(remote.user_state, remote.join, now, source)

    def _admissible(self, remote: list[PushNodeState], source: Address, now: float
                    ) -> list[PushNodeState]:
        """The remote states we can merge. memberlist refuses a whole push-pull when any alive
        member's versions clash with any other's; we leave out just the members we could not
        admit (see ``_version_error``), so one bad entry relayed by an honest peer cannot stop
        every exchange with it."""
        keep = []
        for r in remote:
            error = None
            if r.state == NodeStateKind.ALIVE and r.name != self.config.name:
                error = self._version_error(r.vsn)
            if error:
                self.drops.drop("push-pull node (versions)", peer_text(source),
                                f"{r.name}: {error}", now)
            else:
                keep.append(r)
        return keep

    def _merge_state(self, remote: list[PushNodeState], now: float) -> None:
        name = self.config.name
        node_map, verdicts, known_ip = self.node_map, self._vsn_verdicts, fields.known_ip_text
        bind_port = self.config.bind_port
        for r in remote:
            if r.state == NodeStateKind.ALIVE:
                port = r.port or bind_port  # memberlist fills in its own port, too
                # _alive_node's first test, before building the record: most entries of an
                # exchange are members we already know at least this well.
                state = node_map.get(r.name)
                if (state is not None and r.incarnation <= state.incarnation
                        and port == state.port and r.name != name
                        and verdicts.get(r.vsn, False) is None
                        and known_ip(r.addr) == state.addr):
                    continue
                self._alive_node(Alive(r.incarnation, r.name, r.addr, port, r.meta, r.vsn), now)
            elif r.state == NodeStateKind.LEFT:
                self._dead_node(Dead(r.incarnation, r.name, r.name), now)
            elif r.state in (NodeStateKind.DEAD, NodeStateKind.SUSPECT):
                # A peer's opinion that a node is dead is only a suspicion to us.
                self._suspect_node(Suspect(r.incarnation, r.name, name), now)

    def _schedule_push_pull(self, when: float) -> None:
        self._loops["push-pull"] = self.scheduler.call_at(when, self._periodic_push_pull)

    def _periodic_push_pull(self, now: float, reschedule: bool = True) -> None:
        if reschedule:
            interval = push_pull_scale(self.timing.push_pull_interval, len(self.nodes))
            self._schedule_push_pull(now + interval)
        self._push_pull_random_peer(now)

    def _push_pull_random_peer(self, now: float,
                               then: Callable[[float], None] | None = None) -> None:
        """Push-pull with one live peer picked at random; ``then(when)`` after a success."""
        name, alive = self.config.name, NodeStateKind.ALIVE  # looked up once, not per member
        me_at = self._me_at
        candidates: Sequence[Node]
        if self._down == 0 and not self._suspicions and me_at is not None:
            # Every other member is alive (a suspect one is under suspicion): no list of them
            # to build, and the same draw from the same sequence.
            candidates = AllBut(self.nodes, me_at)
        else:
            candidates = [n for n in self.nodes if n.state == alive and n.name != name]
        if not candidates:
            return
        node = self.rng.choice(candidates)

        def done(error: str | None, when: float) -> None:
            if error:
                log.error("memberlist: Push/Pull with %s failed: %s", node.name, error)
            elif then is not None:
                then(when)

        self._push_pull(node.address, False, now, done)

    def _start_eager_sync(self, now: float, follow_up: bool = False) -> None:
        """A member joined (or came back): maybe run one catch-up push-pull soon.

        Every node hears of every change by gossip or in a push-pull; on gossip it takes it
        with odds EAGER_SYNCS / N: about EAGER_SYNCS extra exchanges cluster-wide per change,
        as many as the join push-pull itself. ``follow_up`` (our own join just completed)
        syncs once more: the seed's view was a snapshot and the joins racing ours are missing
        from it. Whatever the churn, one node runs no more than its CatchUpBudget allows.
        """
        if not self.config.eager_sync or self.shutdown_done:
            return
        if not follow_up and self.rng.random() * len(self.nodes) >= EAGER_SYNCS:
            return
        self._eager_until = max(self._eager_until, now + (3.0 if follow_up else 2.0))
        self._arm_eager_sync(now + self.rng.uniform(0.3, 0.8))

    def _arm_eager_sync(self, when: float) -> None:
        if self._eager_timer is not None and not self._eager_timer.cancelled:
            return  # one pending sync covers every change heard before it runs
        when = max(when, self._last_eager + EAGER_MIN_GAP)
        if not self._eager_budget.available(when, len(self.nodes)):
            return  # spent: the periodic sync catches us up
        self._eager_timer = self.scheduler.call_at(when, self._eager_sync)

    def _eager_sync(self, now: float) -> None:
        self._eager_timer = None
        if self.left or self.shutdown_done:
            return
        if not self._eager_budget.spend(now, len(self.nodes)):
            return
        self._last_eager = now

        def again(when: float) -> None:
            # The peer knew members gossip had not brought us: we may be behind yet. Members
            # merely still turning up elsewhere are no such evidence: in a long storm they
            # always are, and syncing on that kept every node syncing once a second for all
            # of it. The budget caps the chain whatever the evidence.
            if self._merge_news and when < self._eager_until:
                self._arm_eager_sync(when + self.rng.uniform(0.7, 1.2))

        self._push_pull_random_peer(now, again)

    def _settle(self, now: float) -> None:
        """The settling sync after a burst, once no member has been heard of for a while."""
        due = self._settler.due()
        if now < due:
            self._settle_timer = self.scheduler.call_at(due, self._settle)
            return
        self._settle_timer = None
        if self.left or self.shutdown_done:
            return
        if self._settler.take(now, len(self.nodes)):
            self._push_pull_random_peer(now)

    def _merge_sync(self, name: str, now: float) -> None:
        node = self.node_map.get(name)
        if node is None or node.state != NodeStateKind.ALIVE or self.left or self.shutdown_done:
            return

        def done(error: str | None, when: float) -> None:
            if error:
                log.error("memberlist: Push/Pull with %s failed: %s", name, error)

        self._push_pull(node.address, False, now, done)


def _encode_entry(node: Node) -> bytes:
    """The member's push-pull entry, kept on it until it changes."""
    node.wire = wire = codec.node_state_entry(
        node.name, node.addr, node.port, node.meta, node.incarnation, node.state, node.pmin,
        node.pmax, node.pcur, node.dmin, node.dmax, node.dcur)
    return wire
