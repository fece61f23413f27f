# Copyright: pyserf contributors
# MPL-2.0 (see the collection's galaxy.yml)
"""Options shared by the collection's plugins that talk to an agent over serf's RPC."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  rpc_addr:
    description:
      - RPC address (C(host:port)) of any agent of the cluster, pyserf or serf.
    type: str
    default: 127.0.0.1:7373
    env:
      - name: SERF_RPC_ADDR
  rpc_auth:
    description:
      - The agent's C(rpc_auth) token, if it has one.
    type: str
    default: ""
    env:
      - name: SERF_RPC_AUTH
  rpc_timeout:
    description: Seconds to wait for the agent to connect and answer.
    type: float
    default: 10
requirements:
  - the msgpack Python package on the controller (the pyserf package is not needed)
"""
