"""The statistics behind the dashboards, in plain Python (no Django): Wilson intervals for rates
and the test that decides whether a weekly rate jumped against its own trailing weeks."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_95 = 1.959963984540054


def wilson(count: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a proportion ``count / total``.

    Unlike the normal approximation it stays inside [0, 1] and is honest for small counts and
    for rates of 0 or 1 — most weekly artifact rates are small counts."""
    if total <= 0:
        return (0.0, 1.0)
    p = count / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class JumpTest:
    count: int
    total: int
    baseline_count: int
    baseline_total: int
    baseline_weeks: int
    dispersion: float
    p_value: float


def jump_test(count: int, total: int, trailing: list[tuple[int, int]]) -> JumpTest | None:
    """One-sided test that this week's rate ``count / total`` is above the trailing weeks' rate.

    ``trailing`` holds (count, total) of the previous weeks (those with no series are ignored).
    Model: under no change the week's count is binomial with the pooled trailing rate p0. Real
    weekly rates scatter more than binomially (case mix, operators), so the trailing weeks' own
    over-dispersion φ = Pearson χ² / (k - 1) (at least 1) scales the binomial variance down to an
    effective sample of ``total / φ`` (quasi-binomial): a week that moves no more than the
    trailing weeks already did is not a jump. The tail P(X ≥ x) of Binomial(n, p) is the
    regularised incomplete beta I_p(x, n - x + 1), which also takes the non-integer effective
    counts. p0 gets a Jeffreys-style half count so that a rate of 0 in the trailing weeks (spikes
    are rare) still gives a finite test. Returns None when there is too little history to test.
    """
    weeks = [(c, n) for c, n in trailing if n > 0]
    base_count = sum(c for c, _ in weeks)
    base_total = sum(n for _, n in weeks)
    if total <= 0 or len(weeks) < 4 or base_total < 20:
        return None
    p0 = base_count / base_total
    dispersion = 1.0
    if 0 < p0 < 1:
        chi2 = sum((c - n * p0) ** 2 / (n * p0 * (1 - p0)) for c, n in weeks)
        dispersion = max(1.0, chi2 / (len(weeks) - 1))
    p_ref = (base_count + 0.5) / (base_total + 1)
    if count / total <= p_ref:
        p_value = 1.0
    else:
        # Imported here: SciPy is ~15 MB of every web process's memory (MISSION: ≤ 300 MB), and
        # only the alert sweep computes this.
        from scipy.special import betainc

        x, n = count / dispersion, total / dispersion
        p_value = float(betainc(x, n - x + 1, p_ref)) if x > 0 else 1.0
    return JumpTest(count, total, base_count, base_total, len(weeks), dispersion, p_value)
