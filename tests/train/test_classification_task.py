"""The sequence-classification task on the same step, with a stage on: sharded == one device,
microbatches == the full batch, resumed == uninterrupted, 2 processes == 1, and it learns."""
import dataclasses

import jax
import numpy as np
import pytest

from experiments.configs.pretrain import tiny
from experiments.launch_local import launch
from holo_jax.config import CheckpointConfig, DataConfig, MeshConfig, ModelConfig, TaskConfig
from holo_jax.data import ByteTokenizer, ClassificationBatches, LocalExamplesSource
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.loop import train
from holo_jax.train.tasks import SequenceClassification
from tests.train.conftest import IDENTITIES
from tests.train.helpers import run_steps
from tests.train.plugin_stages import ProbeConfig, ProbeStage
from tests.train.test_sharded_equivalence import assert_leaves_close

MODEL = ModelConfig(d_model=64, n_heads=4, d_ff=128, n_layers=2, max_len=48)
TASK = SequenceClassification(2, IDENTITIES)


def _batches(path, n: int, rows: int = 16):
    source = LocalExamplesSource([str(path)], num_classes=2)
    it = ClassificationBatches(source, ByteTokenizer(), seq_len=MODEL.max_len, global_batch=rows, num_classes=2,
                               identities=IDENTITIES)
    return [next(it) for _ in range(n)]


def _run(mesh_shape, batches, microbatches=1):
    return run_steps(mesh_shape, batches, model_cfg=MODEL, task=TASK, microbatches=microbatches,
                     stages=(ProbeStage(ProbeConfig(weight=0.5)),))


@pytest.fixture(scope="module")
def reference(toxicity_jsonl):
    batches = _batches(toxicity_jsonl, 3)
    return batches, _run((1, 1, 1), batches)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2), (1, 2, 4)])
def test_sharded_classification_step_matches_one_device(mesh_shape, reference, require_devices):
    require_devices(8)
    batches, (ref_state, ref_hist) = reference
    state, hist = _run(mesh_shape, batches)
    for (m, _), (r, _) in zip(hist, ref_hist):
        for key in ("loss", "total_loss", "accuracy", "probe/loss"):
            np.testing.assert_allclose(m[key], r[key], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(m["grad_norm"], r["grad_norm"], rtol=1e-4)
    assert_leaves_close(state.params, ref_state.params, 1e-4, "params")
    assert_leaves_close(state.stage_states, ref_state.stage_states, 1e-4, "stage")


def test_classification_microbatches_match_the_full_batch(reference):
    batches, (ref_state, ref_hist) = reference
    state, hist = _run((1, 1, 1), batches, microbatches=4)
    for (m, _), (r, _) in zip(hist, ref_hist):
        np.testing.assert_allclose(m["loss"], r["loss"], rtol=1e-5)
        np.testing.assert_allclose(m["probe/loss"], r["probe/loss"], rtol=1e-5)
    assert_leaves_close(state.params, ref_state.params, 1e-4, "params")


def classify_config(path, steps: int, **kw):
    cfg = tiny()
    return dataclasses.replace(
        cfg, model=MODEL, steps=steps, global_batch=16,
        task=TaskConfig(kind="sequence_classification", identities=IDENTITIES),
        data=DataConfig(source="files", paths=(str(path),)), stages=(ProbeConfig(weight=0.2),),
        checkpoint=CheckpointConfig(every_steps=4, keep=2),
        log=dataclasses.replace(cfg.log, eval_every_steps=steps, eval_batches=4, progress_bar=False, plot=False,
                                tensorboard=False), **kw)


@pytest.mark.slow
def test_classification_resumed_equals_uninterrupted_and_it_learns(toxicity_jsonl, tmp_path):
    cfg = classify_config(toxicity_jsonl, 40)
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_after=12)
    train(cfg, tmp_path / "resumed")
    rows = {n: read_metrics(tmp_path / n / "metrics.jsonl") for n in ("straight", "resumed")}
    for key in ("loss", "accuracy", "probe/loss"):
        assert [r[key] for r in rows["straight"]] == [r[key] for r in rows["resumed"]], key
    last = rows["straight"][-1]
    assert last["eval_auc"] > 0.9 and last["eval_accuracy"] > 0.8, last  # templated toxic frames are easy
    # The probe's emitted windows: every 2nd step, each exactly once across the resume.
    windows = [r["step"] for r in read_jsonl(tmp_path / "resumed" / "emitted" / "probe.jsonl")]
    assert windows == list(range(2, 41, 2))
    assert read_jsonl(tmp_path / "resumed" / "emitted" / "probe.jsonl") == read_jsonl(
        tmp_path / "straight" / "emitted" / "probe.jsonl")


@pytest.mark.slow
def test_classification_two_processes_match_one(toxicity_jsonl, tmp_path, require_devices):
    require_devices(8)
    steps = 4
    cfg = dataclasses.replace(classify_config(toxicity_jsonl, steps), mesh=MeshConfig(4, 2, 1))
    train(cfg, tmp_path / "one")
    sets = {"task.kind": "sequence_classification", "task.identities": ",".join(IDENTITIES),
            "data.source": "files", "data.paths": str(toxicity_jsonl), "model.d_model": 64, "model.d_ff": 128,
            "model.max_len": 48, "global_batch": 16, "mesh.data": 4, "mesh.fsdp": 2, "mesh.tensor": 1,
            "stages": "probe", "stages.probe.weight": 0.2, "checkpoint.every_steps": 4, "checkpoint.keep": 2,
            "log.eval_every_steps": steps, "log.eval_batches": 4, "log.progress_bar": "false", "log.plot": "false",
            "log.tensorboard": "false"}
    args = ["--workdir", str(tmp_path / "two"), "--config", "tiny", "--steps", str(steps),
            "--plugin", "tests.train.plugin_stages"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert launch(2, 4, "experiments.pretrain", args, timeout=300) == 0
    one, two = (read_metrics(tmp_path / n / "metrics.jsonl") for n in ("one", "two"))
    assert [r["step"] for r in two] == list(range(1, steps + 1))
    for key in ("loss", "accuracy", "probe/loss", "eval_loss", "eval_auc"):
        np.testing.assert_allclose([r[key] for r in two if key in r], [r[key] for r in one if key in r],
                                   rtol=1e-5, err_msg=key)
    assert jax.device_count() == 8
