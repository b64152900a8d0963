"""`python -m experiments.fairness_eval` on a tiny trained classifier: the scores are the restored
model's, one per line in order; the report's AUCs are scikit-learn's on those scores; bad input
is one sentence and exit status 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from experiments.configs.pretrain import tiny
from experiments.fairness_eval import main
from holo_jax.errors import HoloError
from holo_jax.fairness.scoring import load_classifier, read_examples
from holo_jax.train.loop import train
from tests.train.conftest import IDENTITIES, write_toxicity_jsonl
from tests.train.test_classification_task import classify_config

REPO = Path(__file__).resolve().parents[2]
MAX_LEN = 48  # classify_config's model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One classification workdir (20 steps, with the tests' `probe` stage) and an evaluation file
    that is not its training data (another seed), 150 lines: not a multiple of the batch size."""
    root = tmp_path_factory.mktemp("fairness_eval")
    train_file, eval_file = root / "train.jsonl", root / "eval.jsonl"
    write_toxicity_jsonl(train_file, n=480, seed=0)
    write_toxicity_jsonl(eval_file, n=150, seed=1)
    train(classify_config(train_file, 20), root / "run")
    return root / "run", eval_file


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    workdir, data = run
    scores_out = tmp_path_factory.mktemp("out") / "scores.jsonl"
    # In process (the subprocess test below covers the real command line); --plugin as a user would pass it.
    out = _capture(lambda: main(["--checkpoint", str(workdir), "--data", str(data), "--json", "--scores-out",
                                 str(scores_out), "--plugin", "tests.train.plugin_stages", "--min-per-class", "3"]))
    return json.loads(out), [json.loads(line) for line in scores_out.read_text().splitlines()]


def _capture(fn) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert fn() == 0
    return buf.getvalue()


def _examples(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_scores_equal_the_restored_model_applied_one_example_at_a_time(run, report):
    workdir, data = run
    _, scores = report
    lines = _examples(data)
    assert len(scores) == len(lines) == 150 and all(set(s) == {"score"} for s in scores)
    got = np.asarray([s["score"] for s in scores])
    clf = load_classifier(workdir)
    # The trained parameters, not a fresh init: those the trainer's own Checkpointer restores from
    # the last step, with the whole train state (optimizer and probe stage included) as the target.
    assert clf.step == 20
    full = _restore_with_the_trainer_s_checkpointer(workdir, clf)
    assert int(full.step) == 20
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), clf.params, full.params)

    @jax.jit
    def one(tokens, lengths):  # batch of one, padded to max_len: a fixed shape, one compile
        logits = clf.task.apply(clf.model, clf.params, {"tokens": tokens, "lengths": lengths},
                                deterministic=True)["logits"]
        return jax.nn.softmax(logits, -1)[:, 1]

    want = []
    for line in lines:
        ids = list(line["text"].encode("utf-8"))[:MAX_LEN] or [256]  # bytes; empty -> end-of-document
        tokens = np.zeros((1, MAX_LEN), np.int32)
        tokens[0, : len(ids)] = ids
        want.append(float(one(tokens, np.asarray([len(ids)], np.int32))[0]))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # And without any padding at all, for a few: the pad tokens after `lengths` change nothing.
    for i in (0, 7, 149):
        ids = np.asarray([list(lines[i]["text"].encode("utf-8"))[:MAX_LEN]], np.int32)
        p = jax.nn.softmax(clf.task.apply(clf.model, clf.params, {"tokens": ids, "lengths": np.asarray([ids.shape[1]])},
                                          deterministic=True)["logits"], -1)[0, 1]
        np.testing.assert_allclose(got[i], float(p), atol=1e-5)
    # The model learned something, so the scores are not all alike and the AUCs below are not trivial.
    assert got.std() > 1e-3


def _restore_with_the_trainer_s_checkpointer(workdir, clf):
    from holo_jax.config import CheckpointConfig, MeshConfig
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.parallel.rules import batch_sharding
    from holo_jax.train.checkpoint import Checkpointer
    from holo_jax.train.optimizer import make_optimizer
    from holo_jax.train.stages import build_stages
    from holo_jax.train.state import abstract_train_state

    cfg = classify_config("unused.jsonl", 20)
    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, plan="manual"), clf.model_cfg, jax.devices()[:1])
    target, _ = abstract_train_state(clf.model, clf.task.init_inputs(MAX_LEN), make_optimizer(cfg.optim, cfg.steps),
                                     build_stages(cfg.stages), mesh, cfg.seed)
    data = {k: jax.ShapeDtypeStruct((cfg.global_batch,), np.int32, sharding=batch_sharding(mesh, 1))
            for k in ("row", "batches_done")}
    ckpt = Checkpointer(workdir / "checkpoints", CheckpointConfig(every_steps=4, keep=2))
    try:
        state, _ = ckpt.restore(20, target, data)
    finally:
        ckpt.close()
    return state


