"""A bias report per axis as a PNG: for each identity of the axis, each model's subgroup, BPSN and
BNSP AUC as bars with their bootstrap intervals, and each model's overall AUC as a line, so a gap
(overall minus the lowest bar) reads off the picture."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

METRICS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")
_LABELS = {"subgroup_auc": "subgroup", "bpsn_auc": "BPSN", "bnsp_auc": "BNSP"}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def plot_axis(reports: Mapping[str, Mapping[str, Any]], axis: str, path: str | Path, *, title: str = "") -> Path:
    """`reports`: model name -> `BiasReport.to_dict()`, all on the same data. Identities a report
    could not evaluate are drawn as gaps, not as zeros."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(reports)
    members = [m["identity"] for m in next(iter(reports.values()))["identities"]
               if m["identity"] in _axis_members(reports, axis)]
    fig, panels = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), dpi=120, sharey=True,
                               squeeze=False)
    width = 0.8 / max(len(models), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(members))
    for ax, metric in zip(panels[0], METRICS):
        for j, model in enumerate(models):
            rows = {m["identity"]: m for m in reports[model]["identities"]}
            values = [rows[n].get(metric) for n in members]
            lows, highs = [], []
            for n, v in zip(members, values):
                low, high = (rows[n].get("intervals") or {}).get(metric, (None, None))
                ok = _finite(v) and _finite(low) and _finite(high)
                lows.append(v - low if ok else 0.0)
                highs.append(high - v if ok else 0.0)
            heights = [v if _finite(v) else np.nan for v in values]
            ax.bar(x + (j - (len(models) - 1) / 2) * width, heights, width, yerr=[lows, highs], capsize=2,
                   color=colors[j % len(colors)], label=model)
            overall = reports[model].get("overall_auc")
            if _finite(overall):
                ax.axhline(overall, color=colors[j % len(colors)], lw=1, ls="--")
        ax.set_title(_LABELS[metric] + " AUC")
        ax.set_xticks(x, members, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    lowest = [m.get(k) for r in reports.values() for m in r["identities"] if m["identity"] in members for k in METRICS]
    finite = [v for v in lowest if _finite(v)]
    panels[0][0].set_ylim(max(0.0, min(finite, default=0.5) - 0.05), 1.0)
    panels[0][0].set_ylabel("AUC (dashed: overall)")
    panels[0][-1].legend(fontsize=7, loc="upper right", ncol=len(models))
    fig.suptitle(title or axis)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _axis_members(reports: Mapping[str, Mapping[str, Any]], axis: str) -> set[str]:
    for report in reports.values():
        for a in report.get("axes", []):
            if a["axis"] == axis:
                return set(a.get("evaluated", ())) | set(a.get("skipped", {}))
    return set()


__all__ = ["METRICS", "plot_axis"]
