"""Both debiasing stages through the whole loop on a sharded mesh, with microbatches and int8
gradient aggregation: a run stopped and resumed equals the uninterrupted one, step for step, stage
metrics included (the adversary's parameters, optimizer and base-rate counts are checkpointed).
Both stages are on in one run: each keeps its own state, and one run (three trainings) checks the
two at the cost of one."""
import dataclasses

import pytest

from holo_jax.config import GradCommConfig, MeshConfig
from holo_jax.fairness.adversary import AdversarialDebiasConfig
from holo_jax.fairness.mindiff import MinDiffConfig
from holo_jax.train.jsonl import read_metrics
from holo_jax.train.loop import train
from tests.train.conftest import IDENTITIES, write_toxicity_jsonl
from tests.train.test_classification_task import classify_config

STEPS = 8
STAGES = (AdversarialDebiasConfig(identities=IDENTITIES, alpha=0.5, warmup_steps=2), MinDiffConfig(weight=1.5))
STAGE_KEYS = ("adversarial_debias/loss", "adversarial_debias/cosine", "adversarial_debias/alpha", "mindiff/loss")


@pytest.fixture(scope="module")
def comments(tmp_path_factory):
    path = tmp_path_factory.mktemp("stage_runs") / "comments.jsonl"
    write_toxicity_jsonl(path, n=480, seed=3)
    return path


@pytest.mark.slow
def test_resumed_equals_uninterrupted_on_a_sharded_int8_microbatched_run(comments, tmp_path, require_devices):
    require_devices(8)
    cfg = dataclasses.replace(classify_config(comments, STEPS), stages=STAGES, mesh=MeshConfig(4, 2, 1),
                              grad_comm=GradCommConfig(scheme="int8"), microbatches=2)
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_after=3)
    train(cfg, tmp_path / "resumed")
    straight, resumed = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("straight", "resumed"))
    assert [r["step"] for r in resumed if "loss" in r] == list(range(1, STEPS + 1))
    for key in ("loss", "accuracy", *STAGE_KEYS):
        values = [r[key] for r in straight if key in r]
        assert len(values) == STEPS and values == [r[key] for r in resumed if key in r], key
    # Both played: the reversal weight is on after the warm-up, and the MMD penalty was not zero
    # (it is 0 on a step whose non-toxic rows all fall in one group: MMD^2 of an empty group is 0).
    assert [r["adversarial_debias/alpha"] for r in straight if "loss" in r][-1] == 0.5
    assert any(r["mindiff/loss"] > 0 for r in straight if "mindiff/loss" in r)
