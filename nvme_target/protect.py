"""Latency protection: the per-target control loop, pure Python (no I/O, no clock).

Volumes of class "latency" are protected; volumes of class "bulk" yield to them. Nodes
report, every fraction of a second, each published volume's mean latency per I/O,
bytes/s and I/O/s over their last window (from the namespace device's stats: means,
not percentiles). Each tick:

- a protected volume *breaches* when its mean latency is above its objective
  (qos.latencyTargetUs) or, without one, above BREACH_FACTOR x its calm baseline (a
  slowly rising minimum of its own calm latency); it is *calm* below CALM_FRACTION of
  that line; in between it holds (a dead band, so the loop settles);
- on any breach every active bulk volume's dynamic ceiling (bytes/s and I/O/s, both
  directions) is multiplied by target/latency, bounded to [MIN_DECREASE, DECREASE]
  (it starts from the rate the volume was doing), never below the volume's
  qos.minBPS / qos.minIOPS (or DEFAULT_FLOOR_*);
- when every active protected volume is calm, each ceiling grows by INCREASE_STEP of
  the rate it was first squeezed from, and is released once it reaches the static cap
  or twice that rate;
- fail open: with no fresh (STALE_AFTER) active protected report, or no fresh report of
  the bulk volume itself, its ceiling is released: the static caps alone are in force.

The ceiling never raises or removes a static cap: what a node enforces is the lower of
the two, per limit (`effective`). Oscillation bound under a steady load: once settled
the ceiling moves between c*·MIN_DECREASE..c*·DECREASE and c* + one step, where c* is the
rate at which the protected volume crosses its objective; the dead band keeps it still
while the latency stays between CALM_FRACTION and 1 x the objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from nvme_target.model import QoS

LATENCY, BULK = "latency", "bulk"
CLASSES = (LATENCY, BULK)
DECREASE = 0.5            # at most this fraction is kept on a breach
MIN_DECREASE = 0.125      # ... and at least this (a latency far above the objective)
INCREASE_STEP = 0.1       # of the rate first squeezed from, per calm tick
RELEASE_FACTOR = 2.0      # a ceiling this far above that rate is released
BREACH_FACTOR = 2.0       # no objective: a breach is this far above the calm baseline
CALM_FRACTION = 0.8       # calm below this fraction of the objective
BASELINE_RISE = 0.05      # how fast the baseline follows a calm latency upwards, per tick
STALE_AFTER = 3.0         # seconds without a report: that node is gone (fail open)
IDLE_IOPS = 5.0           # below this a volume is idle: no signal, no squeeze
IDLE_GRACE = 2.0          # seconds a protected volume must stay idle before its squeeze ends
DEFAULT_FLOOR_BPS = 1 << 20
DEFAULT_FLOOR_IOPS = 16


@dataclass(frozen=True)
class Sample:
    """One node's report of one volume over its last window; `at` is when it arrived."""

    latency_us: float
    bps: float
    iops: float
    at: float


@dataclass(frozen=True)
class Ceiling:
    """A bulk volume's dynamic ceiling; None in a dimension: none there."""

    bps: int | None
    iops: int | None
    reason: str
    peak_bps: float = 0.0   # the rates it was first squeezed from
    peak_iops: float = 0.0

    def qos(self) -> QoS:
        return QoS(read_bps=self.bps, write_bps=self.bps, read_iops=self.iops, write_iops=self.iops)


@dataclass(frozen=True)
class Verdict:
    volume_id: str
    latency_us: float
    objective_us: float | None
    state: str  # "breach", "calm", "hold", "idle", "stale", "learning"


def effective(static: QoS, ceiling: QoS | None) -> QoS:
    """What a node enforces: per limit the lower of the static cap and the ceiling."""
    if ceiling is None:
        return static.caps
    out = {}
    for attr in ("read_iops", "write_iops", "read_bps", "write_bps"):
        values = [v for v in (getattr(static, attr), getattr(ceiling, attr)) if v is not None]
        out[attr] = min(values) if values else None
    return QoS(**out)