def test_overall_and_subgroup_auc_equal_sklearn_on_the_written_scores(run, report):
    _, data = run
    out, scores = report
    lines = _examples(data)
    labels = np.asarray([line["label"] for line in lines])
    s = np.asarray([x["score"] for x in scores])
    assert out["step"] == 20 and out["n_examples"] == 150
    np.testing.assert_allclose(out["overall_auc"], roc_auc_score(labels, s), rtol=1e-9)
    # The data names the six identities of the fixture and the run tracks the same six.
    by_name = {m["identity"]: m for m in out["identities"]}
    assert set(by_name) == set(IDENTITIES)
    for name, m in by_name.items():
        inside = np.asarray([name in line["identities"] for line in lines])
        assert m["subgroup_size"] == inside.sum()
        np.testing.assert_allclose(m["subgroup_auc"], roc_auc_score(labels[inside], s[inside]), rtol=1e-9)
        bpsn = (inside & (labels == 0)) | (~inside & (labels == 1))
        np.testing.assert_allclose(m["bpsn_auc"], roc_auc_score(labels[bpsn], s[bpsn]), rtol=1e-9)
        bnsp = (inside & (labels == 1)) | (~inside & (labels == 0))
        np.testing.assert_allclose(m["bnsp_auc"], roc_auc_score(labels[bnsp], s[bnsp]), rtol=1e-9)
    axes = {a["axis"]: a for a in out["axes"]}
    assert set(axes) == {"gender", "religion", "ethnicity"}
    for a in axes.values():
        assert "auc_gap" in a and "fpr_gap" in a


