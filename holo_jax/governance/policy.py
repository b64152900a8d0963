"""Policies: YAML files of CEL conditions (cel-python), checked at three gates.

    datasets:                       # the allow-list: data.source -> its licence
      embedded: {license: PSF-2.0}
    gates:
      before_training:              # variables: config (the resolved TrainConfig as a dict), datasets
        - name: dataset_allowed
          condition: config.data.source in datasets
          reason: data.source is not on the policy's allow-list
      during_training:              # variables: step, row (one metrics.jsonl row), or for
        - name: loss_sane           #   watch: emitted / stage: NAME, `value` (that stage's emitted tree)
          condition: row.loss < 20.0
          action: stop              # or warn (the default during training)
      before_release:               # variables: audit, metrics (the last evaluation row), reports,
        - name: audit_valid         #   checkpoint, config, datasets
          condition: audit.ok

A rule passes when its condition is true; otherwise before_training and before_release deny, and
during_training warns or stops (`action`). Everything is checked when the file is loaded, so a
mistake never surfaces mid-run: YAML shape, CEL syntax, and every field path a condition names
(`config.optim.learing_rate` fails with the fields that do exist). Paths are checked against each
gate's schema; maps whose keys are data (`datasets`, `reports`, an emitted `value`) are open and
their members are checked only when evaluated. A condition that fails to evaluate at a gate (a
type mismatch, a missing optional field not guarded by `has()`) counts as not holding, with the
CEL error as the reason: a gate never passes by accident.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import celpy
import yaml
from celpy import celtypes
from lark import Token, Tree

from holo_jax.errors import HoloError

OPEN = object()  # a map whose members are data: not checked at load time
GATES = ("before_training", "during_training", "before_release")
DEFAULT_POLICY = Path(__file__).with_name("policies") / "default.yaml"
# Every metrics.jsonl column the shipped tasks write (train step + evaluation); a stage's metrics are
# "<stage>/<name>" and, not being CEL identifiers, are read as row["<stage>/<name>"] (unchecked).
METRIC_FIELDS = ("loss", "total_loss", "grad_norm", "learning_rate", "param_norm", "skipped_steps",
                 "tokens_per_second", "accuracy", "eval_loss", "eval_perplexity", "eval_accuracy", "eval_auc",
                 "remat_policy", "remat_microbatches", "remat_requested")
_MACROS = {"all", "exists", "exists_one", "map", "filter"}


def config_schema() -> Any:
    from holo_jax.config import TrainConfig

    return _schema_of(TrainConfig().to_dict())


def _schema_of(example: Any) -> Any:
    if isinstance(example, Mapping):
        return {k: _schema_of(v) for k, v in example.items()}
    return None  # a scalar (or list): it has no members


def gate_schemas() -> dict[str, dict[str, Any]]:
    metrics = {name: None for name in METRIC_FIELDS}
    audit = {k: None for k in ("ok", "records", "heads", "sessions", "ephemeral_key", "warnings", "error",
                               "checkpoints_verified")}
    return {
        "before_training": {"config": config_schema(), "datasets": OPEN},
        "during_training:metrics": {"step": None, "row": metrics},
        "during_training:emitted": {"step": None, "stage": None, "value": OPEN},
        "before_release": {"audit": audit, "metrics": metrics, "reports": OPEN,
                           "checkpoint": {"step": None, "digest": None, "name": None},
                           "config": config_schema(), "datasets": OPEN},
    }


_METRIC_EXAMPLE = {**{name: 1.0 for name in METRIC_FIELDS}, "skipped_steps": 0, "remat_microbatches": 1,
                   "remat_policy": "none", "remat_requested": "default"}


def gate_examples() -> dict[str, dict[str, Any]]:
    """A value of the right CEL type for every schema field: each condition is evaluated on these once
    at load time, so a type mismatch (`row.skipped_steps > 0.0`: int against double) fails there."""
    from holo_jax.config import TrainConfig

    config = TrainConfig().to_dict()
    audit = {"ok": True, "records": 1, "heads": 1, "sessions": 1, "ephemeral_key": False, "warnings": 0, "error": "",
             "checkpoints_verified": 1}
    return {
        "before_training": {"config": config, "datasets": {}},
        "during_training:metrics": {"step": 1, "row": _METRIC_EXAMPLE},
        "during_training:emitted": {"step": 1, "stage": "stage", "value": {}},
        "before_release": {"audit": audit, "metrics": _METRIC_EXAMPLE, "reports": {},
                           "checkpoint": {"step": 1, "digest": "0" * 64, "name": "checkpoints/1"},
                           "config": config, "datasets": {}},
    }


@dataclasses.dataclass(frozen=True)
class Rule:
    gate: str
    name: str
    condition: str
    reason: str
    action: str  # "deny" | "warn" | "stop"
    on: str = "metrics"  # during_training (`watch:` in the YAML): "metrics" or "emitted"
    stage: str | None = None
    program: Any = dataclasses.field(default=None, compare=False, repr=False)
    # The metrics columns a during_training rule names: it is checked on the rows that carry them
    # all (a train step's row has no eval_loss, an evaluation's row no loss).
    row_fields: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Decision:
    rule: str
    passed: bool
    action: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Policy:
    path: str
    sha256: str
    datasets: dict[str, Any]
    rules: tuple[Rule, ...]

    def gate(self, name: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.gate == name)

    def evaluate(self, gate: str, variables: Mapping[str, Any], *, on: str | None = None,
                 stage: str | None = None) -> list[Decision]:
        """Every rule of `gate` (during training: those watching `on` = metrics/emitted, and `stage`)
        against `variables`."""
        if gate != "during_training":
            variables = {**variables, "datasets": self.datasets}
        activation = {k: celpy.json_to_cel(_plain(v)) for k, v in variables.items()}
        out = []
        row = variables.get("row") if on == "metrics" else None
        for r in self.gate(gate):
            if on is not None and (r.on != on or (r.stage is not None and r.stage != stage)):
                continue
            if row is not None and not r.row_fields <= row.keys():
                continue
            out.append(_decide(r, activation))
        return out


def _decide(rule: Rule, activation: Mapping[str, Any]) -> Decision:
    try:
        value = rule.program.evaluate(activation)
    except celpy.CELEvalError as e:
        return Decision(rule.name, False, rule.action, f"{rule.reason} (the condition `{rule.condition}` could "
                                                       f"not be evaluated: {_cel_message(e)})")
    if isinstance(value, celpy.CELEvalError):
        return Decision(rule.name, False, rule.action, f"{rule.reason} (the condition `{rule.condition}` could "
                                                       f"not be evaluated: {_cel_message(value)})")
    if not isinstance(value, celtypes.BoolType):
        return Decision(rule.name, False, rule.action, f"{rule.reason} (the condition `{rule.condition}` gave "
                                                       f"{value!r}, not true/false)")
    passed = bool(value)
    return Decision(rule.name, passed, rule.action, "" if passed else f"{rule.reason} (`{rule.condition}` is false)")


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and check a policy file (default: the shipped policies/default.yaml); HoloError on any mistake."""
    import hashlib

    path = Path(path) if path is not None else DEFAULT_POLICY
    try:
        text = path.read_bytes()
    except OSError as e:
        raise HoloError(f"policy {path} cannot be read ({e.strerror}); give a YAML policy file "
                        f"(the shipped one is {DEFAULT_POLICY}).") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise HoloError(f"policy {path} is not valid YAML ({str(e).splitlines()[0]}); fix the file.") from None
    where = f"policy {path}"
    if not isinstance(doc, dict) or not isinstance(doc.get("gates"), dict):
        raise HoloError(f"{where} needs a top-level `gates:` mapping with any of {', '.join(GATES)}.")
    unknown = set(doc) - {"version", "datasets", "gates", "description"}
    if unknown:
        raise HoloError(f"{where} has unknown top-level keys {sorted(unknown)}; use version, description, "
                        f"datasets and gates.")
    datasets = doc.get("datasets") or {}
    if not isinstance(datasets, dict) or not all(isinstance(v, dict) and "license" in v for v in datasets.values()):
        raise HoloError(f"{where}: `datasets` must map each allowed data.source to {{license: ...}}.")
    bad_gates = set(doc["gates"]) - set(GATES)
    if bad_gates:
        raise HoloError(f"{where} names unknown gates {sorted(bad_gates)}; the gates are {', '.join(GATES)}.")
    env = celpy.Environment()
    schemas, examples = gate_schemas(), gate_examples()
    rules = []
    for gate, items in doc["gates"].items():
        if not isinstance(items, list):
            raise HoloError(f"{where}: gates.{gate} must be a list of rules.")
        for n, item in enumerate(items or []):
            rule = _rule(env, schemas, where, gate, n, item)
            _dry_run(rule, examples, datasets, f"{where}, gates.{gate}[{n}] ({rule.name})")
            rules.append(rule)
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HoloError(f"{where}: rule names must be unique, {dup} repeat.")
    return Policy(str(path), hashlib.sha256(text).hexdigest(), datasets, tuple(rules))


