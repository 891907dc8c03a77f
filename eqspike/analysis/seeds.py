"""Results over seeds: the spread of a score, and paired differences between two methods.

For n values x_1..x_n (one per seed): mean, sample standard deviation s (ddof = 1), min, max, the
95% interval of the mean, mean +- t_{0.975, n-1} s / sqrt(n) (Student's t; scipy), and the 95% prediction
interval of one more run, mean +- t_{0.975, n-1} s sqrt(1 + 1/n): where a rerun with a new seed, or on
another machine that changes the trajectory, should land (normal scores assumed). A paired difference
d_i = a_i - b_i takes the two methods' results on the same seed i (same data order, selection split
and teacher) and gets the same summary: its interval excludes 0 when the difference is significant.
Whether method a spreads less than method b: the ratio of their standard deviations s_a / s_b, the
one-sided F-test p = F_{n_a-1, n_b-1}.cdf(s_a^2 / s_b^2) (independent runs), and, for runs paired by seed,
the Pitman-Morgan test: var(a) = var(b) exactly when a - b and a + b are uncorrelated, so its two-sided
p is Pearson's test of corr(a - b, a + b) = 0.

Where a spread comes from, per dev example (``example_flips``). With k seeds and c_si = 1 when seed s's
student gets example i right, p_i = mean_s c_si, the score's variance over seeds is
(1/n^2) [sum_i var(c_i) + sum_{i != j} cov(c_i, c_j)]. The first part is what examples flipping
independently of each other give: its standard deviation, the *flip floor*, is
sqrt(sum_i v_i) / n with v_i = p_i (1 - p_i) k / (k - 1) (unbiased); the second is a whole run being
better or worse. 2 v_i is also the chance that two seeds disagree on example i, so the *flip rate*
f = (2 / n) sum_i v_i, the fraction of examples on which two seeds' students differ (right against
wrong), and floor = sqrt(f / 2n). A recipe narrows the spread either by fewer flips or by less of the
second part; flip rates of two recipes on the same dev set are compared per example
(``flip_difference``: the mean of 2 (v_a,i - v_b,i), with its 95% interval over examples, the seeds held
as they are), which is far firmer than comparing two standard deviations over a handful of seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# The metrics.json keys summarised over seeds, with their labels in the table.
SUMMARY_KEYS = {
    "teacher_score": "teacher",
    "student_score": "student (spiking)",
    "score_ratio": "student / teacher",
    "student_energy_ratio": "energy / teacher",
}


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, std, min, max, the 95% t-interval of the mean (``ci95``) and of one more run (``pi95``);
    the intervals are None below two values."""
    from scipy import stats

    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("spread of no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    if std is None:
        interval = rerun = None
    elif std == 0:
        interval = rerun = [mean, mean]
    else:
        interval = [float(x) for x in stats.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))]
        rerun = [float(x) for x in stats.t.interval(0.95, n - 1, loc=mean, scale=std * math.sqrt(1 + 1 / n))]
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "ci95": interval,
        "pi95": rerun,
        "values": values,
    }


