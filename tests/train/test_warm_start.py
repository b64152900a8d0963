"""Warm start (`task.init_from`): a classifier's decoder from a pretraining run's latest checkpoint.

One tiny LM is pretrained for a few steps on an 8-way data-parallel mesh (module fixture). From
it: the classifier's decoder at step 0 is the LM's, leaf for leaf and bit for bit, on another
mesh, and its head is a from-scratch run's; fine-tuning learns; a resumed run never reads the
pretraining run again (stop, delete the source, resume == uninterrupted); and each bad
`task.init_from` is one sentence with exit status 2 that leaves the workdir uncreated."""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import pretrain
from experiments.configs.pretrain import tiny
from holo_jax.config import CheckpointConfig, DataConfig, LogConfig, MeshConfig, TaskConfig
from holo_jax.errors import HoloError, exit_on_user_error
from holo_jax.parallel.mesh import build_mesh
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.loop import train
from holo_jax.train.optimizer import make_optimizer
from holo_jax.train.state import abstract_train_state, init_train_state
from holo_jax.train.tasks import make_task
from holo_jax.train.warm_start import check_source, restore_pretrained
from tests.test_bad_inputs import QUIET, _assert_one_clear_error
from tests.train.conftest import IDENTITIES

LOG = LogConfig(eval_every_steps=0, progress_bar=False, tensorboard=False, plot=False)
STEPS = 24


def lm_config():
    return dataclasses.replace(tiny(), steps=4, mesh=MeshConfig(8, 1, 1), log=LOG,
                               checkpoint=CheckpointConfig(every_steps=4, keep=1))


def classifier_config(init_from, examples=None, **kw):
    """The tiny model as a classifier of `examples` (.jsonl; default: the embedded toxicity set) on
    a data x fsdp x tensor mesh."""
    data = DataConfig(source="files", paths=(str(examples),)) if examples else DataConfig()
    return dataclasses.replace(
        tiny(), steps=STEPS, global_batch=16, mesh=MeshConfig(2, 2, 2), log=LOG, data=data,
        task=TaskConfig(kind="sequence_classification", identities=IDENTITIES, init_from=str(init_from)),
        checkpoint=CheckpointConfig(every_steps=12, keep=1), **kw)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("warm_start") / "lm"
    train(lm_config(), workdir)
    return workdir


def _lm_params(workdir, step=4):
    """The LM's parameters as saved, read without this feature's code (to host numpy arrays)."""
    with warnings.catch_warnings():  # "sharding info not provided": wanted, host arrays are asked for
        warnings.simplefilter("ignore", UserWarning)
        restored = ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    return jax.tree.map(np.asarray, restored["params"])


def _paths(tree):
    return sorted(jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree))


def test_decoder_is_the_lms_and_the_head_a_fresh_one_on_another_mesh(pretrained, require_devices):
    require_devices(4)
    # Pretrained on 8 devices, data-parallel (parameters replicated); here 4, data=2 x fsdp=2.
    cfg = dataclasses.replace(classifier_config(pretrained), mesh=MeshConfig(2, 2, 1))
    mesh = build_mesh(cfg.mesh, cfg.model, jax.devices()[:4])
    task = make_task(cfg.task)
    model, inputs = task.build_model(cfg.model), task.init_inputs(cfg.model.max_len)
    optimizer = make_optimizer(cfg.optim, cfg.steps)
    source = check_source(cfg)
    assert (source.step, source.task) == (4, "next_token_lm")
    target, _ = abstract_train_state(model, inputs, optimizer, (), mesh, cfg.seed)
    given = restore_pretrained(source, task.warm_start_params, target.params)
    warm, shardings = init_train_state(model, inputs, optimizer, (), mesh, cfg.seed, given_params=given)
    scratch, _ = init_train_state(model, inputs, optimizer, (), mesh, cfg.seed)

    lm = _lm_params(pretrained)
    assert set(warm.params) == {"decoder", "classifier"}
    assert _paths(warm.params["decoder"]) == _paths(lm["decoder"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(warm.params["decoder"]), lm["decoder"])
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(warm.params["classifier"]),
                 jax.device_get(scratch.params["classifier"]))
    # The decoder differs from a fresh one (it was trained), and sits in this mesh's shardings.
    assert not np.array_equal(lm["decoder"]["embedding"], jax.device_get(scratch.params["decoder"]["embedding"]))
    for leaf, sharding in zip(jax.tree.leaves(warm.params), jax.tree.leaves(shardings.params)):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    assert shardings.params["decoder"]["embedding"].spec != jax.sharding.PartitionSpec()  # fsdp-sharded here
    # Optimizer state starts fresh (AdamW's moments at zero, count 0), as in a run from scratch.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(warm.opt_state), jax.device_get(scratch.opt_state))


