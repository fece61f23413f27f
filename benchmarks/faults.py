"""Faults side by side with serf: partitions, loss, CPU starvation, pauses and churn.

Each scenario builds fresh clusters in one lab (tests/e2e/faultlab.py: every agent in its own
network namespace on a bridge), applies the same fault to the same host positions of every
cluster at the same moment, fires user events and queries throughout, and measures per cluster:
false failure verdicts about members that were fine, time until everyone sees a killed member
failed, time until everyone sees everyone alive after a heal, user events lost or delivered
twice among the members that were up all along, and query completeness. Layouts:

- ``pure``: a 20-agent pyserf cluster next to a 20-agent serf cluster (ratios pyserf/serf);
- ``mixed``: one cluster of 10 pyserf + 10 serf agents (ratios by observer implementation).

Usage::

    python benchmarks/faults.py [--scenarios partition20,loss10,...] [--layouts pure,mixed]
        [--n 20] [--repeat 3] [--scale 1.0] [--json benchmarks/results/faults.json]

``--scale`` multiplies every hold and fault duration (the test tier runs a short version).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import faultlab as fl  # noqa: E402

# Protocol figures (LAN profile) the bounds below come from.
PUSH_PULL = 30.0  # memberlist push-pull interval below 32 members
RECONNECT = 30.0  # serf's reconnect interval: a failed member is retried every 30 s
GOSSIP_TO_DEAD = 30.0  # memberlist keeps gossiping to a dead member this long


@dataclass
class Ctx:
    lab: fl.Lab
    clusters: list[fl.Cluster]
    n: int
    scale: float
    rng: random.Random
    stable: list[int]  # host positions never churned (event/query observers and senders)
    heal: float | None = None  # when the last fault was lifted
    kills: list[dict] | None = None
    notes: str = ""

    def hold(self, seconds: float) -> float:
        held = seconds * self.scale
        time.sleep(held)
        return held

    def each(self, fn: Callable[[fl.Cluster], object]) -> list:
        return list(self.lab.pool.map(fn, self.clusters))


def partition(hold: float, one_way: bool = False) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        half = ctx.n // 2
        ctx.each(lambda c: ctx.lab.partition(c, c.agents[:half], c.agents[half:], one_way))
        ctx.hold(hold)
        ctx.heal = max(ctx.each(ctx.lab.heal))
    return run


def isolate(hold: float) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        ctx.each(lambda c: ctx.lab.isolate(c, c.agents[ctx.n - 1]))
        ctx.hold(hold)
        ctx.heal = max(ctx.each(ctx.lab.heal))
    return run


def loss(probability: float, hold: float) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        ctx.each(lambda c: ctx.lab.loss(c, c.agents, probability))
        ctx.hold(hold)
        ctx.heal = max(ctx.each(ctx.lab.heal))
    return run


def delay(ms: int, jitter: int, hold: float) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        why = ctx.lab.probe_netem(ctx.clusters[0].agents[0])
        if why is not None:
            ctx.notes = f"skipped: tc netem is not available on this kernel ({why})"
            return
        ctx.each(lambda c: ctx.lab.delay(c, c.agents, ms, jitter))
        ctx.hold(hold)
        ctx.heal = max(ctx.each(ctx.lab.heal))
    return run


STARVED = [1, 2, 3]


def starve(percent: float, hold: float) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        ctx.each(lambda c: ctx.lab.starve(c, c.by_index(STARVED), percent))
        ctx.hold(hold)
        ctx.each(lambda c: ctx.lab.unstarve(c, c.by_index(STARVED)))
        ctx.heal = time.monotonic()
    return run


def pause(stop_for: float, every: float, hold: float) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        pauser = fl.pauses(ctx.lab, ctx.clusters, STARVED, stop_for, every, hold * ctx.scale)
        ctx.hold(hold)
        pauser.stop()
        fl.end_pauses(ctx.lab, ctx.clusters, STARVED)
        ctx.heal = time.monotonic()
    return run


def churn(hold: float, every: float = 10.0) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        churnable = [i for i in range(ctx.n) if i not in ctx.stable]
        churner = fl.Churn(ctx.lab, ctx.clusters, churnable, ctx.stable, every,
                           hold * ctx.scale, ctx.rng)
        ctx.hold(hold)
        churner.stop()
        ctx.kills = churner.kills
        ctx.heal = time.monotonic()
    return run


SCENARIOS: dict[str, Callable[[], Callable[[Ctx], None]]] = {
    "partition20": lambda: partition(20),
    "partition120": lambda: partition(120),
    "oneway30": lambda: partition(30, one_way=True),
    "isolate60": lambda: isolate(60),
    "loss10": lambda: loss(0.10, 120),
    "loss30": lambda: loss(0.30, 120),
    "delay50": lambda: delay(50, 20, 120),
    "starve5": lambda: starve(5, 120),
    "starve1": lambda: starve(1, 120),
    "sigstop": lambda: pause(0.3, 2.0, 120),
    "sigstop2": lambda: pause(2.0, 5.0, 120),
    "churn": lambda: churn(600),
}
CHURN_STABLE_SHARE = 0.5


def layout(name: str, n: int) -> dict[str, list[str]]:
    """Cluster label -> the implementation at each host position."""
    pure = {"p": ["pyserf"] * n, "s": ["serf"] * n}
    mixed = {"m": ["pyserf" if i % 2 == 0 else "serf" for i in range(n)]}
    layouts = {"pure": pure, "mixed": mixed, "all": {**pure, **mixed}}
    if name not in layouts:
        raise SystemExit(f"unknown layout {name!r}: pick from {', '.join(layouts)}")
    return layouts[name]


def run_scenario(name: str, layout_name: str, n: int, scale: float, seed: int,
                 workdir: Path, horizon: float = 150.0) -> dict:
    rng = random.Random(seed)
    stable = list(range(n))
    if name == "churn":
        stable = list(range(0, n, round(1 / CHURN_STABLE_SHARE)))
    with fl.lab(workdir) as lab:
        clusters = [lab.cluster(label, kinds) for label, kinds in layout(layout_name, n).items()]
        formed = lab.form(clusters)
        ctx = Ctx(lab, clusters, n, scale, rng, stable)
        senders = {c.label: c.by_index(stable) for c in clusters}
        time.sleep(2.0)
        t_start = time.monotonic()
        load = fl.traffic(lab, clusters, senders, event_every=1.0, query_every=5.0,
                          limit=3600, rng=rng)
        SCENARIOS[name]()(ctx)
        rpc_converged = lab.wait_converged(clusters, horizon)
        for every in load:
            every.stop()
        stable_names = {c.label: [c.agents[i].name for i in stable] for c in clusters}
        for c in clusters:
            fl.wait_events_delivered(c, stable_names[c.label], PUSH_PULL * 2)
        t_end = time.monotonic()
        out = {"scenario": name, "layout": layout_name, "n": n, "scale": scale, "seed": seed,
               "formed_s": round(formed, 2), "notes": ctx.notes,
               "throttled": lab.throttled,
               "converged_after_fault_s": None if rpc_converged is None else round(
                   rpc_converged, 2),
               "clusters": {}}
        for c in clusters:
            kinds = sorted({a.kind for a in c.agents})
            stats = {"kinds": kinds, "observer_kinds": {a.name: a.kind for a in c.agents},
                     "false_failures": fl.false_failures(c, t_start, t_end),
                     "events": fl.event_delivery(c, stable_names[c.label]),
                     "queries": fl.query_completeness(c, stable_names[c.label], t_start),
                     "stuck": stuck(c)}
            if ctx.heal is not None:
                for kind in [None, *kinds] if len(kinds) > 1 else [None]:
                    key = "reconverge_s" if kind is None else f"reconverge_s_{kind}_observers"
                    stats[key] = fl.reconvergence(c, c.heal_began or ctx.heal, horizon, kind)
            if ctx.kills:
                stats["detection"] = fl.detection_times(c, ctx.kills)
            out["clusters"][c.label] = stats
        return out


def stuck(cluster: fl.Cluster) -> dict[str, dict[str, str]]:
    """Members some running agent lists in a state other than alive at the end."""
    wrong = {}
    for agent in cluster.agents:
        if agent.up():
            view = cluster.statuses(agent)
            bad = {m: s for m, s in view.items() if s != "alive"}
            if bad or len(view) < sum(1 for a in cluster.agents if a.up()):
                wrong[agent.name] = bad or {"<missing>": str(len(view))}
    return wrong


# ---- summary -----------------------------------------------------------------------------------


def headline(run: dict) -> dict[str, dict[str, dict[str, float | None]]]:
    """section ('pure' or 'mixed') -> implementation -> the compared figures. In the mixed
    cluster an implementation's figures are its observers' verdicts and deliveries."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for c in run["clusters"].values():
        ff = c["false_failures"]
        mixed = len(c["kinds"]) > 1
        for kind in c["kinds"]:
            row = out.setdefault("mixed" if mixed else "pure", {}).setdefault(kind, {})
            by = [v for k, v in ff["by"].items() if k.startswith(f"{kind}->")]
            row["fp"] = sum(v[0] for v in by)
            row["fp_s"] = sum(v[1] for v in by)
            row["fp_live"] = None if mixed else ff["live"][0]
            row["suspicions"] = ff["suspicions_by_observer"].get(kind, 0)
            key = f"reconverge_s_{kind}_observers" if mixed else "reconverge_s"
            row["reconverge_s"] = c.get(key)
            times = []
            for d in c.get("detection", []):
                if not d["graceful"] and d["all"] is not None and d["by_kind"].get(kind):
                    times.append(max(d["by_kind"][kind]))
            row["detect_median_s"] = statistics.median(times) if times else None
            ev = c["events"]
            mine = c["observer_kinds"]
            row["lost"] = sum(len(v) for o, v in ev["lost_at"].items() if mine[o] == kind)
            row["dup"] = sum(len(v) for o, v in ev["duplicated_at"].items() if mine[o] == kind)
            row["query_mean"] = c["queries"]["mean"]
            row["stuck"] = len(c["stuck"])
    return out


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if b == 0:
        return "=" if a == 0 else "inf"
    return f"{a / b:.2f}"


