"""The canary verdict: from one step's live numbers, hold, advance, promote or roll back.

`judge` is a pure function of the policy, the step and the two versions' windows (counts since
the step started), so the controller around it (clock, Redis lease, route writes) stays thin
and every decision can be replayed from the numbers it logged.

Two rules, because a bad canary should leave at once but a good one should not be thrown out
over one unlucky request:

- Early rollback, at any time in the step: once the canary has `min_requests_to_judge` requests
  (or mirrored comparisons, for disagreement), it rolls back when a one-sided exact binomial test
  says, at `early_confidence`, that it breaks a bound: its error rate exceeds the stable rate plus
  `max_error_rate_increase`; more than 5 % of its requests are slower than the latency limit
  (which is what "p95 above the limit" means); its disagreement exceeds `max_disagreement`. A
  canary failing every request rolls back at its 10th request (at 5 % of 200 requests/s that is
  one second, plus one check interval); one 5xx in its first 20 requests does not roll it back,
  two do when stable has none (well under 1 in 10,000 for a version failing 0.01 %).
- End of step: once `hold_s` has passed and the canary has `min_requests`, the point estimates
  must meet every bound: all pass advances (or promotes after the last step), any break rolls back.
  With `max_error_rate_increase` at 0.1 %, one 5xx in fewer than 1,000 canary requests breaks it,
  so `min_requests` should be in the thousands where stable's error rate is near zero.

Latency is judged like for like: on the requests each version answered itself, not from the prediction
cache (`VersionWindow.uncached`). A stable version warm in the cache would otherwise look far faster
than a canary that starts cold. Both p95s, uncached and over every request, and each arm's cache hits
are in the verdict's numbers, so `canary status` shows what was compared and what clients saw. While
the cache answers every stable request of the window, stable's uncached latency since it loaded stands in.

The stable numbers are taken as exact (stable carries the rest of the traffic). When stable has
fewer than `min_requests_to_judge` requests in the window (the 100 % step sends it nothing),
`baseline` stands in when it has more: the stable window the controller recorded over the
previous step. With no stable request in either, the error rate is judged against 0 % and
latency is not compared (the reason says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from routing.document import Canary, CanaryThresholds
from routing.stats import VersionWindow

Action = Literal["hold", "advance", "promote", "rollback"]
SLOW_SHARE = 0.05  # p95 above the limit <=> more than 5 % of requests slower than it


@dataclass(frozen=True)
class CanaryPolicy:
    """How one canary is judged: its schedule and bounds, taken from its route document. The defaults
    live in one place each: the schedule's in routing/settings.py, the bounds' in `CanaryThresholds`."""

    steps: tuple[float, ...]
    hold_s: float
    min_requests: int
    thresholds: CanaryThresholds = field(default_factory=CanaryThresholds)
    min_requests_to_judge: int = 10
    early_confidence: float = 0.999  # one-sided, per check; the controller checks about once a second

    @classmethod
    def of(cls, canary: Canary) -> CanaryPolicy:
        return cls(steps=tuple(canary.steps), hold_s=canary.hold_s, min_requests=canary.min_requests,
                   thresholds=canary.thresholds)

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < w <= 100 for w in self.steps) or list(self.steps) != sorted(self.steps):
            raise ValueError("steps must be ascending weights in (0, 100]")
        if self.hold_s < 0 or self.min_requests < 0 or self.min_requests_to_judge < 1:
            raise ValueError("hold_s and min_requests must be >= 0, min_requests_to_judge >= 1")
        if not 0.5 <= self.early_confidence < 1:
            raise ValueError("early_confidence must lie in [0.5, 1)")


@dataclass(frozen=True)
class Verdict:
    """What to do now, a sentence with the numbers for the log and the event, and the numbers themselves.

    `numbers` holds canary_requests, stable_requests, canary_error_rate, stable_error_rate,
    canary_cache_hits, stable_cache_hits, elapsed_s, step and weight always; canary_p95_ms and
    stable_p95_ms (judged: uncached requests only), canary_p95_all_ms and stable_p95_all_ms (every
    request) and disagreement only when known (no latency observed, or no comparisons, leaves them
    out). stable_* are the reference's numbers, the baseline's when it stood in (then baseline_used is 1).
    """

    action: Action
    reason: str
    numbers: dict[str, float]


def binomial_tail(successes: float, trials: int, p: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, p): the p-value of 'the true share is above p'.

    Summed exactly in log space from `successes` upward, stopping once terms no longer matter;
    only called when successes > trials * p, where the terms shrink geometrically.
    """
    k0 = math.floor(successes)  # a fractional count (interpolated latency) is rounded in the canary's favour
    if k0 <= 0:
        return 1.0
    if k0 > trials or p >= 1.0:
        return 0.0 if k0 > trials else 1.0
    if p <= 0.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lg_n = math.lgamma(trials + 1)
    total = 0.0
    for k in range(k0, trials + 1):
        term = math.exp(lg_n - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p + (trials - k) * log_q)
        total += term
        if term < total * 1e-12 and k > trials * p:
            break
    return min(1.0, total)


