"""Comparisons of training runs against the seed-to-seed noise, with scipy's tests.

A run's final accuracy changes with its seed (initialisation, data order, augmentation), so a
difference between two settings means something only against that spread.  The chapters ask three
kinds of question::

    compare_variants     is setting a better than setting b?  Welch's t-test on their seeds, with a 95%
                         confidence interval for the difference (scipy.stats.ttest_ind)
    holm                 several such questions read together: Holm's step-down correction, so that the
                         chance of any false "yes" among them stays at 5%
    rank_correlation     does one number order the settings as another does?  Spearman's rho
    rank_correlation_p   and how often would an ordering that similar arise by chance?  (a permutation
                         test, exact for up to 8 settings)
    pooled_noise         the seed-to-seed spread pooled over the cells of a grid (two seeds a cell
                         say little on their own; twelve cells of two say more)
    compare_with_pooled_noise   a difference between two cells of such a grid, against that noise
    contrast             any weighted difference of a grid's cell means (one cell against another, or
                         one row's average against another's), against that noise

scipy rather than hand-written tables: its Student t and permutation code is what any reader can
check the numbers against.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

import numpy as np
from scipy import stats as sp


def compare_variants(a: dict, b: dict, confidence: float = 0.95) -> dict:
    """Is variant ``a`` better or worse than variant ``b`` by more than the seed-to-seed noise?

    ``a`` and ``b`` each hold ``"variant"`` (a name) and ``"finals"`` (final accuracies over ``n >= 2``
    seeds), as the rows of :func:`convmixer.book.experiments.summarize_ablation` do.  Welch's t-test,
    which does not assume the two spreads are equal::

        difference      mean(a) - mean(b)
        standard_error  sqrt(s_a^2 / n_a + s_b^2 / n_b), with s the sample standard deviation over seeds
        t, dof, p       Welch's t, its Welch-Satterthwaite degrees of freedom, the two-sided p-value
        ci              the ``confidence`` interval of the difference (t quantile at dof)
        beyond_noise    p < 1 - confidence, for this one comparison alone (several: :func:`holm`)
        separated       every seed of one variant beat every seed of the other

    With three seeds a side dof lies between 2 and 4, so a difference must be about 2.8 to 4.3
    standard errors to count: only large, consistent differences pass, and one that does not pass is
    not shown to be zero, only not shown.
    """
    xs, ys = list(a["finals"]), list(b["finals"])
    if len(xs) < 2 or len(ys) < 2:
        raise ValueError(f"comparing {a['variant']} with {b['variant']} needs at least two seeds of each "
                         f"(have {len(xs)} and {len(ys)}): run more seeds (--seeds of the grid's queue)")
    difference = statistics.fmean(xs) - statistics.fmean(ys)
    va, vb = statistics.variance(xs) / len(xs), statistics.variance(ys) / len(ys)
    se = math.sqrt(va + vb)
    if se == 0:  # every seed of both variants gave the same accuracy: no noise to compare with
        t, dof, p = (math.inf if difference else 0.0), float(len(xs) + len(ys) - 2), (0.0 if difference else 1.0)
        ci = (difference, difference)
    else:
        result = sp.ttest_ind(xs, ys, equal_var=False)
        t, dof, p = float(result.statistic), float(result.df), float(result.pvalue)
        low, high = result.confidence_interval(confidence)
        ci = (float(low), float(high))
    return {"difference": difference, "standard_error": se, "t": t, "dof": dof, "p": p, "ci": ci,
            "beyond_noise": p < 1 - confidence, "separated": min(xs) > max(ys) or min(ys) > max(xs)}


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> list[dict]:
    """Holm's correction of several p-values read together: for each, its adjusted p and whether it survives.

    Sort the m p-values from smallest to largest; the i-th smallest (i from 0) is compared with
    alpha / (m - i), and testing stops at the first that fails.  The adjusted p-value is
    max over j <= i of min(1, (m - j) p_(j)).  The chance of at least one false "beyond the noise"
    among all m is then at most alpha, as with Bonferroni (every p against alpha / m), but Holm
    rejects everything Bonferroni rejects and sometimes more.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return [{"p": p, "p_holm": q, "survives": q < alpha} for p, q in zip(pvalues, adjusted)]


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (ties get their average rank).

    +1: ``ys`` orders the items exactly as ``xs`` does; -1: exactly the reverse; near 0: no monotone
    relation.  Whether a value is larger than chance produces is :func:`rank_correlation_p`'s question.
    """
    _check_pairs(xs, ys)
    return float(sp.spearmanr(xs, ys).statistic)


def rank_correlation_p(xs: Sequence[float], ys: Sequence[float], permutations: int = 200_000,
                       seed: int = 0) -> float:
    """Two-sided p-value of Spearman's rho: the fraction of orderings of ``ys`` whose rank correlation
    with ``xs`` is at least as large in size as the observed one.

    If the two orderings were unrelated, every one of the n! orderings of ``ys`` would be equally likely,
    so this fraction is the chance of a correlation this strong arising by luck alone.  scipy's
    ``permutation_test`` enumerates all n! orderings when n! <= ``permutations`` (n <= 8 by default)
    and otherwise draws ``permutations`` random ones from ``seed``, so the value is reproducible.
    """
    _check_pairs(xs, ys)
    rx = sp.rankdata(xs)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())

    def rho(ranks_of_y, axis=-1):  # the Pearson correlation of the ranks, for a whole batch of orderings
        centred = ranks_of_y - ranks_of_y.mean(axis=axis, keepdims=True)
        return (centred * rx).sum(axis=axis) / np.linalg.norm(centred, axis=axis)

    result = sp.permutation_test((sp.rankdata(ys),), rho, permutation_type="pairings", vectorized=True,
                                 n_resamples=permutations, alternative="two-sided",
                                 rng=np.random.default_rng(seed))
    return float(result.pvalue)


def _check_pairs(xs: Sequence[float], ys: Sequence[float]) -> None:
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need two sequences of equal length >= 2, got {len(xs)} and {len(ys)}")
    if len(set(xs)) == 1 or len(set(ys)) == 1:
        raise ValueError("rank correlation is undefined when one sequence is constant")


def pooled_noise(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The seed-to-seed standard deviation pooled over many settings, and its degrees of freedom.

    Two seeds of one setting give its spread one degree of freedom: far too few to test a
    difference on their own.  If the noise is about the same size in every setting (the same
    model family, the same budget), the groups' sample variances can be pooled::

        s_pooled^2 = sum_g (n_g - 1) s_g^2 / sum_g (n_g - 1),   dof = sum_g (n_g - 1)

    so a grid of 12 settings with 2 seeds each estimates the noise with 12 degrees of freedom.
    Groups with a single value add nothing.
    """
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if dof == 0:
        raise ValueError("pooling the noise needs at least one group with two or more values")
    ss = sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1)
    return math.sqrt(ss / dof), dof


