"""How the simulated network delays and loses traffic: latency distributions and bursty loss.

Every draw comes from the network's one seeded ``random.Random``, so a run is reproducible
for a seed. ``Latency.uniform(lo, hi)`` draws exactly as the simulator always has (one
``rng.uniform``), so runs written for the ``latency=(lo, hi)`` form keep their outcomes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

Sampler = Callable[[random.Random], float]


class Latency:
    """A one-way delay distribution in seconds; never negative."""

    __slots__ = ("sample", "label")

    def __init__(self, sample: Sampler, label: str = "custom") -> None:
        self.sample = sample
        self.label = label

    def __repr__(self) -> str:
        return f"Latency({self.label})"

    @classmethod
    def uniform(cls, lo: float, hi: float) -> Latency:
        if not 0 <= lo <= hi:
            raise ValueError(f"uniform latency needs 0 <= lo <= hi, got ({lo}, {hi})")
        return cls(lambda rng: rng.uniform(lo, hi), f"uniform({lo}, {hi})")

    @classmethod
    def fixed(cls, delay: float) -> Latency:
        if delay < 0:
            raise ValueError(f"latency must not be negative: {delay}")
        return cls(lambda rng: delay, f"fixed({delay})")

    @classmethod
    def normal(cls, mean: float, sd: float, floor: float = 0.0) -> Latency:
        """Gaussian delay cut at ``floor`` (a wire never delivers faster than light)."""
        if sd < 0 or floor < 0:
            raise ValueError("normal latency needs sd >= 0 and floor >= 0")
        return cls(lambda rng: max(floor, rng.gauss(mean, sd)),
                   f"normal({mean}, {sd}, floor={floor})")

    @classmethod
    def lognormal(cls, median: float, sigma: float, floor: float = 0.0,
                  cap: float = math.inf) -> Latency:
        """``floor`` plus a log-normal tail: most packets near ``floor + median``, a few much
        later (queueing), as measured WAN round trips look; ``cap`` bounds the tail."""
        if median <= 0 or sigma < 0 or floor < 0:
            raise ValueError("lognormal latency needs median > 0, sigma >= 0, floor >= 0")
        mu = math.log(median)
        return cls(lambda rng: min(cap, floor + rng.lognormvariate(mu, sigma)),
                   f"lognormal({median}, {sigma}, floor={floor}, cap={cap})")

    @classmethod
    def of(cls, spec: Latency | tuple[float, float] | Sampler) -> Latency:
        """Accept the old ``(lo, hi)`` form, a ``Latency``, or any callable(rng) -> seconds."""
        if isinstance(spec, Latency):
            return spec
        if isinstance(spec, tuple):
            lo, hi = spec
            return cls.uniform(lo, hi)
        if callable(spec):
            return cls(lambda rng: max(0.0, float(spec(rng))), getattr(spec, "__name__", "fn"))
        raise TypeError(f"latency must be (lo, hi), a Latency or a callable, not {spec!r}")


class GilbertElliott:
    """Bursty loss: a two-state Markov chain stepped once per datagram.

    In the good state a datagram is lost with ``loss_good``, in the bad state with
    ``loss_bad``; before each datagram the chain moves good->bad with ``p_good_bad`` and
    bad->good with ``p_bad_good``. Mean burst length is 1 / p_bad_good datagrams and the
    long-run loss rate is loss_bad * p_gb / (p_gb + p_bg) + loss_good * p_bg / (p_gb + p_bg).
    """

    __slots__ = ("p_good_bad", "p_bad_good", "loss_bad", "loss_good", "bad")

    def __init__(self, p_good_bad: float, p_bad_good: float, loss_bad: float = 1.0,
                 loss_good: float = 0.0) -> None:
        for name, p in (("p_good_bad", p_good_bad), ("p_bad_good", p_bad_good),
                        ("loss_bad", loss_bad), ("loss_good", loss_good)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        self.p_good_bad = p_good_bad
        self.p_bad_good = p_bad_good
        self.loss_bad = loss_bad
        self.loss_good = loss_good
        self.bad = False

    def copy(self) -> GilbertElliott:
        """A fresh chain with the same parameters (each link keeps its own state)."""
        return GilbertElliott(self.p_good_bad, self.p_bad_good, self.loss_bad, self.loss_good)

    def mean_loss(self) -> float:
        total = self.p_good_bad + self.p_bad_good
        if total == 0:
            return self.loss_bad if self.bad else self.loss_good
        return (self.loss_bad * self.p_good_bad + self.loss_good * self.p_bad_good) / total

    def lost(self, rng: random.Random) -> bool:
        if self.bad:
            if rng.random() < self.p_bad_good:
                self.bad = False
        elif rng.random() < self.p_good_bad:
            self.bad = True
        loss = self.loss_bad if self.bad else self.loss_good
        return loss > 0 and rng.random() < loss


@dataclass(slots=True)
class Link:
    """What is special about traffic from one node to another."""

    udp_loss: float = 0.0
    tcp_loss: float = 0.0
    latency: Latency | None = None
    burst: GilbertElliott | None = None

    def is_default(self) -> bool:
        return not (self.udp_loss or self.tcp_loss or self.latency or self.burst)
