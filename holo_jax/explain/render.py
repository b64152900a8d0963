"""Explanations a person can read: a self-contained HTML page (words highlighted by relevance, the
local rule of each example, the global decision list and the faithfulness table) and the text
summary the command prints without --json. Everything taken from the data is HTML-escaped."""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.example { border-top: 1px solid #ddd; padding: 0.6em 0; }
.rule { font-family: monospace; background: #f4f4f4; padding: 0.2em 0.4em; }
.method { display: inline-block; width: 13em; color: #666; font-size: 0.85em; }
.w { padding: 0 0.1em; border-radius: 3px; }
.miss { color: #b00; }
"""


def _shade(value: float, top: float) -> str:
    """Red for relevance towards the decision (alpha by size); blue for negative relevance."""
    if top <= 0 or not math.isfinite(value):
        return "transparent"
    a = min(1.0, abs(value) / top)
    return f"rgba(220,40,40,{a:.2f})" if value >= 0 else f"rgba(40,90,220,{a:.2f})"


def highlighted(words: Sequence[str], relevance: np.ndarray) -> str:
    """The words as <span>s, each shaded by its relevance relative to the text's largest."""
    rel = np.asarray(relevance, np.float64)
    top = float(np.abs(rel).max()) if len(rel) else 0.0
    return " ".join(f'<span class="w" title="{v:.4g}" style="background:{_shade(float(v), top)}">'
                    f"{html.escape(w)}</span>" for w, v in zip(words, rel))


def html_page(*, title: str, words: Sequence[Sequence[str]], relevance: Mapping[str, Sequence[np.ndarray]],
              rules: Sequence[Mapping], probabilities: np.ndarray, decision_list_text: str, summary: Mapping,
              faithfulness_table: str, limit: int | None = None) -> str:
    """The page; `limit` caps how many examples it shows (the rest are counted)."""
    n = len(words) if limit is None else min(limit, len(words))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Global rules</h2><pre class='rule'>" + html.escape(decision_list_text) + "</pre>")
    figures = ", ".join(f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in summary.items())
    parts.append(f"<p>{figures}</p>")
    parts.append("<h2>Faithfulness</h2><pre>" + html.escape(faithfulness_table) + "</pre>")
    parts.append(f"<h2>Examples ({n} of {len(words)} shown)</h2>")
    for i in range(n):
        rule = rules[i]
        precision = rule.get("precision")
        missed = rule.get("meets_target") is False
        note = "" if precision is None else f" precision {precision:.2f} over {rule.get('samples')} perturbations"
        parts.append(f"<div class='example' id='ex{i}'><div>#{i} P(toxic) = {float(probabilities[i]):.3f} "
                     f"<span class='rule'>{html.escape(rule['rule'])}</span>"
                     f"<span class='{'miss' if missed else ''}'>{html.escape(note)}"
                     f"{' (below target)' if missed else ''}</span></div>")
        for method, rel in relevance.items():
            parts.append(f"<div><span class='method'>{html.escape(method)}</span>"
                         f"{highlighted(words[i], rel[i])}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_atomic(path: str | Path, text: str) -> None:
    """Write aside and rename, so a failure never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