@dataclass
class Protector:
    """The loop's state for one target: feed reports, call tick() periodically."""

    samples: dict[str, Sample] = field(default_factory=dict)
    ceilings: dict[str, Ceiling] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # the last change's reason per bulk volume
    decided_at: float = -1.0  # arrival of the newest protected report acted on
    active_at: dict[str, float] = field(default_factory=dict)  # when each protected volume last did I/O

    def report(self, volume_id: str, sample: Sample) -> None:
        self.samples[volume_id] = sample

    def forget(self, volume_id: str) -> None:
        for table in (self.samples, self.ceilings, self.baselines, self.verdicts, self.reasons, self.active_at):
            table.pop(volume_id, None)

    def tick(self, now: float, policies: Mapping[str, QoS]) -> dict[str, tuple[str, str]]:
        """One control step. Returns the changes: {bulk volume id: (direction, reason)},
        direction one of decrease, increase, release."""
        verdicts = [self._judge(vid, now, p) for vid, p in sorted(policies.items()) if p.qos_class == LATENCY]
        self.verdicts = {v.volume_id: v for v in verdicts}
        active = [v for v in verdicts if v.state in ("breach", "calm", "hold")]
        newest = max((self.samples[v.volume_id].at for v in active), default=0.0)
        fresh_news = newest > self.decided_at  # act once per report, not once per tick
        if fresh_news:
            self.decided_at = newest
        breach = next((v for v in active if v.state == "breach"), None) if fresh_news else None
        calm = fresh_news and bool(active) and all(v.state == "calm" for v in active)
        changes = {}
        for vid, policy in sorted(policies.items()):
            if policy.qos_class == BULK or vid in self.ceilings:
                change = self._steer(vid, now, policy, active, breach, calm)
                if change is not None:
                    changes[vid] = change
                    self.reasons[vid] = change[1]
        for vid in [v for v in self.ceilings if v not in policies]:
            del self.ceilings[vid]
        return changes

    # ----------------------------------------------------------- protected side
    def _judge(self, vid: str, now: float, policy: QoS) -> Verdict:
        sample = self._fresh(vid, now)
        if sample is None:
            return Verdict(vid, 0.0, policy.latency_target_us, "stale")
        objective = self._objective(vid, policy)
        if objective is not None and sample.latency_us > objective:
            state = "breach"  # even with few I/Os: a stalled reader completes few
        elif sample.iops < IDLE_IOPS:  # idle once it has been for IDLE_GRACE (no flapping)
            quiet = now - self.active_at.get(vid, -IDLE_GRACE) >= IDLE_GRACE
            return Verdict(vid, sample.latency_us, objective, "idle" if quiet else "hold")
        elif objective is None:
            self.baselines[vid] = sample.latency_us
            return Verdict(vid, sample.latency_us, None, "learning")
        elif sample.latency_us <= objective * CALM_FRACTION:
            state = "calm"
        else:
            state = "hold"
        self.active_at[vid] = now
        if state != "breach":
            self._learn(vid, sample.latency_us)
        return Verdict(vid, sample.latency_us, objective, state)

    def _objective(self, vid: str, policy: QoS) -> float | None:
        if policy.latency_target_us:
            return float(policy.latency_target_us)
        baseline = self.baselines.get(vid)
        return baseline * BREACH_FACTOR if baseline else None

    def _learn(self, vid: str, latency_us: float) -> None:
        base = self.baselines.get(vid, latency_us)
        self.baselines[vid] = latency_us if latency_us < base else base + (latency_us - base) * BASELINE_RISE

    # ---------------------------------------------------------------- bulk side
    def _steer(self, vid: str, now: float, policy: QoS, active: list[Verdict], breach: Verdict | None,
               calm: bool) -> tuple[str, str] | None:
        current = self.ceilings.get(vid)
        sample = self._fresh(vid, now)
        if policy.qos_class != BULK:
            return self._release(vid, "no longer of class bulk")
        if not active:
            return self._release(vid, "no active protected volume with a fresh report: static caps")
        if sample is None:
            return self._release(vid, "no fresh report from this volume's node: static caps")
        if breach is not None and (current is not None or sample.iops >= IDLE_IOPS):
            return self._decrease(vid, policy, sample, breach)
        if calm and current is not None:
            return self._increase(vid, policy, current)
        return None

    def _decrease(self, vid: str, policy: QoS, sample: Sample, breach: Verdict) -> tuple[str, str] | None:
        assert breach.objective_us is not None
        factor = min(DECREASE, max(MIN_DECREASE, breach.objective_us / max(breach.latency_us, 1.0)))
        current = self.ceilings.get(vid)
        peak_bps = current.peak_bps if current else _start(sample.bps, _cap(policy, "bps"))
        peak_iops = current.peak_iops if current else _start(sample.iops, _cap(policy, "iops"))
        bps = _lower(current.bps if current else peak_bps, factor, _floor(policy, "bps"))
        iops = _lower(current.iops if current else peak_iops, factor, _floor(policy, "iops"))
        if current is not None and (bps, iops) == (current.bps, current.iops):
            return None  # already at the floor
        reason = (f"decrease x{factor:.2f}: {breach.volume_id} latency {breach.latency_us:.0f} us > "
                  f"objective {breach.objective_us:.0f} us")
        self.ceilings[vid] = Ceiling(bps, iops, reason, peak_bps, peak_iops)
        return "decrease", reason

    def _increase(self, vid: str, policy: QoS, current: Ceiling) -> tuple[str, str]:
        bps = _raise(current.bps, current.peak_bps, _cap(policy, "bps"))
        iops = _raise(current.iops, current.peak_iops, _cap(policy, "iops"))
        if bps is None or iops is None:  # one dimension reached its cap (or 2x): release both
            return self._release(vid, "protected volumes calm: ceiling reached the static cap or twice the "
                                      "rate it squeezed")  # type: ignore[return-value]
        reason = "increase: protected volumes calm"
        self.ceilings[vid] = replace(current, bps=bps, iops=iops, reason=reason)
        return "increase", reason

    def _release(self, vid: str, why: str) -> tuple[str, str] | None:
        if self.ceilings.pop(vid, None) is None:
            return None
        return "release", f"released: {why}"

    def _fresh(self, vid: str, now: float) -> Sample | None:
        sample = self.samples.get(vid)
        return sample if sample is not None and now - sample.at <= STALE_AFTER else None


