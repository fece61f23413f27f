"""The agent reads the datagrams already in its socket before it runs overdue timers.

asyncio's selector loop reads one datagram per turn and runs every due timer in that same turn.
A process resumed after SIGSTOP (or a starved cgroup period) has both a backlog and overdue
probe deadlines, so without draining the socket first the deadline fires while the ack that
answers it is still unread and the agent suspects a healthy peer. The fault lab's pause test
saw it in 2 of 3 loaded runs; here the order is checked directly on a real agent and socket.
"""

from __future__ import annotations

import asyncio
import socket

from pyserf.agent import transport
from pyserf.agent.agent import Agent
from pyserf.agent.config import AgentConfig
from pyserf.memberlist import codec
from pyserf.memberlist.codec import Ack, Ping


async def _started_agent() -> Agent:
    agent = Agent(AgentConfig(node_name="a", bind="127.0.0.1:0"))
    await agent.start()
    return agent


def _ping(seq: int, port: int) -> bytes:
    return Ping(seq, "a", codec.ip_to_bytes("127.0.0.1"), port, "peer").encode()


def _ack_seqs(datagram: bytes) -> list[int]:
    """Sequence numbers of the acks in one datagram (alone or piggybacked, maybe compressed)."""
    if datagram[0] == codec.MsgType.COMPRESS:
        datagram = codec.decompress_body(datagram[1:])
    parts = [datagram]
    if datagram[0] == codec.MsgType.COMPOUND:
        parts, _ = codec.split_compound(datagram[1:])
    return [Ack.decode(codec.unpack_body(p[1:])).seq_no for p in parts
            if p[0] == codec.MsgType.ACK]


def _run(body) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


def test_datagrams_waiting_in_the_socket_reach_the_machine_before_due_timers_run() -> None:
    async def body() -> None:
        agent = await _started_agent()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        try:
            received: list[bytes] = []
            real_receive = agent.serf.memberlist.receive_packet

            def counting(data: bytes, addr, now: float) -> None:
                received.append(data)
                real_receive(data, addr, now)

            agent.serf.memberlist.receive_packet = counting
            seen_by_timer: list[int] = []
            agent.scheduler.call_at(agent.loop.time() - 1.0,
                                    lambda when: seen_by_timer.append(len(received)))
            # No await between the sends and the timer: the loop never gets a turn to read.
            for seq in range(5):
                peer.sendto(_ping(seq, peer.getsockname()[1]), agent.bind_addr)
            agent._on_timer()
            assert seen_by_timer == [5]
            # Each ping was answered: five acks came back to the peer.
            peer.settimeout(2.0)
            acked = sorted(seq for _ in range(5) for seq in _ack_seqs(peer.recvfrom(65536)[0]))
            assert acked == [0, 1, 2, 3, 4]
        finally:
            peer.close()
            await agent.shutdown()

    _run(body)


def test_draining_is_bounded_so_a_flood_cannot_hold_the_loop(monkeypatch) -> None:
    monkeypatch.setattr(transport, "MAX_DRAINED_DATAGRAMS", 3)

    async def body() -> None:
        agent = await _started_agent()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            received: list[bytes] = []
            real_receive = agent.serf.memberlist.receive_packet
            agent.serf.memberlist.receive_packet = \
                lambda data, addr, now: (received.append(data), real_receive(data, addr, now))
            for seq in range(10):
                peer.sendto(_ping(seq, 9), agent.bind_addr)
            agent._on_timer()
            assert len(received) == 3
            # The rest is left to asyncio's reader, one per loop turn.
            for _ in range(200):
                if len(received) == 10:
                    break
                await asyncio.sleep(0.01)
            assert len(received) == 10
        finally:
            peer.close()
            await agent.shutdown()

    _run(body)