def seed_summary(results: Mapping[int, Mapping[str, Any]], keys: Mapping[str, str] = SUMMARY_KEYS) -> dict[str, Any]:
    """The spread over seeds of each of ``keys`` in ``results`` (seed -> a run's metrics.json)."""
    seeds = sorted(results)
    summary = {
        key: spread([results[s][key] for s in seeds]) for key in keys if all(results[s].get(key) is not None for s in seeds)
    }
    return {"seeds": seeds, "metrics": summary}


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """The spread of a_s - b_s over the seeds s both have."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("no seed in common")
    return {"seeds": seeds, **spread([a[s] - b[s] for s in seeds])}


def _example_variances(correct: Mapping[int, Sequence[bool]]) -> list[float]:
    """v_i = p_i (1 - p_i) k / (k - 1) for each example (the module docstring)."""
    runs = list(correct.values())
    k = len(runs)
    if k < 2:
        raise ValueError(f"flips need at least two seeds, got {k}")
    n = len(runs[0])
    if n == 0 or any(len(r) != n for r in runs):
        raise ValueError(f"every seed must score the same examples, got {sorted(len(r) for r in runs)}")
    rights = [sum(bool(r[i]) for r in runs) for i in range(n)]
    return [(c / k) * (1 - c / k) * k / (k - 1) for c in rights]


def example_flips(correct: Mapping[int, Sequence[bool]]) -> dict[str, Any]:
    """Per-example decomposition of a score's spread over seeds (the module docstring): ``correct`` maps
    a seed to whether its student got each dev example right (same examples, same order). Returns the
    flip rate (two seeds differ, right against wrong, on this fraction of the examples), the examples
    that flip at all (neither always right nor always wrong), the flip floor of the standard deviation,
    and the standard deviation observed, for comparison."""
    v = _example_variances(correct)
    n, k = len(v), len(correct)
    scores = [sum(map(bool, r)) / n for r in correct.values()]
    unstable = sum(1 for r in zip(*correct.values()) if 0 < sum(map(bool, r)) < k)
    return {
        "seeds": sorted(correct),
        "examples": n,
        "flip_rate": 2 * sum(v) / n,
        "unstable_fraction": unstable / n,
        "flip_floor_std": math.sqrt(sum(v)) / n,
        "observed_std": spread(scores)["std"],
    }


def flip_difference(a: Mapping[int, Sequence[bool]], b: Mapping[int, Sequence[bool]]) -> dict[str, Any]:
    """Flip rate of ``a`` minus that of ``b``, on the same examples: the mean over examples of
    2 (v_a,i - v_b,i), with its 95% interval (``spread``: Student's t over the examples; the seeds held fixed)."""
    va, vb = _example_variances(a), _example_variances(b)
    if len(va) != len(vb):
        raise ValueError(f"the two recipes scored different numbers of examples ({len(va)} and {len(vb)})")
    d = spread([2 * (x - y) for x, y in zip(va, vb)])
    return {"difference": d["mean"], "ci95": d["ci95"], "examples": d["n"]}


def spread_ratio(a: Mapping[int, float], b: Mapping[int, float]) -> dict[str, Any]:
    """s_a / s_b over the seeds both have, with the F-test's one-sided p (a spreads less) and the
    Pitman-Morgan test's two-sided p for paired values (the module docstring); None below three seeds."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 3:
        return {"seeds": seeds, "std_ratio": None, "f_test_p": None, "pitman_morgan_p": None}
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    var_x, var_y = spread(x)["std"] ** 2, spread(y)["std"] ** 2
    if var_y == 0:
        return {"seeds": seeds, "std_ratio": None, "f_test_p": None, "pitman_morgan_p": None}
    n = len(seeds)
    diff, total = [u - v for u, v in zip(x, y)], [u + v for u, v in zip(x, y)]
    paired = None if len(set(diff)) < 2 or len(set(total)) < 2 else float(stats.pearsonr(diff, total).pvalue)
    return {
        "seeds": seeds,
        "std_ratio": math.sqrt(var_x / var_y),
        "f_test_p": float(stats.f.cdf(var_x / var_y, n - 1, n - 1)),
        "pitman_morgan_p": paired,
    }


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_spread(s: Mapping[str, Any], digits: int = 4) -> str:
    """'mean +- std [lo, hi]' in one cell."""
    text = f"{_number(s['mean'], digits)} +- {_number(s['std'], digits)}"
    if s.get("ci95"):
        text += f" [{_number(s['ci95'][0], digits)}, {_number(s['ci95'][1], digits)}]"
    return text


def summary_table(summary: Mapping[str, Any], keys: Mapping[str, str] = SUMMARY_KEYS) -> str:
    """A Markdown table: one row per metric, with mean, std, min, max, the 95% interval of the mean and
    of one more run."""
    lines = [
        f"Over {len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}):",
        "",
        "| | mean | std | min | max | 95% interval of the mean | 95% interval of one more run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def interval(pair: Sequence[float] | None) -> str:
        return f"[{_number(pair[0])}, {_number(pair[1])}]" if pair else "-"

    for key, label in keys.items():
        s = summary["metrics"].get(key)
        if s is None:
            continue
        lines.append(
            f"| {label} | {_number(s['mean'])} | {_number(s['std'])} | {_number(s['min'])} | "
            f"{_number(s['max'])} | {interval(s['ci95'])} | {interval(s.get('pi95'))} |"
        )
    return "\n".join(lines)


def summary_csv(summary: Mapping[str, Any], keys: Mapping[str, str] = SUMMARY_KEYS) -> str:
    rows = ["metric,n,mean,std,min,max,ci95_low,ci95_high,pi95_low,pi95_high"]
    for key in keys:
        s = summary["metrics"].get(key)
        if s is None:
            continue
        low, high = s["ci95"] or (None, None)
        next_low, next_high = s.get("pi95") or (None, None)
        rows.append(
            ",".join(
                str(x) if x is not None else ""
                for x in (key, s["n"], s["mean"], s["std"], s["min"], s["max"], low, high, next_low, next_high)
            )
        )
    return "\n".join(rows) + "\n"
