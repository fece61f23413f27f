"""Decoding one JSON config object into a partial :class:`~pyserf.agent.config.AgentConfig`.

Serf decodes its config with mapstructure over Go's JSON values and parses durations with
``time.ParseDuration`` afterwards; the checks, their order and their texts are the same here
(Go's type names and ``%v`` come from :mod:`pyserf.gocompat`). Every decode also reports
which keys the object set, so a later source can turn a boolean off (see config_load.merge).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from pyserf.agent.config import KINDS, AgentConfig, ConfigError
from pyserf.gocompat.durations import parse_duration
from pyserf.gocompat.fmt import json_kind, json_type, value_v

__all__ = ["decode_config"]

# serf parses the duration strings in this order after decoding, reporting the first failure.
DURATION_ORDER = (
    "reconnect_interval",
    "reconnect_timeout",
    "tombstone_timeout",
    "retry_interval",
    "broadcast_timeout",
    "handler_timeout",
    "http_idle_timeout",
)


def _unconvertible(name: str, want: str, value: Any) -> str:
    return (
        f"'{name}' expected type '{want}', got unconvertible type '{json_type(value)}', "
        f"value: '{value_v(value)}'"
    )


def _decode_string(name: str, value: Any, errors: list[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    errors.append(_unconvertible(name, "string", value))
    return None


def decode_config(raw: Any) -> tuple[AgentConfig, set[str]]:
    """Decode a JSON-decoded object into a partial AgentConfig like serf's mapstructure step.

    Returns the config (unset keys keep defaults) and the keys the object set.  Unknown keys,
    wrong types and bad durations raise ConfigError with serf's wording.
    """
    cfg = AgentConfig()
    keys: set[str] = set()
    if raw is None:
        return cfg, keys
    if not isinstance(raw, dict):
        raise ConfigError(f"'' expected a map, got '{json_kind(raw)}'")
    errors: list[str] = []
    unused = set(raw)
    durations: dict[str, str] = {}
    for name, kind in KINDS.items():
        # An exact match first, then any key equal ignoring case (as mapstructure does).
        lowered = name.lower()
        data_key = name if name in raw else next((k for k in raw if k.lower() == lowered), None)
        if data_key is None:
            continue
        unused.discard(data_key)
        value = raw[data_key]
        if value is None:
            continue
        if kind in ("str", "dur"):
            text = _decode_string(name, value, errors)
            if text is None:
                continue
            if kind == "dur":
                if text:
                    durations[name] = text
                continue
            setattr(cfg, name, text)
        elif kind == "bool":
            if not isinstance(value, bool):
                errors.append(_unconvertible(name, "bool", value))
                continue
            setattr(cfg, name, value)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(_unconvertible(name, "int", value))
                continue
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(_unconvertible(name, "int", value))
                continue
            setattr(cfg, name, int(value))
        elif kind == "map":
            if not isinstance(value, dict):
                errors.append(f"'{name}' expected a map, got '{json_kind(value)}'")
                continue
            tags: dict[str, str] = {}
            for tag_key, tag_value in value.items():
                text = _decode_string(f"{name}[{tag_key}]", tag_value, errors)
                tags[tag_key] = text or ""
            setattr(cfg, name, tags)
        elif kind == "obj":  # checked as a whole by validate()
            if not isinstance(value, dict):
                errors.append(f"'{name}' expected a map, got '{json_kind(value)}'")
                continue
            setattr(cfg, name, copy.deepcopy(value))
        elif kind == "list":
            if not isinstance(value, list):
                errors.append(
                    f"'{name}': source data must be an array or slice, got {json_kind(value)}"
                )
                continue
            items: list[str] = []
            for idx, item in enumerate(value):
                text = _decode_string(f"{name}[{idx}]", item, errors)
                items.append(text or "")
            setattr(cfg, name, items)
        keys.add(name)
    if unused:
        errors.append("'' has invalid keys: " + ", ".join(sorted(unused)))
    if errors:
        points = sorted(f"* {e}" for e in errors)
        raise ConfigError(f"{len(errors)} error(s) decoding:\n\n" + "\n".join(points))
    for name in DURATION_ORDER:
        if name in durations:
            try:
                setattr(cfg, name, parse_duration(durations[name]))
            except ValueError as exc:
                raise ConfigError(str(exc), key=name) from None
            keys.add(name)
    return cfg, keys