def _cap(policy: QoS, dim: str) -> int | None:
    """The static cap of a dimension: the larger of its read and write caps, when both are set
    (a ceiling above it restricts nothing), else None (one direction is uncapped)."""
    pair = (policy.read_bps, policy.write_bps) if dim == "bps" else (policy.read_iops, policy.write_iops)
    return max(pair) if None not in pair else None  # type: ignore[type-var]


def _floor(policy: QoS, dim: str) -> int:
    value = policy.min_bps if dim == "bps" else policy.min_iops
    return value if value else (DEFAULT_FLOOR_BPS if dim == "bps" else DEFAULT_FLOOR_IOPS)


def _start(measured: float, cap: int | None) -> float:
    """The rate a first squeeze starts from: what the volume did, never above its cap."""
    return min(measured, cap) if cap is not None else measured


def _lower(value: float | None, factor: float, floor: int) -> int:
    return max(floor, int((value or 0) * factor))


def _raise(value: int | None, peak: float, cap: int | None) -> int | None:
    """One additive step; None when released (at the cap or RELEASE_FACTOR x peak)."""
    if value is None:
        return None
    new = value + max(1, int(peak * INCREASE_STEP))
    limit = min(cap, peak * RELEASE_FACTOR) if cap is not None else peak * RELEASE_FACTOR
    return None if new >= limit else new