METRICS = ("fp", "fp_s", "fp_live", "suspicions", "reconverge_s", "detect_median_s", "lost",
           "dup", "query_mean", "stuck")


def summarize(runs: list[dict]) -> list[str]:
    """Mean of each figure over the repetitions, pyserf next to serf, and their ratio."""
    lines = []
    keys = sorted({(r.get("label", ""), r["scenario"]) for r in runs},
                  key=lambda k: (k[0], list(SCENARIOS).index(k[1])))
    for label, scenario in keys:
        heads = [headline(r) for r in runs
                 if (r.get("label", ""), r["scenario"]) == (label, scenario)]
        for section in ("pure", "mixed"):
            group = [h[section] for h in heads if section in h]
            if not group:
                continue
            lines.append(f"{label + ': ' if label else ''}{scenario} [{section}] x{len(group)}")
            for metric in METRICS:
                vals, worst = {}, {}
                for kind in ("pyserf", "serf"):
                    xs = [g[kind][metric] for g in group
                          if g.get(kind, {}).get(metric) is not None]
                    vals[kind] = statistics.mean(xs) if xs else None
                    worst[kind] = max(xs) if xs else None
                if vals["pyserf"] is None and vals["serf"] is None:
                    continue
                fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                lines.append(f"  {metric:16} pyserf {fmt(vals['pyserf']):>8} (max "
                             f"{fmt(worst['pyserf']):>6})  serf {fmt(vals['serf']):>8} (max "
                             f"{fmt(worst['serf']):>6})  ratio "
                             f"{ratio(vals['pyserf'], vals['serf'])}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--layouts", default="pure,mixed")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None,
                    help="append the runs to this file (and rewrite its summary)")
    ap.add_argument("--label", default="", help="tag these runs, e.g. the commit measured")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep every agent's log under this directory")
    args = ap.parse_args()
    # A TERM (timeout, CI) unwinds like an exception, so the lab is torn down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    why = fl.missing_prerequisites()
    if why:
        print("cannot run the fault lab here: needs " + ", ".join(why), file=sys.stderr)
        return 2
    runs: list[dict] = []
    if args.json and args.json.exists():
        runs = json.loads(args.json.read_text()).get("runs", [])
    for rep in range(args.repeat):
        for scenario in args.scenarios.split(","):
            for lay in args.layouts.split(","):
                t0 = time.monotonic()
                with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
                    workdir = Path(tmp)
                    if args.keep:
                        workdir = args.keep / f"{scenario}-{lay}-{rep}"
                        workdir.mkdir(parents=True, exist_ok=True)
                    result = run_scenario(scenario, lay, args.n, args.scale,
                                          args.seed * 1000 + rep, workdir)
                result["wall_s"] = round(time.monotonic() - t0, 1)
                result["label"] = args.label
                runs.append(result)
                print(json.dumps(headline(result)), f"{scenario} [{lay}] rep {rep}",
                      f"{result['wall_s']}s", flush=True)
                if args.json:
                    fl.dump(args.json, {"runs": runs, "summary": summarize(runs)})
    print("\n".join(summarize(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