@pytest.mark.slow
def test_fine_tuning_learns_and_a_resume_never_reads_init_from_again(pretrained, toxicity_jsonl, tmp_path):
    train(classifier_config(pretrained, toxicity_jsonl), tmp_path / "straight")
    # The resumed run fine-tunes a copy, deleted once the first stretch has saved its checkpoint.
    copy = tmp_path / "lm_copy"
    shutil.copytree(pretrained, copy)
    train(classifier_config(copy, toxicity_jsonl), tmp_path / "resumed", stop_after=10)
    shutil.rmtree(copy)
    result = train(classifier_config(copy, toxicity_jsonl), tmp_path / "resumed")
    assert (result.final_step, result.reason) == (STEPS, "completed")

    rows = {n: read_metrics(tmp_path / n / "metrics.jsonl") for n in ("straight", "resumed")}
    assert [r["step"] for r in rows["resumed"]] == list(range(1, STEPS + 1))
    for key in ("loss", "accuracy", "grad_norm", "param_norm"):
        assert [r[key] for r in rows["straight"]] == [r[key] for r in rows["resumed"]], key
    losses = [r["loss"] for r in rows["straight"]]
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.2, losses  # templated toxic frames are easy

    lm_norm = float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in jax.tree.leaves(
        _lm_params(pretrained)["decoder"]))))
    for name, source in (("straight", pretrained), ("resumed", copy)):
        events = read_jsonl(tmp_path / name / "events.jsonl")
        warm = [e for e in events if e["kind"] == "warm_start"]
        assert len(warm) == 1, warm  # the resumed run's second stretch did not warm-start again
        (warm,) = warm
        assert warm["source"] == str(source) and warm["source_step"] == 4 and warm["step"] == 0
        assert (warm["restored"], warm["initialised_fresh"]) == (["decoder"], ["classifier"])
        assert warm["source_config_sha256"] == _sha256(pretrained / "config.json")
        np.testing.assert_allclose(warm["restored_param_norm"], lm_norm, rtol=1e-6)
        kinds = [e["kind"] for e in events]
        assert kinds.index("run_start") < kinds.index("warm_start")
    assert [e["kind"] for e in read_jsonl(tmp_path / "resumed" / "events.jsonl")].count("resume") == 1
    # task.init_from is not among the settings a resume may change (holo_jax/config.py says why).
    with pytest.raises(HoloError, match=r"holds a run with other settings \(task.init_from: "):
        train(classifier_config(pretrained, toxicity_jsonl), tmp_path / "resumed")


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    import sentencepiece as spm

    from holo_jax.data import EmbeddedSource

    tmp = tmp_path_factory.mktemp("sp")
    (tmp / "corpus.txt").write_text("\n".join(EmbeddedSource("train").document(i) for i in range(4)), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp / "corpus.txt"), model_prefix=str(tmp / "sp"), vocab_size=100,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    return tmp / "sp.model"


def _no_checkpoints(pretrained, tmp):
    (tmp / "fresh").mkdir()
    shutil.copy(pretrained / "config.json", tmp / "fresh" / "config.json")
    return tmp / "fresh"