def compare_with_pooled_noise(a: Sequence[float], b: Sequence[float], sd: float, dof: int,
                              confidence: float = 0.95) -> dict:
    """Is mean(a) - mean(b) larger than the noise, with the noise's size ``sd`` pooled over a grid?

    Student's t with the pooled estimate: standard error sd * sqrt(1/n_a + 1/n_b), ``dof`` the
    pooled degrees of freedom (:func:`pooled_noise`), two-sided p-value and the ``confidence``
    interval of the difference.  Several such comparisons read together: :func:`holm`.
    """
    if not a or not b:
        raise ValueError("each side needs at least one value")
    return contrast([(1.0, a), (-1.0, b)], sd, dof, confidence)

def contrast(cells: Sequence[tuple[float, Sequence[float]]], sd: float, dof: int,
             confidence: float = 0.95) -> dict:
    """A weighted sum of cell means, L = sum_c w_c mean(y_c), against the pooled seed-to-seed noise.

    ``cells`` holds ``(w_c, y_c)`` pairs: a weight and that cell's final accuracies over its seeds.
    With weights summing to zero, L is a difference: ``[(1, a), (-1, b)]`` is cell a minus cell b
    (:func:`compare_with_pooled_noise`), and ``[(1/4, a_k) for four k] + [(-1/4, b_k) ...]`` is row
    a's average over four kernel sizes minus row b's, each cell weighted equally however many seeds
    it has.  The seeds are independent with one noise size ``sd`` (:func:`pooled_noise`), so::

        Var(L) = sd^2 * sum_c w_c^2 / n_c,   t = L / sqrt(Var(L)),   Student's t at ``dof``

    which is the standard error, two-sided p-value and ``confidence`` interval returned.
    """
    if not cells or any(len(y) == 0 for _, y in cells):
        raise ValueError("a contrast needs at least one cell, and every cell at least one value")
    value = sum(w * statistics.fmean(y) for w, y in cells)
    se = sd * math.sqrt(sum(w * w / len(y) for w, y in cells))
    t = value / se if se > 0 else (math.inf if value else 0.0)
    p = float(2 * sp.t.sf(abs(t), dof)) if math.isfinite(t) else 0.0
    half = float(sp.t.ppf(0.5 + confidence / 2, dof)) * se
    return {"difference": value, "standard_error": se, "t": t, "dof": dof, "p": p,
            "ci": (value - half, value + half)}
