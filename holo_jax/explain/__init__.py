"""Explanations of a restored classifier's decisions, computed at evaluation time through the
task's forward function (not a training stage):

- `attribution`: raw attention, attention rollout, gradient-weighted rollout, Grad-CAM, integrated
  gradients (with its completeness error) and a random baseline, jitted and batched on a mesh;
- `words`: whitespace words, token -> word alignment for any tokenizer, the word-deletion rule;
- `rules`: the symbolic engine (local rules with measured precision, a global decision list with
  precision, coverage, fidelity and simulatability);
- `faithfulness`: ERASER comprehensiveness / sufficiency / AOPC, deletion and insertion curves;
- `render`: the HTML page; `engine`: all of it over a dataset, and the latency measurement.

`train/` must not import this package (docs/DESIGN.md section 3); `experiments/explain.py` wires it in.
"""
from holo_jax.explain.attribution import METHODS, Attributions, Attributor, data_mesh, gradient_weighted_rollout, rollout
from holo_jax.explain.engine import (
    ALL_METHODS, Explanations, RuleSettings, explain_texts, global_rules, local_rule_summary, measure_latency,
    split_indices,
)
from holo_jax.explain.faithfulness import PERCENTS, comparison_table, faithfulness, plot_curves, top_count
from holo_jax.explain.render import highlighted, html_page
from holo_jax.explain.rules import (
    CLASS_NAMES, DecisionList, GlobalRule, LocalRule, check_rules, construct_rules, contains, decisions_of,
    evaluate_decision_list, mine_decision_list, normalised_words, symbolic_relevance,
)
from holo_jax.explain.words import delete_words, keep_words, normalise, split_words, token_word_index

__all__ = [
    "ALL_METHODS", "Attributions", "Attributor", "CLASS_NAMES", "DecisionList", "Explanations", "GlobalRule",
    "LocalRule", "METHODS", "PERCENTS", "RuleSettings", "check_rules", "comparison_table", "construct_rules",
    "contains", "data_mesh", "decisions_of", "delete_words", "evaluate_decision_list", "explain_texts",
    "faithfulness", "global_rules", "gradient_weighted_rollout", "highlighted", "html_page", "keep_words",
    "local_rule_summary", "measure_latency", "mine_decision_list", "normalise", "normalised_words", "plot_curves",
    "rollout", "split_indices", "split_words", "symbolic_relevance", "token_word_index", "top_count",
]
