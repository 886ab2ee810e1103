"""Shares with honest uncertainty: Wilson intervals and a one-sided test of two proportions;
and, for judges that score every poem (NADE's intensities), a one-sided rank test with its
effect size.

Fidelity figures come from a few dozen sampled poems, so a share of 0.12 against 0.06 may be
luck. Every share the project reports carries its `n` and a 95% Wilson score interval (good
at small n and near 0 or 1, where the normal approximation gives negative lower bounds), and
the promotion gate asks Fisher's exact test whether a child's share really beats the base's.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Z_95 = 1.959963984540054  # the two-sided 95% normal quantile


@dataclass(frozen=True)
class Share:
    """`k` of `n`, with its 95% Wilson interval [low, high]."""

    k: int
    n: int
    share: float
    low: float
    high: float

    @classmethod
    def of(cls, k: int, n: int) -> "Share":
        low, high = wilson_interval(k, n)
        return cls(k, n, k / n if n else 0.0, low, high)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        """`0.31 [0.21, 0.44] of 64`: how the CLI, cards and reports print a share."""
        return f"{self.share:.2f} [{self.low:.2f}, {self.high:.2f}] of {self.n}"


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials ((0, 1) when n is 0)."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exact ends at k = 0 and k = n (rounding would leave 1e-17 there).
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def fisher_greater(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value of Fisher's exact test that the first proportion is greater than the
    second: P(X >= k1) for X hypergeometric given the margins (k1 + k2 successes in n1 + n2).

    Exact, so valid for the small counts of fidelity samples (a share of 0/64 against 9/64)
    where the z-test's normal approximation is not; conservative rather than anti-conservative.
    """
    for k, n in ((k1, n1), (k2, n2)):
        if not 0 <= k <= n:
            raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    successes, total = k1 + k2, n1 + n2
    if n1 == 0 or n2 == 0:
        return 1.0
    denominator = math.comb(total, successes)
    upper = min(n1, successes)
    tail = sum(math.comb(n1, x) * math.comb(n2, successes - x) for x in range(k1, upper + 1))
    return min(1.0, tail / denominator)


@dataclass(frozen=True)
class RankTest:
    """A one-sided Mann-Whitney U test that scores `x` tend to be greater than scores `y`, and
    its effect size: the probability of superiority A = P(X > Y) + P(X = Y) / 2 (= U / n_x n_y,
    the area under the ROC curve; 0.5 is no effect), with a 95% interval by Hanley and McNeil's
    (1982) standard error, clipped to [0, 1]."""

    u: float
    p_value: float
    effect: float
    low: float
    high: float
    n_x: int
    n_y: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"A={self.effect:.2f} [{self.low:.2f}, {self.high:.2f}], one-sided Mann-Whitney "
            f"p={self.p_value:.3g} ({self.n_x} vs {self.n_y})"
        )


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> RankTest:
    """`RankTest` of x against y. Ties get mid-ranks; the p-value is scipy's (exact for small
    samples without ties, the tie-corrected normal approximation otherwise). With an empty
    sample: p = 1 and A = 0.5 over the whole interval."""
    n_x, n_y = len(x), len(y)
    if n_x == 0 or n_y == 0:
        return RankTest(0.0, 1.0, 0.5, 0.0, 1.0, n_x, n_y)
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(list(x), list(y), alternative="greater")
    u = float(result.statistic)
    a = u / (n_x * n_y)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_x - 1) * (q1 - a * a) + (n_y - 1) * (q2 - a * a)) / (n_x * n_y)
    half = Z_95 * math.sqrt(max(var, 0.0))
    p = float(result.pvalue)
    return RankTest(u, 1.0 if math.isnan(p) else p, a, max(0.0, a - half), min(1.0, a + half),
                    n_x, n_y)  # fmt: skip
