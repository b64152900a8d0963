"""Policies: load-time checking (bad CEL, unknown fields, bad shape) and the decisions at each gate."""
import textwrap

import pytest

from holo_jax.config import TrainConfig
from holo_jax.errors import HoloError
from holo_jax.governance.gates import PolicyGateSink, require_before_training
from holo_jax.governance.policy import DEFAULT_POLICY, load_policy
from holo_jax.train.sinks import CompositeSink, Sink


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_rule(tmp_path, gate, condition, **extra):
    fields = "".join(f"\n          {k}: {v}" for k, v in extra.items())
    return write(tmp_path, f"""
    gates:
      {gate}:
        - name: r
          condition: '{condition}'{fields}
    """)


def test_default_policy_loads_and_allows_the_default_config():
    policy = load_policy()
    assert policy.path == str(DEFAULT_POLICY) and len(policy.sha256) == 64
    decisions = require_before_training(policy, TrainConfig().to_dict())
    assert decisions and all(d.passed for d in decisions)


@pytest.mark.parametrize("condition, fragment", [
    ("config.optim.learning_rate <", "is not valid CEL"),
    ("config.optim.learing_rate > 0.0", "unknown field `config.optim.learing_rate`"),
    ("config.optimizer.learning_rate > 0.0", "unknown field `config.optimizer`"),
    ("cfg.steps > 0", "unknown field `cfg`"),
    ("config.steps.value > 0", "unknown field `config.steps.value`"),
])
def test_bad_cel_or_unknown_field_fails_at_load_time(tmp_path, condition, fragment):
    with pytest.raises(HoloError, match=None) as err:
        load_policy(one_rule(tmp_path, "before_training", condition))
    message = str(err.value)
    assert fragment in message and "\n" not in message, message


def test_unknown_metric_and_release_fields_fail_at_load_time(tmp_path):
    with pytest.raises(HoloError, match="unknown field `row.los`"):
        load_policy(one_rule(tmp_path, "during_training", "row.los < 3.0"))
    with pytest.raises(HoloError, match="unknown field `audit.valid`"):
        load_policy(one_rule(tmp_path, "before_release", "audit.valid"))
    # Comprehension variables and open maps are not fields.
    load_policy(one_rule(tmp_path, "before_release", 'reports.fairness.axes.all(a, a.auc_gap < 0.1)'))


