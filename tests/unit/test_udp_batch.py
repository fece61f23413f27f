"""A backlog of datagrams is handled in one loop turn with one pump.

asyncio's datagram transport hands the protocol one datagram per loop turn; during a join
storm each agent's socket holds dozens, and a turn (poll, callback dispatch, pump, timer
re-arm) per datagram cost about a quarter of the agent's receive CPU. The agent reads the rest
of the backlog itself when the first one arrives.
"""

from __future__ import annotations

import asyncio
import socket

from pyserf.agent.config import AgentConfig
from pyserf.agent.runtime import Agent
from pyserf.memberlist import codec
from pyserf.memberlist.codec import Ping


def test_one_datagram_from_asyncio_brings_in_the_whole_backlog_with_one_pump() -> None:
    async def body() -> None:
        agent = Agent(AgentConfig(node_name="a", bind="127.0.0.1:0"))
        await agent.start()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        port = peer.getsockname()[1]
        try:
            received: list[bytes] = []
            real_receive = agent.serf.memberlist.receive_packet
            agent.serf.memberlist.receive_packet = \
                lambda data, addr, now: (received.append(data), real_receive(data, addr, now))
            pumps: list[int] = []
            real_pump = agent.pump
            agent.pump = lambda: (pumps.append(len(received)), real_pump())[1]
            for seq in range(6):
                peer.sendto(Ping(seq, "a", codec.ip_to_bytes("127.0.0.1"), port,
                                 "peer").encode(), agent.bind_addr)
            # No await: asyncio has not read any of them; play its first read.
            data, addr = agent._udp_sock.recvfrom(65536)
            agent.on_packet(data, (addr[0], addr[1]))
            assert len(received) == 6
            assert pumps == [6]
            # Every ping was still answered.
            peer.settimeout(2.0)
            acks = 0
            while acks < 6:
                datagram = peer.recvfrom(65536)[0]
                if datagram[0] == codec.MsgType.COMPRESS:
                    datagram = codec.decompress_body(datagram[1:])
                parts = [datagram]
                if datagram[0] == codec.MsgType.COMPOUND:
                    parts, _ = codec.split_compound(datagram[1:])
                acks += sum(1 for p in parts if p[0] == codec.MsgType.ACK)
            assert acks == 6
        finally:
            peer.close()
            await agent.shutdown()

    asyncio.run(asyncio.wait_for(body(), 20))