def _confidently_above(count: float, trials: int, bound: float, confidence: float) -> bool:
    """The observed share count/trials is above `bound` beyond chance, at `confidence` (one-sided)."""
    if trials <= 0 or count <= trials * bound:
        return False
    return binomial_tail(count, trials, bound) < 1.0 - confidence


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def judge(
    policy: CanaryPolicy,
    step: int,
    elapsed_s: float,
    stable: VersionWindow,
    canary: VersionWindow,
    baseline: VersionWindow | None = None,
    stable_lifetime: VersionWindow | None = None,
) -> Verdict:
    """The verdict for step `step` (an index into policy.steps) after `elapsed_s` seconds of it.

    `stable` and `canary` are the windows since the step started; `baseline` is the stable window
    of the previous step, used when stable has too few requests now (see the module docstring).
    `stable_lifetime`: stable's counts since it loaded, whose uncached latency is the reference while a
    warm cache answers every stable request of the window (else a slow canary would pass unjudged).
    """
    if not 0 <= step < len(policy.steps):
        raise ValueError(f"step {step} is outside the policy's {len(policy.steps)} steps")
    enough = policy.min_requests_to_judge
    reference: VersionWindow | None = stable
    if stable.requests < enough and baseline is not None and baseline.requests > stable.requests:
        reference = baseline
    if reference.requests == 0:
        reference = None
    mirrored_possible = stable.requests >= enough  # without stable traffic there is little to mirror

    stable_rate = reference.error_rate() if reference is not None else 0.0
    stable_latency = reference.uncached() if reference is not None else None
    if (stable_latency is None or not stable_latency.observations) and stable_lifetime is not None:
        stable_latency = stable_lifetime.uncached()
    stable_p95 = stable_latency.p95_ms() if stable_latency is not None else None
    canary_latency = canary.uncached()
    canary_rate, canary_p95, disagreement = canary.error_rate(), canary_latency.p95_ms(), canary.disagreement()
    numbers: dict[str, float] = {
        "canary_requests": float(canary.requests),
        "stable_requests": float(reference.requests if reference is not None else stable.requests),
        "canary_error_rate": canary_rate,
        "stable_error_rate": stable_rate,
        "elapsed_s": float(elapsed_s),
        "step": float(step),
        "weight": float(policy.steps[step]),
        "baseline_used": 1.0 if reference is baseline and reference is not None else 0.0,
        # shown, never judged: a client can cause these at will
        "canary_client_errors": float(canary.client_errors),
        "canary_shed": float(canary.shed),
        "stable_client_errors": float(stable.client_errors),
        "stable_shed": float(stable.shed),
        "canary_cache_hits": float(canary.hits),
        "stable_cache_hits": float(reference.hits if reference is not None else stable.hits),
    }
    shown_latency = (("canary_p95_ms", canary_p95), ("stable_p95_ms", stable_p95), ("canary_p95_all_ms", canary.p95_ms()),
                     ("stable_p95_all_ms", reference.p95_ms() if reference is not None else None), ("disagreement", disagreement))
    for key, value in shown_latency:
        if value is not None:
            numbers[key] = value

    def verdict(action: Action, reason: str) -> Verdict:
        return Verdict(action, reason, numbers)

    error_bound = stable_rate + policy.thresholds.max_error_rate_increase
    error_text = f"canary error rate {_pct(canary_rate)} > stable {_pct(stable_rate)} + {_pct(policy.thresholds.max_error_rate_increase)}"
    limit_ms = stable_p95 * policy.thresholds.max_p95_ratio + policy.thresholds.p95_slack_ms if stable_p95 is not None else None
    p95_text = (
        f"canary p95 {canary_p95:.2f} ms > {policy.thresholds.max_p95_ratio:g} x stable p95 {stable_p95:.2f} ms + "
        f"{policy.thresholds.p95_slack_ms:g} ms (uncached requests)"
        if canary_p95 is not None and stable_p95 is not None
        else ""
    )
    dis_text = (
        f"disagreement {_pct(disagreement)} > {_pct(policy.thresholds.max_disagreement)} on {canary.comparisons} mirrored rows"
        if disagreement is not None and policy.thresholds.max_disagreement is not None
        else ""
    )

    # Early rollback: only on evidence, not on one unlucky request.
    early = f" (early: {canary.requests} requests in {elapsed_s:.0f} s, at {policy.early_confidence:.1%} confidence)"
    if canary.requests >= enough:
        if _confidently_above(canary.errors, canary.requests, error_bound, policy.early_confidence):
            return verdict("rollback", error_text + early)
        if limit_ms is not None and canary_latency.observations >= enough:
            slow = canary_latency.count_above_ms(limit_ms)
            if _confidently_above(slow, canary_latency.observations, SLOW_SHARE, policy.early_confidence):
                return verdict("rollback", p95_text + early)
    if (
        policy.thresholds.max_disagreement is not None
        and canary.comparisons >= enough
        and _confidently_above(canary.disagree, canary.comparisons, policy.thresholds.max_disagreement, policy.early_confidence)
    ):
        return verdict("rollback", dis_text + early)

    weight = f"step {step + 1}/{len(policy.steps)} at {policy.steps[step]:g} %"
    if elapsed_s < policy.hold_s:
        return verdict("hold", f"{weight}: held {elapsed_s:.0f} of {policy.hold_s:g} s")
    if canary.requests < policy.min_requests:
        return verdict("hold", f"{weight}: {canary.requests} of {policy.min_requests} canary requests")
    waiting_mirrors = policy.thresholds.max_disagreement is not None and canary.comparisons < enough and mirrored_possible
    if waiting_mirrors:
        return verdict("hold", f"{weight}: {canary.comparisons} of {enough} mirrored comparisons")

    # End of step: the point estimates must meet every bound.
    if canary_rate > error_bound:
        return verdict("rollback", error_text)
    if limit_ms is not None and canary_p95 is not None and canary_p95 > limit_ms:
        return verdict("rollback", p95_text)
    if policy.thresholds.max_disagreement is not None and disagreement is not None and disagreement > policy.thresholds.max_disagreement:
        return verdict("rollback", dis_text)

    notes = [f"canary error rate {_pct(canary_rate)} vs stable {_pct(stable_rate)}"]
    if canary_p95 is not None and stable_p95 is not None:
        notes.append(f"uncached p95 {canary_p95:.2f} vs {stable_p95:.2f} ms")
    else:
        notes.append("p95 not compared (no uncached latency of both versions to compare)")
    if disagreement is not None:
        notes.append(f"disagreement {_pct(disagreement)}")
    if reference is not None and reference is baseline:
        notes.append("stable numbers from the previous step")
    healthy = f"{weight} healthy after {elapsed_s:.0f} s and {canary.requests} requests: " + ", ".join(notes)
    return verdict("promote" if step == len(policy.steps) - 1 else "advance", healthy)
