"""Confidence intervals for scores averaged over prompts."""
import numpy as np


def bootstrap_mean(values_per_prompt: list[list[float]], num_resamples: int = 2000,
                   seed: int = 0, runs: list[int] | None = None) -> dict:
    """Mean of all values and its 95 % percentile-bootstrap interval, resampling prompts.

    ``runs`` gives the training run each entry of ``values_per_prompt`` came from (one entry per
    run and prompt): runs are then resampled first and prompts within each, so the interval also
    holds the spread between training runs. One run gives the plain bootstrap over prompts.
    """
    runs = [0] * len(values_per_prompt) if runs is None else runs
    rng = np.random.default_rng(seed)
    run_sums, run_counts = [], []
    for run in sorted(set(runs)):
        entries = [values for values, r in zip(values_per_prompt, runs, strict=True) if r == run]
        sums = np.array([sum(v) for v in entries], dtype=np.float64)
        counts = np.array([len(v) for v in entries], dtype=np.float64)
        resampled = rng.integers(len(sums), size=(num_resamples, len(sums)))
        run_sums.append(sums[resampled].sum(axis=1))
        run_counts.append(counts[resampled].sum(axis=1))
    run_sums, run_counts = np.stack(run_sums), np.stack(run_counts)  # (runs, resamples)
    chosen = rng.integers(len(run_sums), size=(len(run_sums), num_resamples))
    columns = np.arange(num_resamples)
    boot = run_sums[chosen, columns].sum(axis=0) / run_counts[chosen, columns].sum(axis=0)
    total = sum(sum(v) for v in values_per_prompt) / sum(len(v) for v in values_per_prompt)
    return {"mean": round(float(total), 4),
            "ci95": [round(float(v), 4) for v in np.percentile(boot, [2.5, 97.5])]}
