"""Alive, suspect and dead: how a member's state changes on what we hear, how we refute an
accusation against ourselves, and which version ranges we admit (memberlist's state.go)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyserf.memberlist import codec, fields
from pyserf.memberlist.codec import Alive, Dead, DecodeError, NodeStateKind, Suspect
from pyserf.memberlist.net import Net
from pyserf.memberlist.profiles import suspicion_timeout
from pyserf.memberlist.suspicion import Suspicion
from pyserf.memberlist.types import PROTOCOL_CUR, PROTOCOL_MAX, PROTOCOL_MIN, Node

log = logging.getLogger("pyserf.memberlist")


class NodeStates(Net):
    """Member state transitions on alive, suspect and dead messages."""

    def _alive_node(self, a: Alive, now: float, bootstrap: bool = False,
                    on_finished: Callable[[float], None] | None = None) -> None:
        state = self.node_map.get(a.node)
        if state is not None and state.old_news is a and not bootstrap:
            return  # a retransmission of what the test below passed (incarnations only grow)
        local_name = self.config.name
        if (state is not None and a.incarnation <= state.incarnation and a.port == state.port
                and not bootstrap and a.node != local_name
                and self._vsn_verdicts.get(a.vsn, False) is None
                and fields.known_ip_text(a.addr) == state.addr):
            # Old news of a member we know at that address with admissible versions, the bulk
            # of a join storm's gossip: the checks below would end in the same silent return.
            state.old_news = a
            return
        if self.left and a.node == local_name:
            return
        if not bootstrap and a.node != local_name:
            error = self._version_error(a.vsn)
            if error:
                # An impossible or incompatible range would make every later push-pull fail
                # the cluster-wide version check: one bad member must not poison the cluster.
                self.drops.drop("alive (versions)", a.node, error, now)
                return
        try:
            addr = codec.ip_from_bytes(a.addr)
        except DecodeError as exc:
            log.warning("memberlist: Ignoring an alive message for '%s': %s", a.node, exc)
            return
        updates_node = False
        learned_new = False
        if state is None:
            state = Node(a.node, addr, a.port, a.meta, state=NodeStateKind.DEAD)
            state.set_vsn(a.vsn)
            self.node_map[a.node] = state
            # Insert at a random position so probe order differs between nodes.
            offset = self.rng.randint(0, len(self.nodes)) if self.nodes else 0
            self.nodes.append(state)
            self.nodes[offset], self.nodes[-1] = self.nodes[-1], self.nodes[offset]
            self._changes += 1
            self._down += 1  # until the state below is set
            if a.node == local_name:
                self._me_at = offset
            elif self._me_at == offset:
                self._me_at = len(self.nodes) - 1
            learned_new = a.node != local_name
        elif state.addr != addr or state.port != a.port:
            reclaim = (self.timing.dead_node_reclaim_time > 0 and
                       now - state.state_change > self.timing.dead_node_reclaim_time)
            if state.state == NodeStateKind.LEFT or (
                    state.state == NodeStateKind.DEAD and reclaim):
                log.info("memberlist: Updating address for left or failed node %s from %s:%d "
                         "to %s:%d", state.name, state.addr, state.port, addr, a.port)
                updates_node = True
            else:
                log.error("memberlist: Conflicting address for %s. Mine: %s:%d Theirs: %s:%d "
                          "Old state: %s", state.name, state.addr, state.port, addr, a.port,
                          state.state.name.lower())
                other = Node(a.node, addr, a.port, a.meta)
                other.set_vsn(a.vsn)
                self.delegate.notify_conflict(state, other, now)
                return
        is_local = state.name == local_name
        if a.incarnation <= state.incarnation and not is_local and not updates_node:
            return
        if a.incarnation < state.incarnation and is_local:
            return
        suspicion = self._suspicions.pop(a.node, None)
        if suspicion is not None and suspicion.timer:
            suspicion.timer.cancel()
        old_state, old_meta = state.state, state.meta
        if not bootstrap and is_local:
            if (a.incarnation == state.incarnation and a.meta == state.meta
                    and a.vsn == state.vsn):
                return
            self._refute(state, a.incarnation, now)
            log.warning("memberlist: Refuting an alive message for '%s'", a.node)
        else:
            self._broadcast(a.node, a.encode(), now, on_finished)
            state.set_vsn(a.vsn)
            state.incarnation = a.incarnation
            state.meta = a.meta
            state.addr = addr
            state.port = a.port
            state.wire = None
            state.old_news = None
            if state.state != NodeStateKind.ALIVE:
                if state.state in (NodeStateKind.DEAD, NodeStateKind.LEFT):
                    self._down -= 1
                state.state = NodeStateKind.ALIVE
                state.state_change = now
                self._changes += 1
        self.metrics.incr("memberlist.msg.alive")
        if old_state in (NodeStateKind.DEAD, NodeStateKind.LEFT):
            self.delegate.notify_join(state, now)
            if learned_new or not is_local:
                self._news += 1
                if not self._merging:
                    # Learned in a push-pull, it came with that exchange's catch-up.
                    self._start_eager_sync(now)
                    if (self._settler.heard(now) and self.config.eager_sync
                            and self._settle_timer is None):
                        self._settle_timer = self.scheduler.call_at(self._settler.due(),
                                                                    self._settle)
        elif old_meta != state.meta:
            self.delegate.notify_update(state, now)

    def _suspect_node(self, s: Suspect, now: float) -> None:
        state = self.node_map.get(s.node)
        if state is None or s.incarnation < state.incarnation:
            return
        suspicion = self._suspicions.get(s.node)
        if suspicion is not None:
            if suspicion.confirm(s.from_):
                self._broadcast(s.node, s.encode(), now)
                self._arm_suspicion(s.node, suspicion)
            return
        if state.state != NodeStateKind.ALIVE:
            return
        if state.name == self.config.name:
            self._refute(state, s.incarnation, now)
            log.warning("memberlist: Refuting a suspect message (from: %s)", s.from_)
            return
        self._broadcast(s.node, s.encode(), now)
        self.metrics.incr("memberlist.msg.suspect")
        state.incarnation = s.incarnation
        state.state = NodeStateKind.SUSPECT
        state.state_change = now
        state.wire = None
        self._changes += 1
        change_time = now
        t = self.timing
        n = len(self.nodes)
        k = t.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        min_timeout = suspicion_timeout(t.suspicion_mult, n, t.probe_interval)
        suspicion = Suspicion(s.from_, k, min_timeout, t.suspicion_max_timeout_mult * min_timeout,
                              now)
        self._suspicions[s.node] = suspicion

        def expire(when: float) -> None:
            if self._suspicions.get(s.node) is not suspicion:
                return
            del self._suspicions[s.node]
            node = self.node_map.get(s.node)
            if node and node.state == NodeStateKind.SUSPECT and node.state_change == change_time:
                if k > 0 and suspicion.count < k:
                    self.metrics.incr("memberlist.degraded.timeout")
                log.info("memberlist: Marking %s as failed, suspect timeout reached (%d peer "
                         "confirmations)", node.name, suspicion.count)
                # An accusation raised while we heard from no one says more about us than
                # about the accused, who never heard it and could not refute: the verdict
                # stays in our own view. Gossiped (as serf's memberlist does), it reaches the
                # others first thing after a heal and they fail a healthy member until it
                # refutes (the fault lab's isolated node: 18 agents, ~0.05 s each).
                self._dead_node(Dead(node.incarnation, node.name, self.config.name), when,
                                gossip=not self._cut_off_at(suspicion.start))

        suspicion.timer = self.scheduler.call_at(suspicion.deadline, expire)

    def _arm_suspicion(self, name: str, suspicion: Suspicion) -> None:
        """Move the suspicion timer to its (earlier) new deadline after a confirmation."""
        old = suspicion.timer
        if old is not None:
            old.cancel()
            suspicion.timer = self.scheduler.call_at(suspicion.deadline, old.callback)

    def _dead_node(self, d: Dead, now: float,
                   on_finished: Callable[[float], None] | None = None, gossip: bool = True) -> None:
        state = self.node_map.get(d.node)
        if state is None or d.incarnation < state.incarnation:
            return
        suspicion = self._suspicions.pop(d.node, None)
        if suspicion is not None and suspicion.timer:
            suspicion.timer.cancel()
        if state.dead_or_left():
            return
        if state.name == self.config.name:
            if not self.left:
                self._refute(state, d.incarnation, now)
                log.warning("memberlist: Refuting a dead message (from: %s)", d.from_)
                return
            self._broadcast(d.node, d.encode(), now, on_finished)
        elif gossip:
            self._broadcast(d.node, d.encode(), now)
        self.metrics.incr("memberlist.msg.dead")
        state.incarnation = d.incarnation
        state.state = NodeStateKind.LEFT if d.node == d.from_ else NodeStateKind.DEAD
        state.state_change = now
        state.wire = None
        self._changes += 1
        self._down += 1
        self.delegate.notify_leave(state, now)

    def _refute(self, me: Node, accused: int, now: float) -> None:
        # Incarnations are uint32 on the wire and wrap as memberlist's do.
        inc = (self._incarnation + 1) & fields.U32_MAX
        if accused >= inc:
            inc = (accused + 1) & fields.U32_MAX
        self._incarnation = inc
        me.incarnation = inc
        me.wire = None
        self._apply_awareness(1)
        alive = Alive(inc, me.name, codec.ip_to_bytes(me.addr), me.port, me.meta, me.vsn)
        self._broadcast(me.name, alive.encode(), now)

    def _version_error(self, vsn: bytes) -> str | None:
        """Why a member announcing ``vsn`` cannot be in our cluster, or None.

        memberlist checks every member's versions against every other member's on each
        push-pull, so a member with an impossible range, once admitted, fails every later
        exchange (and serf panics on a short Vsn). We admit only members whose ranges are
        well formed and overlap our own current versions.
        """
        # Nearly every member announces the same few version ranges: remember the verdicts.
        if vsn in self._vsn_verdicts:
            return self._vsn_verdicts[vsn]
        error = self._check_versions(vsn)
        if len(self._vsn_verdicts) >= 64:
            self._vsn_verdicts.clear()
        self._vsn_verdicts[bytes(vsn)] = error
        return error

    def _check_versions(self, vsn: bytes) -> str | None:
        if len(vsn) < 6:
            return f"version field has {len(vsn)} bytes, not 6"
        pmin, pmax, pcur, dmin, dmax, dcur = vsn[:6]
        if not (1 <= pmin <= pcur <= pmax and dmin <= dcur <= dmax):
            return f"impossible version ranges {list(vsn[:6])}"
        mine = self._own_vsn()
        if not (pmin <= mine[2] <= pmax and mine[0] <= pcur <= mine[1]):
            return f"protocol version {pcur} in [{pmin}, {pmax}] is incompatible with ours"
        if not (dmin <= mine[5] <= dmax and mine[3] <= dcur <= mine[4]):
            return (f"delegate protocol version {dcur} in [{dmin}, {dmax}] is incompatible "
                    "with ours")
        return None

    def _own_vsn(self) -> bytes:
        return bytes((PROTOCOL_MIN, PROTOCOL_MAX, PROTOCOL_CUR, *self.config.delegate_versions))

    # News of a member sets off catch-up syncs (see pushpull.py).
    def _start_eager_sync(self, now: float, follow_up: bool = False) -> None:
        raise NotImplementedError

    def _settle(self, now: float) -> None:
        raise NotImplementedError
