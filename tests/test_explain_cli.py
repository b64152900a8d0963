"""`python -m experiments.explain` on the tiny keyword classifier: the contract's outputs, figures
that recompute from `--explanations-out` through `experiments.fairness_eval --scores-out`, a sharded
run, and bad input as one sentence with exit status 2."""
import contextlib
import io
import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from experiments.explain import main
from holo_jax.errors import HoloError

from tests.explain.conftest import keyword_run  # noqa: F401  (the session fixture, shared)

REPO = Path(__file__).resolve().parents[1]
METHODS = {"raw_attention", "attention_rollout", "grad_attention_rollout", "grad_cam", "integrated_gradients",
           "random", "symbolic"}


def _capture(fn) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert fn() == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def cli_run(keyword_run, tmp_path_factory):  # noqa: F811
    workdir, data = keyword_run
    out = tmp_path_factory.mktemp("explain_cli")
    args = ["--checkpoint", str(workdir), "--data", str(data), "--json", "--explanations-out",
            str(out / "expl.jsonl"), "--html", str(out / "page.html"), "--devices", "2", "--ig-steps", "4",
            "--samples", "16", "--latency", "2", "--latency-repeats", "1"]
    report = json.loads(_capture(lambda: main(args)))
    lines = [json.loads(x) for x in (out / "expl.jsonl").read_text().splitlines()]
    return report, lines, out, data


@pytest.mark.slow
def test_outputs_follow_the_contract(cli_run):
    report, lines, out, data = cli_run
    inputs = [json.loads(x) for x in Path(data).read_text().splitlines()]
    assert len(lines) == len(inputs) == report["n_examples"] == 64
    for line, given in zip(lines, inputs):
        assert line["words"] == given["text"].split()
        assert set(line["relevance"]) == METHODS
        assert all(len(v) == len(line["words"]) for v in line["relevance"].values())
        assert isinstance(line["rule"], str) and line["rule"].startswith("IF ")
    assert set(report["faithfulness"]["methods"]) == METHODS
    for key in ("fidelity", "coverage", "simulatability", "rules", "n_rules", "mining"):
        assert key in report["global_rules"]
    assert report["global_rules"]["mining"]["n_queried"] > 0  # --queries 8 by default
    assert report["settings"]["max_rules"] == 0 and report["settings"]["queries"] == 8
    assert report["timing"]["devices"] == 2 and report["timing"]["latency_batch1"]["local_rule_ms_median"] > 0
    assert Path(report["png"]).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("*.tmp"))


def test_faithfulness_recomputes_from_explanations_out_with_fairness_eval(cli_run, keyword_run, tmp_path):  # noqa: F811
    from experiments.fairness_eval import main as fairness_eval

    report, lines, _, data = cli_run
    workdir, _ = keyword_run
    k = 20
    texts, index = [], []
    for line in lines:
        words = line["words"]
        texts.append(" ".join(words))  # the full text, re-joined, as the deletion curve's f = 0
        for method in ("symbolic", "raw_attention"):
            rel = np.asarray(line["relevance"][method])
            order = sorted(range(len(words)), key=lambda i: (-rel[i], i))
            top = set(order[:max(1, math.ceil(k / 100 * len(words)))])
            texts.append(" ".join(w for i, w in enumerate(words) if i not in top))
    given = [json.loads(x)["text"] for x in Path(data).read_text().splitlines()]
    rows = given + texts
    edited = tmp_path / "edited.jsonl"
    with open(edited, "w") as f:
        for j, text in enumerate(rows):  # labels and an identity only so the bias report can run
            f.write(json.dumps({"text": text, "label": j % 2, "identities": ["male"]}) + "\n")
    _capture(lambda: fairness_eval(["--checkpoint", str(workdir), "--data", str(edited), "--scores-out",
                                    str(tmp_path / "scores.jsonl"), "--json", "--bootstrap", "0"]))
    scores = np.asarray([json.loads(x)["score"] for x in (tmp_path / "scores.jsonl").read_text().splitlines()])
    full, rest = scores[:len(given)], scores[len(given):].reshape(len(given), 3)
    decided = full >= 0.5
    support = lambda p: np.where(decided, p, 1 - p)  # noqa: E731
    for j, method in enumerate(("symbolic", "raw_attention")):
        comp = np.mean(support(full) - support(rest[:, 1 + j]))
        assert comp == pytest.approx(report["faithfulness"]["methods"][method]["comprehensiveness"][str(k)], abs=1e-5)
    assert np.mean(support(rest[:, 0])) == pytest.approx(
        report["faithfulness"]["methods"]["symbolic"]["deletion_curve"][0], abs=1e-5)


def test_html_page_holds_every_shown_word(cli_run):
    _, lines, out, _ = cli_run

    class Words(HTMLParser):
        def __init__(self):
            super().__init__()
            self.words, self.inside = [], False

        def handle_starttag(self, tag, attrs):
            self.inside = ("class", "w") in attrs

        def handle_endtag(self, tag):
            self.inside = False

        def handle_data(self, data):
            if self.inside:
                self.words.append(data)

    parser = Words()
    parser.feed((out / "page.html").read_text())
    assert parser.words == [w for line in lines for _ in METHODS for w in line["words"]]


def test_bad_settings_are_one_sentence(keyword_run):  # noqa: F811
    workdir, data = keyword_run
    with pytest.raises(HoloError, match="rule relevance `random`"):
        main(["--checkpoint", str(workdir), "--data", str(data), "--rule-relevance", "random"])
    with pytest.raises(HoloError, match="precision target"):
        main(["--checkpoint", str(workdir), "--data", str(data), "--precision-target", "1.5"])
    with pytest.raises(HoloError, match="--rule-precision must be in"):
        main(["--checkpoint", str(workdir), "--data", str(data), "--rule-precision", "0.3"])
    with pytest.raises(HoloError, match="--max-rules must be 0 or more"):
        main(["--checkpoint", str(workdir), "--data", str(data), "--max-rules", "-1"])
    with pytest.raises(HoloError, match="--validation-fraction must be in"):
        main(["--checkpoint", str(workdir), "--data", str(data), "--validation-fraction", "1"])
    with pytest.raises(HoloError, match="directory does not exist"):
        main(["--checkpoint", str(workdir), "--data", str(data), "--html", "/nonexistent/dir/page.html"])


def test_a_missing_checkpoint_exits_2_with_one_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a b", "label": 0}\n')
    proc = subprocess.run([sys.executable, "-m", "experiments.explain", "--checkpoint", str(tmp_path / "nope"),
                           "--data", str(data), "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --checkpoint") and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "experiments.explain", "--data", str(data)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
