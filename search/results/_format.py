"""The metric / value / 95% interval table `medsweep evaluate` and `train --final` print."""

from __future__ import annotations

from typing import Any

_ORDER = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "loss")


def format_metrics(metrics: dict[str, Any], intervals: dict[str, list[float]]) -> str:
    """A metric / value / 95% interval table, then the confusion matrix."""
    names = [n for n in _ORDER if isinstance(metrics.get(n), float)]
    names += [n for n, v in metrics.items() if isinstance(v, float) and n not in names]
    width = max(len(n) for n in names) if names else 6
    lines = [f"{'metric'.ljust(width)}  value   95% CI (bootstrap)"]
    for name in names:
        low_high = intervals.get(name)
        interval = f"[{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
        lines.append(f"{name.ljust(width)}  {metrics[name]:.3f}   {interval}".rstrip())
    if "confusion_matrix" in metrics:
        lines.append(f"confusion matrix (rows true, columns predicted): {metrics['confusion_matrix']}")
    return "\n".join(lines)


def format_calibration(report: dict[str, Any]) -> str:
    """Temperature scaling's T and Brier/ECE before and after, on validation and test (one line
    when the fit was skipped: the `warning:` line says why)."""
    if report.get("skipped"):
        return (f"temperature scaling: not applied (T = 1) on {report.get('validation_images', '?')} validation images; "
                "see the warning below")
    lines = [f"temperature scaling: T = {report['temperature']:.3f}, fitted on {report.get('validation_images', '?')} "
             f"validation images ({report.get('fitted_on', 'validation outputs only')})",
             "set          brier before  brier after  ece before  ece after"]
    for name in ("validation", "test"):
        part = report.get(name)
        if part:
            before, after = part["before"], part["after"]
            lines.append(f"{name.ljust(11)}  {before['brier']:.4f}        {after['brier']:.4f}       "
                         f"{before['ece']:.4f}      {after['ece']:.4f}")
    return "\n".join(lines)