def _rule(env, schemas, where: str, gate: str, n: int, item: Any) -> Rule:
    at = f"{where}, gates.{gate}[{n}]"
    if not isinstance(item, dict) or not isinstance(item.get("condition"), str) or not item.get("name"):
        raise HoloError(f"{at} needs `name:` and a `condition:` string (a CEL expression).")
    extra = set(item) - {"name", "condition", "reason", "action", "watch", "stage"}
    if extra:
        # (YAML 1.1 reads a bare `on:`/`yes:` key as a boolean, hence `watch:`, not `on:`.)
        raise HoloError(f"{at} ({item['name']}) has unknown keys {sorted(map(str, extra))}; a rule has name, "
                        f"condition, reason, action, and during training watch/stage.")
    allowed_actions = ("warn", "stop") if gate == "during_training" else ("deny",)
    action = item.get("action", allowed_actions[0])
    if action not in allowed_actions:
        raise HoloError(f"{at} ({item['name']}): action must be one of {allowed_actions} at {gate}, got {action!r}.")
    on = item.get("watch", "metrics")
    if gate == "during_training" and on not in ("metrics", "emitted"):
        raise HoloError(f"{at} ({item['name']}): `watch` must be metrics or emitted, got {on!r}.")
    if gate == "during_training" and on == "emitted" and not item.get("stage"):
        raise HoloError(f"{at} ({item['name']}): watch: emitted needs `stage:` (the stage whose emits it watches).")
    condition = item["condition"].strip()
    try:
        ast = env.compile(condition)
    except celpy.CELParseError as e:
        first = str(e).strip().splitlines()
        raise HoloError(f"{at} ({item['name']}): `{condition}` is not valid CEL ({first[-1].strip() if first else e}); "
                        f"fix the expression.") from None
    schema = schemas[f"during_training:{on}" if gate == "during_training" else gate]
    paths = _check_paths(ast, schema, f"{at} ({item['name']})", condition)
    row_fields = frozenset(p[1] for p in paths if p[0] == "row" and len(p) > 1)
    return Rule(gate, str(item["name"]), condition, str(item.get("reason") or f"rule {item['name']} does not hold"),
                action, on, item.get("stage"), env.program(ast), row_fields)


