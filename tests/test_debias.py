"""`python -m experiments.debias` end to end at test size: every method trains on the same data and
seed, the report's gaps are those of bias reports recomputed here from each workdir, each workdir
is a checkpoint fairness_eval reads, a re-run resumes instead of retraining, and bad input is one
sentence before any training."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.debias import main
from holo_jax.errors import HoloError
from holo_jax.fairness import bias_report
from holo_jax.fairness.scoring import identities_to_report, load_classifier, membership, read_examples
from holo_jax.train.jsonl import read_metrics
from tests.train.conftest import IDENTITIES, write_toxicity_jsonl

REPO = Path(__file__).resolve().parents[1]
# Test size: 12 steps, the adversary playing from step 4, two methods.
SETS = ["--config", "tiny", "--set", "steps=12", "--set", "task.identities=female,male,muslim",
        "--set", "stages.adversarial_debias.warmup_steps=4", "--set", "checkpoint.every_steps=6",
        "--set", "log.eval_every_steps=0", "--set", "log.progress_bar=false", "--set", "log.plot=false"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("debias_data")
    write_toxicity_jsonl(root / "train.jsonl", n=480, seed=0)
    write_toxicity_jsonl(root / "eval.jsonl", n=720, seed=1)
    write_toxicity_jsonl(root / "heldout.jsonl", n=720, seed=2)
    return root


@pytest.fixture(scope="module")
def debiased(files, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("debias") / "out"
    argv = ["--workdir", str(workdir), "--train", str(files / "train.jsonl"), "--eval", str(files / "eval.jsonl"),
            "--heldout", str(files / "heldout.jsonl"), "--methods", "baseline,adversarial", "--axes",
            "gender,religion", "--timing-steps", "1", "--explain-examples", "60", "--json", *SETS]
    assert main(argv) == 0
    return workdir, argv


@pytest.mark.slow
def test_every_method_trained_on_the_same_data_and_seed(debiased):
    workdir, _ = debiased
    report = json.loads((workdir / "report.json").read_text())
    assert [r["method"] for r in report["runs"]] == ["baseline", "adversarial"]
    configs = {m: json.loads((workdir / m / "config.json").read_text())["config"] for m in ("baseline", "adversarial")}
    assert configs["baseline"]["data"] == configs["adversarial"]["data"]
    assert configs["baseline"]["seed"] == configs["adversarial"]["seed"] == 0
    assert configs["baseline"]["stages"] == [] and configs["adversarial"]["stages"][0]["kind"] == "adversarial_debias"
    # The adversary played (alpha > 0 after its warm-up), so the two models differ.
    rows = read_metrics(workdir / "adversarial" / "metrics.jsonl")
    assert [r["adversarial_debias/alpha"] for r in rows if "adversarial_debias/alpha" in r][-1] > 0
    assert report["step_time"]["adversarial"]["ratio_to_baseline"] > 0


def test_the_report_is_the_bias_reports_of_the_workdirs(debiased, files):
    workdir, _ = debiased
    report = json.loads((workdir / "report.json").read_text())
    examples = read_examples(files / "eval.jsonl")
    labels = np.asarray([e.label for e in examples])
    # The tracked identities and every one the file names (christian, black, white too).
    names = identities_to_report(examples, ("female", "male", "muslim"))
    gaps = {}
    for method in ("baseline", "adversarial"):
        scores = load_classifier(workdir / method).score([e.text for e in examples])
        r = bias_report(labels, scores, membership(examples, names), names, bootstrap=0).to_dict()
        gaps[method] = {a["axis"]: a["auc_gap"] for a in r["axes"]}
        assert report["reports"]["eval"][method][0]["overall_auc"] == pytest.approx(r["overall_auc"], abs=1e-6)
    for axis in ("gender", "religion"):
        c = report["summary"]["eval"]["adversarial"]["per_seed"][0]["axes"][axis]
        assert c["baseline_gap"] == pytest.approx(gaps["baseline"][axis], abs=1e-6)
        assert c["gap"] == pytest.approx(gaps["adversarial"][axis], abs=1e-6)
        if c["reduction"] is not None:
            assert c["reduction"] == pytest.approx(1 - c["gap"] / c["baseline_gap"], abs=1e-9)
    verdict = report["summary"]["eval"]["adversarial"]["verdict"]
    assert verdict["met"] == (not verdict["failures"])  # a 12-step model is not expected to meet it
    assert set(report["summary"]) == {"eval", "heldout"}
    for name in ("report.md", "eval_gender.png", "eval_religion.png", "heldout_gender.png"):
        assert (workdir / name).stat().st_size > 0, name
    assert "| seed | axis | baseline gap | gap | reduction |" in (workdir / "report.md").read_text()


def test_the_report_explains_which_identity_words_each_model_s_rules_lean_on(debiased, files):
    workdir, _ = debiased
    report = json.loads((workdir / "report.json").read_text())
    e = report["explanations"]
    assert e["set"] == "eval" and e["examples"] == 60 and set(e["models"]) == {"baseline", "adversarial"}
    # The identity words are found from the data: the test set's subjects ("women", "muslims", ...).
    assert e["identity_words"] and set(e["identity_words"].values()) <= set(IDENTITIES)
    for m in e["models"].values():
        n = m["toxic_decisions_mentioning_identity"]
        share = m["share_of_their_rules_naming_identity_word"]
        assert n == 0 and share is None or 0.0 <= share <= 1.0
        assert all(w in e["identity_words"] and 0 < c <= n for w, c in m["identity_words_in_rules"].items())
        assert 0.0 <= m["global_fidelity"] <= 1.0
    assert "## Explanations (seed 0, eval, 60 examples)" in (workdir / "report.md").read_text()


def test_a_workdir_is_a_fairness_eval_checkpoint(debiased, files):
    workdir, _ = debiased
    out = subprocess.run([sys.executable, "-m", "experiments.fairness_eval", "--checkpoint",
                          str(workdir / "adversarial"), "--data", str(files / "eval.jsonl"), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["step"] == 12


@pytest.mark.slow
def test_a_rerun_resumes_instead_of_retraining(debiased):
    workdir, argv = debiased
    before = {m: (workdir / m / "metrics.jsonl").read_text() for m in ("baseline", "adversarial")}
    assert main(argv) == 0
    assert {m: (workdir / m / "metrics.jsonl").read_text() for m in before} == before


@pytest.mark.parametrize("extra, match", [
    (["--train", "{train}"], r"--train and --eval go together"),
    (["--axes", "gender,colour"], r"--axes names `colour`, which is not an identity axis"),
    (["--methods", "adversarial"], r"--methods adversarial must list baseline"),
    (["--set", "stages=mindiff"], r"experiments\.debias chooses each method's stages itself"),
    (["--seeds", "0"], r"--seeds must be at least 1, got 0\."),
    (["--first-seed", "-1"], r"--first-seed must be 0 or more, got -1\."),
    (["--train", "{train}", "--eval", "{eval}", "--axes", "gender,disability"],
     r"the disability axis has no members in the eval set"),
])
def test_bad_input_is_one_sentence_before_training(extra, match, files, tmp_path):
    extra = [e.format(train=files / "train.jsonl", eval=files / "eval.jsonl") for e in extra]
    with pytest.raises(HoloError, match=match):
        main(["--workdir", str(tmp_path / "w"), *SETS, *extra])
    assert not (tmp_path / "w" / "baseline").exists()


def test_bad_input_exits_2_with_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.debias", "--workdir", str(tmp_path), "--axes", "colour"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: "), out.stderr