def test_identities_are_the_data_s_plus_the_run_s(run, tmp_path):
    """A name only the data carries is reported too; one only the run tracks is reported (empty)."""
    workdir, _ = run
    data = tmp_path / "d.jsonl"
    rows = [{"text": f"jews are {'awful' if i % 2 else 'nice'} #{i}", "label": i % 2,
             "identities": ["jewish"] if i % 3 else []} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # a trailing blank line
    scores = tmp_path / "s.jsonl"
    out = json.loads(_capture(lambda: main(["--checkpoint", str(workdir), "--data", str(data), "--json",
                                            "--scores-out", str(scores), "--batch-size", "5"])))
    names = [m["identity"] for m in out["identities"]]
    assert names == ["male", "female", "christian", "jewish", "muslim", "black", "white"]  # column order
    assert {m["identity"]: m["subgroup_size"] for m in out["identities"]}["jewish"] == 8
    assert len(scores.read_text().splitlines()) == 12  # blank lines hold no example


def test_the_command_line_in_a_subprocess(run, report, tmp_path):
    workdir, data = run
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "experiments.fairness_eval", "--checkpoint", str(workdir), "--data", str(data)]
    # The run used the tests' `probe` stage: without its module this process cannot build the run.
    r = subprocess.run([*cmd, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert "probe" in r.stderr and "--plugin" in r.stderr
    scores = tmp_path / "s.jsonl"
    r = subprocess.run([*cmd, "--json", "--plugin", "tests.train.plugin_stages", "--scores-out", str(scores),
                        "--min-per-class", "3"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "WARNING:absl" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    # Same checkpoint, same data, same batch size: the same figures and scores as in process.
    assert out["overall_auc"] == report[0]["overall_auc"]
    np.testing.assert_allclose([json.loads(x)["score"] for x in scores.read_text().splitlines()],
                               [s["score"] for s in report[1]], atol=1e-6)


def _error(argv) -> str:
    """The one sentence a bad input gets, through the CLI's wrapper (exit status 2)."""
    from holo_jax.errors import exit_on_user_error

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        exit_on_user_error(main)(argv)
    assert exc.value.code == 2
    text = err.getvalue()
    assert text.startswith("error: ") and text.count("\n") == 1, text
    return text


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory):
    """config.json of a language-model run: refused before any checkpoint is looked at."""
    workdir = tmp_path_factory.mktemp("lm")
    cfg = tiny()
    (workdir / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "history": []}))
    return workdir


def _line(tmp_path, text: str) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": 0, "identities": []}\n' + text + "\n")
    return str(path)


@pytest.mark.parametrize("case, needle", [
    ("missing_checkpoint", "does not exist"),
    ("checkpoints_subdir", "pass the run directory"),
    ("lm_workdir", "task.kind=next_token_lm"),
    ("missing_data", "does not exist"),
    ("bad_json", "bad.jsonl:2 is not valid JSON"),
    ("label_2", "bad.jsonl:2: `label` is 2, not 0 or 1"),
    ("label_true", "`label` is true"),
    ("unknown_identity", "did you mean 'muslim'"),
    ("identities_not_list", "not a list of identity names"),
    ("batch_size", "--batch-size must be at least 1"),
])
def test_bad_input_is_one_sentence_and_exit_2(case, needle, run, lm_workdir, tmp_path):
    workdir, data = run
    args = {"checkpoint": str(workdir), "data": str(data), "extra": ["--plugin", "tests.train.plugin_stages"]}
    if case == "missing_checkpoint":
        args["checkpoint"] = str(tmp_path / "nowhere")
    elif case == "checkpoints_subdir":
        args["checkpoint"] = str(workdir / "checkpoints")
    elif case == "lm_workdir":
        args["checkpoint"] = str(lm_workdir)
    elif case == "missing_data":
        args["data"] = str(tmp_path / "none.jsonl")
    elif case == "bad_json":
        args["data"] = _line(tmp_path, '{"text": "x", "label": 0')
    elif case == "label_2":
        args["data"] = _line(tmp_path, '{"text": "x", "label": 2}')
    elif case == "label_true":
        args["data"] = _line(tmp_path, '{"text": "x", "label": true}')
    elif case == "unknown_identity":
        args["data"] = _line(tmp_path, '{"text": "x", "label": 1, "identities": ["muslin"]}')
    elif case == "identities_not_list":
        args["data"] = _line(tmp_path, '{"text": "x", "label": 1, "identities": "muslim"}')
    elif case == "batch_size":
        args["extra"] += ["--batch-size", "0"]
    text = _error(["--checkpoint", args["checkpoint"], "--data", args["data"], "--json", *args["extra"]])
    assert needle in text, text


def test_read_examples_keeps_file_order_and_line_numbers(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": 1}\n\n{"text": "", "label": 0, "identities": ["male", "male"]}\n')
    a, b = read_examples(path)
    assert (a.text, a.label, a.identities, a.line) == ("a", 1, (), 1)
    assert (b.text, b.label, b.identities, b.line) == ("", 0, ("male",), 3)
    with pytest.raises(HoloError, match="holds no examples"):
        (tmp_path / "empty.jsonl").write_text("\n")
        read_examples(tmp_path / "empty.jsonl")


def test_record_files_the_report_with_the_run_and_the_release_gate_reads_it(run, tmp_path):
    """--record writes DIR/reports/fairness.json, logs its sha256 in events.jsonl and the audit log
    (one event API), the log verifies, and the release gate sees the same figures; an edit of the
    report after logging is caught."""
    import hashlib
    import shutil

    from holo_jax.governance import verify_run
    from holo_jax.governance.release_gate import gather
    from holo_jax.train.jsonl import read_jsonl

    workdir, data = run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    out = json.loads(_capture(lambda: main(["--checkpoint", str(copy), "--data", str(data), "--json", "--record",
                                            "--plugin", "tests.train.plugin_stages", "--min-per-class", "3",
                                            "--bootstrap", "0"])))
    path = copy / "reports" / "fairness.json"
    filed = json.loads(path.read_text())
    assert filed["overall_auc"] == out["overall_auc"] and filed["step"] == out["step"]
    (event,) = [e for e in read_jsonl(copy / "events.jsonl") if e["kind"] == "report"]
    assert event["report_kind"] == "fairness" and event["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    check = verify_run(copy)
    assert check.ok, check.summary()
    variables, built_in = gather(copy, check)
    assert [a["auc_gap"] for a in variables["reports"]["fairness"]["axes"]] == [a["auc_gap"] for a in filed["axes"]]
    # This fixture trained without an audit log, so no checkpoint has provenance; the report is intact.
    assert [d.rule for d in built_in] == ["checkpoint_with_provenance"], built_in
    path.write_text(path.read_text().replace('"overall_auc"', '"overall_auc" ', 1))  # edited after logging
    variables, built_in = gather(copy, verify_run(copy))
    assert "fairness" not in variables["reports"]
    assert [d.rule for d in built_in] == ["report_fairness_intact", "checkpoint_with_provenance"], built_in
