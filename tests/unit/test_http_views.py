"""The HTTP API's pure parts: member JSON, member filters, parameters, the SSE ring and
subscribers, and the http_* config checks (pyserf/http/views.py, sse.py, settings.py)."""

from __future__ import annotations

import json

import pytest
from multidict import MultiDict

from pyserf.agent.config import AgentConfig, ConfigError
from pyserf.agent.config_validate import validate
from pyserf.agent.event_filter import parse_event_filter
from pyserf.http import views
from pyserf.http.settings import http_problems, parse_http_addr
from pyserf.http.sse import EventRing, Subscriber, TypeFilter, comment, frame
from pyserf.http.views import ApiError, MemberFilter
from pyserf.serf.events import MemberEvent, QueryReceived, UserEventReceived
from pyserf.serf.members import Member, MemberStatus


def _member(name: str, status: MemberStatus = MemberStatus.ALIVE, **tags: str) -> Member:
    return Member(name, "10.0.0.1", 7946, dict(tags), status)


def test_member_json_has_consuls_keys_and_serfs_status_word() -> None:
    out = views.member_json(_member("web-1", MemberStatus.LEFT, role="web"))
    assert out == {"Name": "web-1", "Addr": "10.0.0.1", "Port": 7946, "Tags": {"role": "web"},
                   "Status": "left", "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                   "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 5}


def test_event_json_shapes_member_user_and_query_events() -> None:
    kind, name, record = views.event_json(MemberEvent("member-join", [_member("a")]))
    assert (kind, name, record["Members"][0]["Name"]) == ("member-join", "", "a")
    kind, name, record = views.event_json(UserEventReceived(7, "deploy", b"v1", False))
    assert (kind, name) == ("user", "deploy")
    assert record == {"Event": "user", "LTime": 7, "Name": "deploy", "Payload": "djE=",
                      "Coalesce": False}
    query = QueryReceived(3, "uptime", b"", 9, ("10.0.0.2", 7946), "b", 0.0, 0)
    kind, name, record = views.event_json(query)
    assert (kind, name, record["Payload"], record["From"]) == ("query", "uptime", None, "b")
    assert views.event_json(object()) is None


def _filter(**params: str | list[str]) -> MemberFilter:
    md: MultiDict[str] = MultiDict()
    for key, value in params.items():
        for v in value if isinstance(value, list) else [value]:
            md.add(key, v)
    return MemberFilter.parse(md)


def test_member_filters_are_anchored_re2_like_serf_members() -> None:
    members = [_member("web-1", role="web", dc="a"), _member("web-10", role="web", dc="b"),
               _member("db-1", MemberStatus.FAILED, role="db")]

    def names(f: MemberFilter) -> list[str]:
        return [m.name for m in members if f.matches(m)]

    assert names(_filter()) == ["web-1", "web-10", "db-1"]
    assert names(_filter(name="web-1")) == ["web-1"]  # anchored: web-10 does not match
    assert names(_filter(name="web-.*")) == ["web-1", "web-10"]
    assert names(_filter(status="failed")) == ["db-1"]
    assert names(_filter(status="alive|failed")) == ["web-1", "web-10", "db-1"]
    assert names(_filter(tag=["role:web", "dc:b"])) == ["web-10"]
    assert names(_filter(tag="missing:")) == ["web-1", "web-10", "db-1"]  # "" matches ^$


@pytest.mark.parametrize(("params", "field"), [
    ({"name": "(a"}, "name"), ({"status": "a{1001}"}, "status"), ({"tag": "role"}, "tag"),
    ({"tag": ":web"}, "tag"), ({"tag": "role:(?=x)"}, "tag"), ({"tag": ["a:b"] * 33}, "tag"),
])
def test_bad_member_filters_are_400_naming_the_field(params: dict, field: str) -> None:
    with pytest.raises(ApiError) as err:
        _filter(**params)
    assert (err.value.status, err.value.field) == (400, field)
    assert err.value.fix


def test_backtracking_pattern_is_linear_time() -> None:
    f = _filter(name="(a*)*$")
    assert f.matches(_member("a" * 5000)) and not f.matches(_member("a" * 5000 + "b"))


