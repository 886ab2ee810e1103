"""Wilson intervals and Fisher's one-sided exact test, against values worked by hand."""

import math

import pytest

from emoverse.stats import Share, fisher_greater, wilson_interval


def test_wilson_interval_against_worked_values():
    # Wilson (1927) at z = 1.96: 0 of 10 gives [0, 0.278], 5 of 10 gives [0.237, 0.763].
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] < 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing measured: anything goes
    # Narrower with more samples at the same share.
    assert wilson_interval(64, 256)[1] - wilson_interval(64, 256)[0] < (
        wilson_interval(16, 64)[1] - wilson_interval(16, 64)[0]
    )
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_share_reads_as_a_person_would():
    share = Share.of(20, 64)
    assert (share.k, share.n, share.share) == (20, 64, 0.3125)
    assert str(share) == f"0.31 [{share.low:.2f}, {share.high:.2f}] of 64"
    assert Share(**share.to_dict()) == share


def test_fisher_greater_against_the_hypergeometric_tail():
    # 3 of 10 against 0 of 10: P(X >= 3) with 3 successes in 20 = C(10,3) / C(20,3).
    assert fisher_greater(3, 10, 0, 10) == pytest.approx(math.comb(10, 3) / math.comb(20, 3))
    # Equal shares are no evidence; a lower share is none either.
    assert fisher_greater(5, 10, 5, 10) > 0.5
    assert fisher_greater(0, 10, 5, 10) == 1.0
    # More samples make the same gap significant.
    assert fisher_greater(12, 64, 6, 64) > 0.05 > fisher_greater(48, 256, 24, 256)
    assert fisher_greater(0, 0, 1, 5) == 1.0
    with pytest.raises(ValueError):
        fisher_greater(5, 4, 0, 4)
