# Copyright: pyserf contributors
# MPL-2.0 (see the collection's galaxy.yml)
"""Inventory from the live membership of a serf or pyserf cluster."""

from __future__ import annotations

DOCUMENTATION = r"""
name: members
short_description: Hosts from the live membership of a serf or pyserf cluster
description:
  - Asks one agent of the cluster (pyserf or HashiCorp serf) for its members over serf's RPC
    and makes each member a host, named after the member, with C(ansible_host) set to the
    member's address.
  - Host variables C(serf_tags) (the tag map), C(serf_status), C(serf_port) and
    C(serf_protocol). Group hosts by status or tag with O(keyed_groups), O(groups) and
    O(compose).
  - O(status), O(name) and O(tags) are filters in RE2 syntax, anchored, applied by the agent
    exactly as C(serf members -status -name -tag) do.
  - The source file name must end in C(members.yml) or C(members.yaml), or C(serf.yml) or
    C(serf.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
  - pyserf.cluster.serf_rpc
options:
  plugin:
    description: Marks the file as a source for this plugin.
    required: true
    choices: [pyserf.cluster.members]
    type: str
  status:
    description: RE2 filter on the member status (alive, leaving, left, failed); "" = any.
    type: str
    default: ""
  name:
    description: RE2 filter on the member name; "" = any.
    type: str
    default: ""
  tags:
    description: Tag name to RE2 filter on its value (a member without the tag matches as "").
    type: dict
    default: {}
"""

EXAMPLES = r"""
# members.yml: the alive web servers, grouped by role and datacenter
plugin: pyserf.cluster.members
rpc_addr: 10.0.0.11:7373
status: alive
tags:
  role: web.*
keyed_groups:
  - key: serf_tags.role
    prefix: role
  - key: serf_status
    prefix: status
compose:
  serf_dc: serf_tags.dc | default('none')
"""

import re  # noqa: E402

from ansible.errors import AnsibleParserError  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable  # noqa: E402
from ansible.utils.unsafe_proxy import wrap_var  # noqa: E402
from ansible_collections.pyserf.cluster.plugins.module_utils.serf_rpc import (  # noqa: E402
    SerfRPC,
    SerfRPCError,
)

SOURCE_SUFFIXES = ("members.yml", "members.yaml", "serf.yml", "serf.yaml")
# Member names come from the network and become inventory host names, which Ansible uses in
# patterns, paths and templates: only plain host names are accepted.
HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "pyserf.cluster.members"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(SOURCE_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        query = {"rpc_addr": self.get_option("rpc_addr"), "status": self.get_option("status"),
                 "name": self.get_option("name"), "tags": self.get_option("tags") or {}}
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        members = None
        if use_cache:
            try:
                cached = self._cache[cache_key]
                if cached.get("query") == query:  # the file's filters changed: ask again
                    members = cached["members"]
            except KeyError:
                pass
        if members is None:
            members = self._fetch(query)
            if self.get_option("cache"):
                self._cache[cache_key] = {"query": query, "members": members}
        self._populate(members)

    def _fetch(self, query: dict) -> list[dict]:
        tags = query["tags"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise AnsibleParserError("pyserf.cluster.members: tags must map tag names to "
                                     "RE2 patterns (strings)")
        try:
            with SerfRPC(query["rpc_addr"], self.get_option("rpc_auth"),
                         float(self.get_option("rpc_timeout"))) as rpc:
                return rpc.members_filtered(query["status"], query["name"], tags)
        except SerfRPCError as exc:
            raise AnsibleParserError(f"pyserf.cluster.members: {exc}") from None

    def _populate(self, members: list[dict]) -> None:
        strict = self.get_option("strict")
        for member in members:
            if not HOST_NAME.fullmatch(member["name"]):
                self.display.warning(f"pyserf.cluster.members: skipping member "
                                     f"{member['name'][:80]!r}: not a plain host name")
                continue
            host = self.inventory.add_host(member["name"])
            # Names and tags come from the network: marked unsafe, so a tag value such as
            # "{{ lookup('pipe', ...) }}" is never templated.
            hostvars = wrap_var({"ansible_host": member["addr"], "serf_tags": member["tags"],
                                 "serf_status": member["status"], "serf_port": member["port"],
                                 "serf_protocol": member["protocol"]})
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, value)
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host,
                                              strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host,
                                           strict=strict)