@pytest.mark.parametrize("text, fragment", [
    ("gates: [1, 2]", "top-level `gates:` mapping"),
    ("gates:\n  before_lunch: []", "unknown gates ['before_lunch']"),
    ("gates:\n  during_training:\n    - {name: r, condition: 'row.loss < 1.0', action: deny}", "action must be one of"),
    ("gates:\n  before_training:\n    - {name: r}", "needs `name:` and a `condition:`"),
    ("gates:\n  before_training:\n    - {name: r, condition: 'true', colour: red}", "unknown keys ['colour']"),
    ("gates:\n  during_training:\n    - {name: r, condition: 'true', on: emitted}", "unknown keys ['True']"),
    ("datasets: {c4: {}}\ngates: {}", "`datasets` must map"),
    ("gates:\n  before_training:\n    - {name: a, condition: 'true'}\n    - {name: a, condition: 'true'}", "repeat"),
    ("gates: {a: [}", "not valid YAML"),
])
def test_bad_policy_shape_is_one_sentence(tmp_path, text, fragment):
    with pytest.raises(HoloError) as err:
        load_policy(write(tmp_path, text))
    assert fragment in str(err.value), str(err.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(HoloError, match="cannot be read"):
        load_policy(tmp_path / "nope.yaml")


def test_before_training_allow_and_deny(tmp_path):
    policy = load_policy(write(tmp_path, """
    datasets: {embedded: {license: PSF-2.0}}
    gates:
      before_training:
        - name: allowed
          condition: config.data.source in datasets
          reason: not on the allow-list
        - name: small_lr
          condition: config.optim.learning_rate <= 0.01
          reason: lr too high
    """))
    cfg = TrainConfig().to_dict()
    assert all(d.passed for d in require_before_training(policy, cfg))
    cfg["data"]["source"] = "bookcorpus"
    cfg["optim"]["learning_rate"] = 0.5
    with pytest.raises(HoloError) as err:
        require_before_training(policy, cfg)
    assert "allowed: not on the allow-list" in str(err.value) and "small_lr: lr too high" in str(err.value)


def test_type_errors_and_non_boolean_conditions_fail_at_load_time(tmp_path):
    with pytest.raises(HoloError, match="mixes types"):
        load_policy(one_rule(tmp_path, "during_training", "row.skipped_steps > 0.0"))  # int vs double
    with pytest.raises(HoloError, match="mixes types"):
        load_policy(one_rule(tmp_path, "before_training", 'config.data.source < 3.0'))
    with pytest.raises(HoloError, match="not true/false"):
        load_policy(one_rule(tmp_path, "before_release", "metrics.eval_loss"))
    load_policy(one_rule(tmp_path, "during_training", "row.skipped_steps < 5"))


def test_a_condition_that_cannot_be_evaluated_never_passes(tmp_path):
    policy = load_policy(one_rule(tmp_path, "before_release", 'reports.fairness.gap < 0.1'))
    [d] = policy.evaluate("before_release", {"audit": {}, "metrics": {}, "reports": {}, "checkpoint": {}, "config": {}})
    assert not d.passed and "could not be evaluated" in d.reason
    policy = load_policy(one_rule(tmp_path, "before_release", 'metrics.eval_loss < 1.0'))
    [d] = policy.evaluate("before_release", {"audit": {}, "metrics": {"eval_loss": "low"}, "reports": {},
                                             "checkpoint": {}, "config": {}})
    assert not d.passed and "could not be evaluated" in d.reason


class Recorder(Sink):
    def __init__(self):
        self.events = []

    def event(self, record):
        self.events.append(record)


def test_during_training_warns_rate_limited_and_stops(tmp_path):
    policy = load_policy(write(tmp_path, """
    gates:
      during_training:
        - {name: big_grad, condition: 'row.grad_norm < 1.0', action: warn, reason: grad too big}
        - {name: blowup, condition: 'row.loss < 10.0', action: stop, reason: loss blew up}
        - {name: eval_ok, condition: 'row.eval_loss < 5.0', action: warn}
        - {name: probe, condition: 'value.mean < 0.5', watch: emitted, stage: probe, action: warn}
    """))
    gate = PolicyGateSink(policy, warn_every=10)
    rec = Recorder()
    events = CompositeSink([rec, gate])
    for step in range(1, 31):
        events.metrics(step, {"loss": 2.0, "grad_norm": 5.0})
    warnings = [e for e in rec.events if e["kind"] == "policy_warning"]
    assert [w["step"] for w in warnings] == [1, 11, 21] and warnings[1]["repeats_since_last"] == 9
    assert gate.stop_reason() is None
    events.metrics(31, {"eval_loss": 9.0})  # an evaluation row: only the rules naming its fields apply
    assert rec.events[-1]["rule"] == "eval_ok" and gate.stop_reason() is None
    events.emitted(31, "other", {"mean": 0.9})
    events.emitted(31, "probe", {"mean": 0.9})
    assert rec.events[-1]["rule"] == "probe" and rec.events[-1]["stage"] == "probe"
    events.metrics(32, {"loss": 50.0, "grad_norm": 0.1})
    assert gate.stop_reason() == "policy:blowup"
    stop = rec.events[-1]
    assert stop["kind"] == "policy_decision" and stop["action"] == "stop" and "loss blew up" in stop["reason"]
    events.metrics(33, {"loss": 60.0, "grad_norm": 0.1})
    assert sum(e["kind"] == "policy_decision" for e in rec.events) == 1  # decided once


@pytest.mark.parametrize("reports, failed", [
    ({}, []),
    ({"fairness": {"axes": [{"axis": "gender", "auc_gap": 0.05}, {"axis": "religion", "auc_gap": 0.2}]}},
     ["fairness_gaps"]),
    ({"fairness": {"axes": [{"axis": "gender", "auc_gap": 0.05}]}}, []),
    ({"explanation": {"global_rules": {"fidelity": 0.5}}}, ["explanation_fidelity"]),
    ({"explanation": {"global_rules": {"fidelity": 0.9}}}, []),
    ({"drift": {"first_alarm_window": 3}}, ["no_drift_alarm"]),
    ({"drift": {"first_alarm_window": None}}, []),
])
def test_default_release_rules_read_the_reports(reports, failed):
    variables = {"audit": {"ok": True}, "metrics": {"eval_loss": 2.0}, "reports": reports, "checkpoint": {},
                 "config": {}}
    assert [d.rule for d in load_policy().evaluate("before_release", variables) if not d.passed] == failed
