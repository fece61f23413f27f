"""Reading config files and directories and merging every source in serf's order.

Defaults, then each ``-config-file``/``-config-dir`` in command-line order (a directory's
``*.json`` files sorted), then the command-line flags; :class:`ConfigSources` remembers them so
SIGHUP re-reads the files. Merge rules, file-reading errors and their texts follow serf 0.9.4,
with one deliberate difference: a boolean that a later source sets explicitly
(``"replay_on_join": false``, ``-replay=false``) overrides earlier sources, where serf could
only ever turn booleans on. To do that every loader reports which keys it set.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pyserf.agent.config import CONFIG_KEYS, KINDS, AgentConfig, ConfigError
from pyserf.agent.config_decode import decode_config
from pyserf.agent.config_validate import finalize, validate
from pyserf.gocompat.errno import path_error
from pyserf.gocompat.jsonerr import JSONError, decode_first

__all__ = ["ConfigSources", "load_dir", "load_file", "load_paths", "merge"]


def load_file(path: str) -> tuple[AgentConfig, set[str]]:
    """Read and decode one JSON config file; returns (partial config, keys it set)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError:
        raise ConfigError(
            f"Error decoding '{path}': read {path}: is a directory", path=path
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"Error reading '{path}': {path_error('open', path, exc)}", path=path
        ) from None
    try:
        raw = decode_first(data)
    except JSONError as exc:
        raise ConfigError(f"Error decoding '{path}': {exc}", path=path) from None
    try:
        return decode_config(raw)
    except ConfigError as exc:
        msg = f"Error decoding '{path}': {exc.message}"
        raise ConfigError(msg, key=exc.key, path=path) from None


def load_dir(path: str) -> tuple[AgentConfig, set[str]]:
    """Merge every ``*.json`` file of a directory (sorted, not recursive) into one partial."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise ConfigError(
            f"Error reading '{path}': {path_error('open', path, exc)}", path=path
        ) from None
    result = AgentConfig()
    keys: set[str] = set()
    for name in entries:
        sub = os.path.normpath(os.path.join(path, name))
        if os.path.isdir(sub) and not os.path.islink(sub):
            continue
        if not name.endswith(".json"):
            continue
        cfg, sub_keys = load_file(sub)
        result = merge(result, cfg, sub_keys)
        keys |= sub_keys
    return result, keys


def load_paths(paths: Sequence[str]) -> tuple[AgentConfig, set[str]]:
    """Load files and directories in order (serf's ReadConfigPaths), merged into one partial."""
    result = AgentConfig()
    keys: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            cfg, sub_keys = load_dir(path)
        else:
            cfg, sub_keys = load_file(path)
        result = merge(result, cfg, sub_keys)
        keys |= sub_keys
    return result, keys


_DEFAULTS = AgentConfig()


def _implicit_keys(cfg: AgentConfig) -> set[str]:
    """Keys treated as set when a source did not report its keys: values that differ from
    the defaults (so booleans can then only flip away from their default, like serf)."""
    return {k for k in CONFIG_KEYS if getattr(cfg, k) != getattr(_DEFAULTS, k)}


def merge(
    base: AgentConfig, override: AgentConfig, override_keys: Iterable[str] | None = None
) -> AgentConfig:
    """Merge ``override`` onto ``base`` with serf's rules; returns a new config.

    Non-empty strings and non-zero ints/durations replace; ``protocol`` only if > 0; tags merge
    per key; handler and join lists append.  Booleans listed in ``override_keys`` replace even
    when false (pyserf fix).  Without ``override_keys`` a key counts as set when its value
    differs from the default.
    """
    result = base.copy()
    keys = set(override_keys) if override_keys is not None else _implicit_keys(override)
    for name in CONFIG_KEYS:
        if name not in keys:
            continue
        value = getattr(override, name)
        kind = KINDS[name]
        if kind == "str":
            if value:
                setattr(result, name, value)
        elif kind == "int":
            if (name == "protocol" and value > 0) or (name != "protocol" and value != 0):
                setattr(result, name, value)
        elif kind == "dur":
            if value != 0:
                setattr(result, name, value)
        elif kind == "bool":
            setattr(result, name, bool(value))
        elif kind == "map":
            merged = dict(result.tags)
            merged.update(value)
            result.tags = merged
        elif kind == "obj":  # a later block replaces the whole earlier one
            if value:
                setattr(result, name, copy.deepcopy(value))
        elif kind == "list":
            setattr(result, name, list(getattr(result, name)) + list(value))
    return result


@dataclass
class ConfigSources:
    """Where a running agent's configuration came from, so SIGHUP can rebuild it.

    ``paths`` are the ``-config-file``/``-config-dir`` arguments in command-line order,
    ``flags`` the partial config built from the other flags and ``flag_keys`` the keys those
    flags set.  ``load()`` re-reads the files every time, like serf's reload.
    """

    paths: list[str] = field(default_factory=list)
    flags: AgentConfig = field(default_factory=AgentConfig)
    flag_keys: frozenset[str] = frozenset()
    argv: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)

    def load_unvalidated(self) -> AgentConfig:
        """Defaults ← files ← flags, then serf's fix-ups; warnings land in ``self.warnings``."""
        cfg = AgentConfig()
        file_cfg, file_keys = load_paths(self.paths)
        cfg = merge(cfg, file_cfg, file_keys)
        cfg = merge(cfg, self.flags, self.flag_keys)
        cfg, self.warnings = finalize(cfg)
        self.keys = set(file_keys) | set(self.flag_keys)
        return cfg

    def problems(self, cfg: AgentConfig) -> list[ConfigError]:
        """Every problem of ``cfg`` (see validate)."""
        return validate(cfg)

    def load(self) -> AgentConfig:
        """Build and validate the config; raises the first ConfigError found."""
        cfg = self.load_unvalidated()
        problems = self.problems(cfg)
        if problems:
            raise problems[0]
        return cfg
