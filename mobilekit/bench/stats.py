"""Intervals, spread and A/B verdicts for benchmark timings (pure numpy, no TensorFlow).

Method (the README's benchmarking section says the same):

* The unit of resampling is one *run*: one benchmark_model process (a repeat, `--repeat R`)
  or, for host A/B, one round of the round-robin loop. Samples inside one run are
  correlated (same process, same memory layout, same thermal moment), so resampling single
  invokes would make intervals far too narrow.
* median_ci: percentile bootstrap of the median (B resamples with replacement, the 2.5th and
  97.5th percentiles of the resampled medians).
* ratio_ci: the speed-up of B over A (> 1: B is faster). Unpaired samples (two result
  sets) give median(A) / median(B), A and B resampled independently. Paired samples (host
  round-robin: A and B timed in the same round) give the median of the per-round ratios
  A_i / B_i, resampled by round: a load change that hits a round hits both sides of its
  ratio, and on a loaded host, where single invokes are often preempted, the median ratio
  stays put while the ratio of two medians can jump between the fast and the slow mode.
  Percentile bootstrap, fixed seed: the same samples give the same interval.
* verdict: "faster" when the whole interval is above 1, "slower" when it is below 1,
  "no difference measurable" when it spans 1 (or fewer than 2 runs a side exist).
"""
import math

import numpy as np

__all__ = ["median_ci", "ratio_ci", "verdict", "cv", "compare_samples", "FASTER", "SLOWER",
           "NO_DIFFERENCE", "DEFAULT_RESAMPLES", "CONFIDENCE"]

FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no difference measurable"
DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95
_SEED = 20260517   # fixed: a report must not change between two readings of the same data
_MAX_CELLS = 4_000_000   # resamples x n per block: bounds memory for long sustained runs


def _clean(samples, what="samples"):
    values = np.asarray([float(v) for v in samples if v is not None], dtype=np.float64)
    values = values[np.isfinite(values)]
    if np.any(values <= 0):
        raise ValueError(f"{what} must be positive times; got {values[values <= 0][:3].tolist()}")
    return values


def _boot_medians(values, index_blocks):
    return np.concatenate([np.median(values[idx], axis=1) for idx in index_blocks])


def _index_blocks(rng, n, resamples):
    per_block = max(1, _MAX_CELLS // max(n, 1))
    done = 0
    while done < resamples:
        size = min(per_block, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _percentiles(values, confidence):
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def median_ci(samples, confidence=CONFIDENCE, resamples=DEFAULT_RESAMPLES, seed=_SEED):
    """(median, low, high) of the samples; low/high None with fewer than 2 samples."""
    values = _clean(samples)
    if values.size == 0:
        return None, None, None
    median = float(np.median(values))
    if values.size < 2:
        return median, None, None
    rng = np.random.default_rng(seed)
    medians = _boot_medians(values, list(_index_blocks(rng, values.size, resamples)))
    low, high = _percentiles(medians, confidence)
    return median, low, high


def cv(samples):
    """Coefficient of variation (sample stdev / mean) of >= 2 samples, else None."""
    values = _clean(samples)
    if values.size < 2:
        return None
    return float(np.std(values, ddof=1) / np.mean(values))


def ratio_ci(a, b, paired=False, confidence=CONFIDENCE, resamples=DEFAULT_RESAMPLES, seed=_SEED):
    """(ratio, low, high): speed-up of B over A with its interval: median(a) / median(b),
    or with paired=True (a[i] and b[i] timed in the same round) the median of a[i] / b[i].

    low/high are None when a side has fewer than 2 samples.
    """
    a, b = _clean(a, "A samples"), _clean(b, "B samples")
    if paired and a.size != b.size:
        raise ValueError(f"paired samples need equal counts; got {a.size} and {b.size}")
    if a.size == 0 or b.size == 0:
        return None, None, None
    ratio = float(np.median(a / b) if paired else np.median(a) / np.median(b))
    if a.size < 2 or b.size < 2:
        return ratio, None, None
    rng = np.random.default_rng(seed)
    if paired:
        per_round = a / b
        ratios = _boot_medians(per_round, list(_index_blocks(rng, a.size, resamples)))
    else:
        ratios = (_boot_medians(a, list(_index_blocks(rng, a.size, resamples)))
                  / _boot_medians(b, list(_index_blocks(rng, b.size, resamples))))
    low, high = _percentiles(ratios, confidence)
    return ratio, low, high


def verdict(low, high):
    """'faster' / 'slower' (B vs A) when the interval excludes 1, else 'no difference measurable'."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return NO_DIFFERENCE
    if low > 1.0:
        return FASTER
    if high < 1.0:
        return SLOWER
    return NO_DIFFERENCE


def compare_samples(a, b, paired=False, confidence=CONFIDENCE, resamples=DEFAULT_RESAMPLES):
    """A dict: n_a, n_b, median_a_us, median_b_us, speedup, ci_low, ci_high, verdict."""
    ratio, low, high = ratio_ci(a, b, paired=paired, confidence=confidence, resamples=resamples)
    a_values, b_values = _clean(a), _clean(b)
    return {"n_a": int(a_values.size), "n_b": int(b_values.size),
            "median_a_us": float(np.median(a_values)) if a_values.size else None,
            "median_b_us": float(np.median(b_values)) if b_values.size else None,
            "speedup": ratio, "ci_low": low, "ci_high": high, "paired": bool(paired),
            "confidence": confidence, "verdict": verdict(low, high)}