# (id, the directory init_from names (from the pretrained run, a scratch dir), extra settings, fragment)
BAD = [
    ("wider_model", lambda lm, tmp: lm, ["model.d_model=128"],
     "(model.d_model=64 there, model.d_model=128 here); set model.d_model=64 to fine-tune it."),
    ("two_fields", lambda lm, tmp: lm, ["model.n_layers=3", "model.d_ff=128"],
     "set model.n_layers=2 and model.d_ff=256 to fine-tune it."),
    ("other_max_len", lambda lm, tmp: lm, ["model.max_len=32"], "set model.max_len=64"),
    ("other_vocab_padding", lambda lm, tmp: lm, ["model.vocab_multiple=64"], "set model.vocab_multiple=128"),
    ("unscanned_layers", lambda lm, tmp: lm, ["model.scan_layers=false"], "set model.scan_layers=true"),
    ("other_tokenizer", lambda lm, tmp: lm, ["data.tokenizer={sp}"],
     "was trained with data.tokenizer=byte but this run has data.tokenizer="),
    ("no_checkpoint", _no_checkpoints, [], "has no finished checkpoint in"),
    ("checkpoints_folder", lambda lm, tmp: lm / "checkpoints", [], "holds no config.json, but"),
    ("one_step_folder", lambda lm, tmp: lm / "checkpoints" / "4", [], "holds no config.json, but"),
    ("missing", lambda lm, tmp: tmp / "nowhere", [], "does not exist; give the --workdir of a pretraining run"),
]


@pytest.mark.parametrize("where, sets, fragment", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_init_from_is_one_sentence(pretrained, sentencepiece_model, tmp_path, capsys, where, sets, fragment):
    workdir = tmp_path / "run"
    source = where(pretrained, tmp_path)
    before = sorted(p.name for p in pretrained.rglob("*"))
    args = ["--workdir", str(workdir), "--config", "tiny", *QUIET]
    for kv in ["task.kind=sequence_classification", f"task.identities={','.join(IDENTITIES)}",
               f"task.init_from={source}", *sets]:
        args += ["--set", kv.format(sp=sentencepiece_model)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(pretrain.main)(args)
    _assert_one_clear_error(info.value.code, capsys.readouterr().err, fragment)
    assert not workdir.exists()
    assert sorted(p.name for p in pretrained.rglob("*")) == before  # the source is only read


def test_a_classifier_without_identities_gets_an_empty_identities_column():
    """The README's fine-tuning line names no identities; the batch still carries `identities` [b, 0]
    (ClassificationBatches always yields it), so the step's input shardings must expect it."""
    batch = make_task(TaskConfig(kind="sequence_classification")).example_batch(8, 16)
    assert batch["identities"].shape == (8, 0)


def _fake_run(directory, tokenizer):
    directory.mkdir()
    model = dataclasses.asdict(tiny().model)
    (directory / "config.json").write_text(json.dumps({"config": {"model": model, "data": {"tokenizer": tokenizer}},
                                                       "history": []}))
    return directory


def test_sentencepiece_models_are_compared_by_contents(tmp_path):
    ours, same, other = tmp_path / "ours.model", tmp_path / "same.model", tmp_path / "other.model"
    ours.write_bytes(b"pieces")
    same.write_bytes(b"pieces")
    other.write_bytes(b"other pieces")
    cfg = lambda source: dataclasses.replace(  # noqa: E731
        classifier_config(source), data=DataConfig(source="embedded", tokenizer=str(ours)))
    # Same contents under another name: accepted (it fails only later, for want of a checkpoint).
    with pytest.raises(HoloError, match="has no finished checkpoint"):
        check_source(cfg(_fake_run(tmp_path / "same", str(same))))
    with pytest.raises(HoloError, match=r"whose contents differ from this run's data.tokenizer=.*ours.model"):
        check_source(cfg(_fake_run(tmp_path / "other", str(other))))
    with pytest.raises(HoloError, match="which is not found here"):
        check_source(cfg(_fake_run(tmp_path / "gone", str(tmp_path / "gone.model"))))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    with pytest.raises(HoloError, match="is not a holo_jax run record"):
        check_source(cfg(bare))
