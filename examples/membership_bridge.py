"""React to cluster membership from application code, over the agent's HTTP event stream.

What seed 004's serf-scala-bridge needs a handler script plus a REST server for (Serf calls
the script, the script calls the server, the server tells the application) is one loop here:
read ``GET /v1/event/stream`` and act on each event. Reconnects resume with ``Last-Event-ID``;
after a ``gap`` (events lost while away) the member list is re-read instead.

    pyserf agent -node=n1 -tag dc=dc1 -http-addr=127.0.0.1:8500
    python examples/membership_bridge.py http://127.0.0.1:8500 [token]

Standard library only. Replace ``on_change`` with what your application does.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator

ALIVE: dict[str, dict[str, str]] = {}  # member name -> tags, what the application sees


def on_change(kind: str, name: str, tags: dict[str, str]) -> None:
    """The application's reaction (here: print the per-datacenter view)."""
    dcs = sorted({t.get("dc", "?") for t in ALIVE.values()})
    print(f"{kind} {name} dc={tags.get('dc', '?')} alive={sorted(ALIVE)} dcs={dcs}",
          flush=True)


def request(url: str, token: str, **headers: str) -> urllib.request.Request:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return urllib.request.Request(url, headers=headers)


def resync(base: str, token: str) -> None:
    """Start over from the member list (at start and after a gap)."""
    with urllib.request.urlopen(request(f"{base}/v1/agent/members", token)) as resp:
        members = json.load(resp)
    ALIVE.clear()
    ALIVE.update({m["Name"]: m["Tags"] for m in members if m["Status"] == "alive"})
    on_change("sync", "*", {})


def events(base: str, token: str, last_id: str) -> Iterator[tuple[str, str, dict]]:
    """(id, event type, data) from the stream, until the connection ends."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    url = f"{base}/v1/event/stream?type=member-join,member-leave,member-failed,member-update"
    with urllib.request.urlopen(request(url, token, **headers)) as resp:
        event: dict[str, str] = {}
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line:
                key, _, value = line.partition(": ")
                event[key] = value
            elif "event" in event:
                yield event.get("id", ""), event["event"], json.loads(event["data"])
                event = {}


def main(base: str, token: str = "") -> None:
    last_id = ""
    resync(base, token)
    while True:
        try:
            for event_id, kind, data in events(base, token, last_id):
                last_id = event_id or last_id
                if kind == "gap":
                    resync(base, token)
                    continue
                for member in data["Members"]:
                    if kind in ("member-join", "member-update"):
                        ALIVE[member["Name"]] = member["Tags"]
                    else:
                        ALIVE.pop(member["Name"], None)
                    on_change(kind, member["Name"], member["Tags"])
        except OSError as exc:  # agent restarting: retry, resuming where we were
            print(f"stream lost ({exc}); reconnecting", file=sys.stderr, flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