def _dry_run(rule: Rule, examples: dict[str, dict[str, Any]], datasets: dict[str, Any], at: str) -> None:
    """Evaluate once on typed example values: a type error or a non-boolean result fails now, not
    mid-run. (A missing member of an open map, e.g. a report not logged, is data, not a mistake.)"""
    key = f"during_training:{rule.on}" if rule.gate == "during_training" else rule.gate
    variables = dict(examples[key])
    if "datasets" in variables:
        variables["datasets"] = datasets
    activation = {k: celpy.json_to_cel(_plain(v)) for k, v in variables.items()}
    try:
        value = rule.program.evaluate(activation)
    except celpy.CELEvalError as e:
        value = e
    if isinstance(value, celpy.CELEvalError):
        message = _cel_message(value)
        if "overload" in message:
            raise HoloError(f"{at}: `{rule.condition}` mixes types CEL cannot compare or combine ({message}; "
                            f"note that CEL never converts between int and double: write 0.0 for a double); "
                            f"fix the expression.")
        return
    if not isinstance(value, celtypes.BoolType):
        raise HoloError(f"{at}: `{rule.condition}` gives {type(value).__name__}, not true/false; make the condition "
                        f"a comparison or a boolean.")


def _check_paths(ast: Tree, schema: dict[str, Any], at: str, condition: str) -> list[list[str]]:
    """The field paths `ast` names, each checked against `schema`."""
    bound = _bound_variables(ast)
    paths = _member_paths(ast)
    for path in paths:
        if path[0] in bound:
            continue
        node: Any = schema
        for depth, name in enumerate(path):
            if node is OPEN:
                break
            if not isinstance(node, dict) or name not in node:
                parent = ".".join(path[:depth]) or "the condition"
                known = sorted(node) if isinstance(node, dict) else []
                hint = f"known: {', '.join(known)}" if known else f"{parent} has no fields"
                raise HoloError(f"{at}: `{condition}` refers to unknown field `{'.'.join(path[:depth + 1])}` "
                                f"({hint}); fix the field name.")
            node = node[name]
    return paths


def _member_paths(ast: Tree) -> list[list[str]]:
    """Every `a.b.c` chain rooted at a variable, as ["a", "b", "c"] (prefixes included)."""
    paths = []
    for t in ast.iter_subtrees():
        if t.data in ("member_dot", "primary"):
            chain = _chain(t)
            if chain:
                paths.append(chain)
    return paths


def _chain(t: Any) -> list[str] | None:
    if not isinstance(t, Tree):
        return None
    if t.data == "member_dot":
        base = _chain(t.children[0])
        return base + [str(t.children[1])] if base is not None else None
    if t.data == "member" and len(t.children) == 1:
        return _chain(t.children[0])
    if t.data == "primary" and t.children and isinstance(t.children[0], Tree) and t.children[0].data == "ident":
        return [str(t.children[0].children[0])]
    return None


def _bound_variables(ast: Tree) -> set[str]:
    """Names bound by the comprehension macros (`xs.all(x, x > 0)`): not fields of any schema."""
    bound = set()
    for t in ast.iter_subtrees():
        if t.data == "member_dot_arg" and len(t.children) >= 3 and isinstance(t.children[1], Token) \
                and str(t.children[1]) in _MACROS and isinstance(t.children[2], Tree):
            first = next(iter(t.children[2].children), None)
            for sub in (first.iter_subtrees() if isinstance(first, Tree) else ()):
                if sub.data == "ident":
                    bound.add(str(sub.children[0]))
    return bound


def _plain(x: Any) -> Any:
    """JSON-ish values for celpy (tuples as lists, the loop's "nan"/"inf" spellings as floats)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x in ("nan", "inf", "-inf"):
        return float(x)
    if hasattr(x, "tolist"):
        return _plain(x.tolist())
    return x


def _cel_message(e: Exception) -> str:
    args = getattr(e, "args", ())
    return str(args[0]) if args else str(e)
