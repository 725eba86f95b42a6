"""Confidence intervals for scores averaged over prompts."""
import numpy as np


def bootstrap_mean(values_per_prompt: list[list[float]], num_resamples: int = 2000,
                   seed: int = 0) -> dict:
    """Mean of all values and its 95 % percentile-bootstrap interval, resampling prompts."""
    sums = np.array([sum(v) for v in values_per_prompt], dtype=np.float64)
    counts = np.array([len(v) for v in values_per_prompt], dtype=np.float64)
    resampled = np.random.default_rng(seed).integers(len(sums), size=(num_resamples, len(sums)))
    boot = sums[resampled].sum(axis=1) / counts[resampled].sum(axis=1)
    return {"mean": round(float(sums.sum() / counts.sum()), 4),
            "ci95": [round(float(v), 4) for v in np.percentile(boot, [2.5, 97.5])]}
