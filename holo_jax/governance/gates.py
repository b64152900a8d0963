"""The policy gates before and during training (the release gate is release_gate.py).

Before training: `check_before_training(policy, cfg)` evaluates the `before_training` rules on the
resolved config (dataset allow-list with licences, config constraints); a denial stops the
experiment before anything runs, with every reason in one sentence.

During training: `PolicyGateSink` is a Sink; it checks each metrics row (rules `on: metrics`) and
each stage's emitted window (`on: emitted`, `stage: NAME`). A failed `warn` rule becomes a
`policy_warning` event (the first failure of a rule, then at most one per `warn_every` steps with
the count of failures in between, so a rule failing every step cannot flood the fsynced logs); a
failed `stop` rule becomes a `policy_decision` event and the sink's `stop_reason()`, so the loop
saves a checkpoint at the next step boundary and stops cleanly. The before-training decisions are
logged as a `policy_decision` event at the first metrics row (not from inside `event()`, where a
nested event would reach later sinks before the one being delivered).
"""
from __future__ import annotations

from typing import Any, Mapping

from holo_jax.errors import HoloError
from holo_jax.governance.policy import Decision, Policy
from holo_jax.train.sinks import CompositeSink, Sink


def check_before_training(policy: Policy, config: Mapping[str, Any]) -> list[Decision]:
    return policy.evaluate("before_training", {"config": dict(config)})


def denial_message(policy: Policy, gate: str, decisions: list[Decision]) -> str:
    failed = [d for d in decisions if not d.passed]
    reasons = "; ".join(f"{d.rule}: {d.reason}" for d in failed)
    return f"policy {policy.path} denies {gate.replace('_', ' ')}: {reasons}"


def require_before_training(policy: Policy, config: Mapping[str, Any]) -> list[Decision]:
    """The decisions if every before_training rule passes; HoloError naming each failed rule otherwise."""
    decisions = check_before_training(policy, config)
    if any(not d.passed for d in decisions):
        raise HoloError(denial_message(policy, "before_training", decisions)
                        + "; change the run's settings or the policy.")
    return decisions


class PolicyGateSink(Sink):
    def __init__(self, policy: Policy, before_training: list[Decision] | None = None, *, warn_every: int = 100):
        self.policy = policy
        self.warn_every = warn_every
        self._events: CompositeSink | None = None
        self._pending_start = before_training
        self._stop: str | None = None
        self._warned: dict[str, tuple[int, int]] = {}  # rule -> (step of its last warning, failures since)

    def attach(self, events: CompositeSink) -> None:
        self._events = events

    def _emit(self, kind: str, **fields: Any) -> None:
        if self._events is not None:
            self._events.event(kind, **fields)

    def metrics(self, step: int, row: Mapping[str, Any]) -> None:
        if self._pending_start is not None:
            self._emit("policy_decision", gate="before_training", step=0, allowed=True,
                       policy=self.policy.path, policy_sha256=self.policy.sha256,
                       decisions=[d.as_dict() for d in self._pending_start])
            self._pending_start = None
        self._act(step, self.policy.evaluate("during_training", {"step": step, "row": dict(row)}, on="metrics"))

    def emitted(self, step: int, stage: str, tree: Any) -> None:
        decisions = self.policy.evaluate("during_training", {"step": step, "stage": stage, "value": tree},
                                         on="emitted", stage=stage)
        self._act(step, decisions, stage=stage)

    def _act(self, step: int, decisions: list[Decision], stage: str | None = None) -> None:
        extra = {"stage": stage} if stage else {}
        for d in decisions:
            if d.passed:
                continue
            if d.action == "stop":
                if self._stop is None:
                    self._stop = f"policy:{d.rule}"
                    self._emit("policy_decision", gate="during_training", step=step, allowed=False, action="stop",
                               rule=d.rule, reason=d.reason, policy=self.policy.path, **extra)
                continue
            last, since = self._warned.get(d.rule, (None, 0))
            if last is None or step - last >= self.warn_every:
                self._emit("policy_warning", step=step, rule=d.rule, reason=d.reason, repeats_since_last=since,
                           **extra)
                self._warned[d.rule] = (step, 0)
            else:
                self._warned[d.rule] = (last, since + 1)

    def stop_reason(self) -> str | None:
        return self._stop