def test_parameters_parse_or_say_how_to_fix() -> None:
    assert views.parse_duration_param("", "wait", 5.0, views.MAX_WAIT) == 5.0
    assert views.parse_duration_param("1m30s", "wait", 5.0, views.MAX_WAIT) == 90.0
    assert views.parse_duration_param("2", "wait", 5.0, views.MAX_WAIT) == 2.0
    assert views.parse_duration_param("9999h", "wait", 5.0, views.MAX_WAIT) == views.MAX_WAIT
    for bad in ("-1s", "soon", "1e400", "nan"):
        with pytest.raises(ApiError, match="not a duration"):
            views.parse_duration_param(bad, "wait", 5.0, views.MAX_WAIT)
    assert views.parse_index("") == 0 and views.parse_index("42") == 42
    for bad in ("-1", "1.5", "٣", "9" * 20):
        with pytest.raises(ApiError) as err:
            views.parse_index(bad)
        assert err.value.field == "index"
    assert views.parse_bool({"prune": ""}, "prune") and not views.parse_bool({}, "prune")
    assert not views.parse_bool({"prune": "false"}, "prune")
    with pytest.raises(ApiError):
        views.parse_bool({"prune": "maybe"}, "prune")
    assert views.parse_int({"relay": "3"}, "relay", 0, 5, 0) == 3
    with pytest.raises(ApiError):
        views.parse_int({"relay": "6"}, "relay", 0, 5, 0)


def test_sse_frames_carry_id_type_and_one_data_line() -> None:
    assert frame("e-1", "user", '{"a":1}') == b'id: e-1\nevent: user\ndata: {"a":1}\n\n'
    assert frame(None, "gap", "{}") == b"event: gap\ndata: {}\n\n"
    assert comment("heartbeat") == b": heartbeat\n\n"
    ring = EventRing(4, epoch="ep")
    event = ring.append("user", "x", {"Payload": "line1\nline2"})
    assert "\n" not in event.data and json.loads(event.data)["Payload"] == "line1\nline2"


def test_ring_resumes_exactly_while_it_holds_the_missed_events() -> None:
    ring = EventRing(3, epoch="ep")
    for n in range(5):
        ring.append("user", f"e{n}", {"N": n})
    # seqs 1..5; the ring keeps 3, 4, 5
    assert [e.seq for e in ring.events] == [3, 4, 5]
    assert ring.since("ep-2") == (True, list(ring.events))
    assert ring.since("ep-4") == (True, [ring.events[2]])
    assert ring.since("ep-5") == (True, [])
    for stale in ("ep-1", "ep-0", "ep-6", "other-4", "garbage", "ep-", "ep-٣", ""):
        assert ring.since(stale) == (False, list(ring.events)), stale


def test_subscriber_drops_a_full_queue_once_and_never_blocks() -> None:
    ring = EventRing(100, epoch="ep")
    drops: list[Subscriber] = []
    wakes: list[int] = []
    only_join = TypeFilter(tuple(parse_event_filter("member-join,user:deploy")))
    sub = Subscriber(only_join.matches, lambda: wakes.append(1), drops.append, limit=3)
    sub.push(ring.append("member-leave", "", {}))
    sub.push(ring.append("user", "other", {}))
    assert not sub.queue and not wakes  # filtered out
    sub.extend(ring.append("user", "deploy", {"N": n}) for n in range(3))
    assert [json.loads(e.data)["N"] for e in sub.take()] == [0, 1, 2]
    for n in range(5):
        sub.push(ring.append("member-join", "", {"N": n}))
    assert drops == [sub] and sub.dropped and not sub.queue


def test_http_settings_name_the_key_and_the_fix(tmp_path) -> None:
    assert parse_http_addr("[::1]:8500") == ("::1", 8500)
    for bad in ("127.0.0.1", "127.0.0.1:0", "127.0.0.1:http", "127.0.0.1:99999", ":٣"):
        with pytest.raises(ValueError):
            parse_http_addr(bad)

    def keys(**kw: object) -> list[str]:
        return [p.key for p in http_problems(AgentConfig(**kw), ConfigError)]

    assert keys() == [] and keys(http_addr="127.0.0.1:8500") == []
    assert keys(http_addr="nope") == ["http_addr"]
    assert keys(http_token="t") == ["http_token"]  # without http_addr
    assert keys(http_addr="127.0.0.1:1", http_token="has space") == ["http_token"]
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    assert keys(http_addr="127.0.0.1:1", http_tls_cert=str(cert)) == ["http_tls_key"]
    assert keys(http_addr="127.0.0.1:1", http_tls_cert=str(cert),
                http_tls_key=str(tmp_path / "missing")) == ["http_tls_key"]
    assert keys(http_max_connections=0) == ["http_max_connections"]
    assert keys(http_max_body_bytes=10**12) == ["http_max_body_bytes"]
    assert keys(http_idle_timeout=0.0) == ["http_idle_timeout"]
    problem = validate(AgentConfig(http_addr="localhost"))[0]
    assert problem.stage == "setup" and "host:port" in str(problem)
