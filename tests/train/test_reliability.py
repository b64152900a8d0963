"""The loop cannot mislead: a diverging run stops with a checkpoint and an error, every split is
opened before step 1, a changed data file or a checkpoint of other shapes is one sentence, stderr
survives a failed restore, and a non-interactive log gets plain progress lines."""
import dataclasses
import io
import os
import shutil

import pytest

from holo_jax.config import DataConfig, override
from holo_jax.data import holdout_split
from holo_jax.errors import HoloError
from holo_jax.train.checkpoint import Checkpointer
from holo_jax.train.jsonl import read_jsonl, read_metrics
from holo_jax.train.loop import train
from holo_jax.train.progress import Progress
from tests.train.test_loop import small
import tests.train.plugin_stages  # noqa: F401  (registers the nan_from stage)


def test_a_diverging_run_saves_its_last_good_state_and_stops_with_an_error(tmp_path):
    cfg = override(small(20), ["stages=nan_from", "stages.nan_from.from_step=3", "optim.max_consecutive_skips=3"])
    with pytest.raises(HoloError, match="3 consecutive steps had non-finite") as err:
        train(cfg, tmp_path)
    events = read_jsonl(tmp_path / "events.jsonl")
    skipped = [e["step"] for e in events if e["kind"] == "nonfinite_step_skipped"]
    assert skipped[:3] == [4, 5, 6] and events[-1]["kind"] == "run_end" and events[-1]["reason"] == "diverged"
    saved = Checkpointer(tmp_path / "checkpoints", cfg.checkpoint)
    final = saved.latest_step()
    saved.close()
    assert final == events[-1]["step"] and final < 20 and f"step {final}" in str(err.value)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, final + 1))  # every step logged, the bad ones too
    assert rows[2]["loss"] == rows[2]["loss"] and rows[3]["skipped_steps"] == 1


def _doc_in(split: str) -> str:
    for i in range(1000):
        text = f"document number {i} with a few words of text in it.\n"
        if holdout_split(text.encode()) == split:
            return text
    raise AssertionError


def test_an_empty_validation_split_fails_before_step_one_and_leaves_no_workdir(tmp_path):
    corpus = tmp_path / "one_doc.txt"
    corpus.write_text(_doc_in("train") * 3)  # one document, in the train split: validation is empty
    cfg = dataclasses.replace(small(4), data=DataConfig(source="files", paths=(str(corpus),)))
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, eval_every_steps=2))
    with pytest.raises(HoloError, match="no documents"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_data_files_changed_since_the_run_started_are_refused_on_resume(tmp_path):
    corpus = tmp_path / "corpus.txt"
    shutil.copy(__import__("holo_jax.data.sources", fromlist=["x"]).__file__, corpus)  # any UTF-8 text of size
    cfg = dataclasses.replace(small(6), data=DataConfig(source="files", paths=(str(corpus),)))
    train(cfg, tmp_path / "run", stop_after=4)
    with open(corpus, "a") as f:
        f.write("\n# one more line\n")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(HoloError, match="training data .* changed since the run started"):
        train(cfg, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before


# After the failed restore, tensorstore reader threads still call into orbax's closed event loop.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_checkpoint_of_other_shapes_says_so(tmp_path):
    import json

    train(small(4), tmp_path, stop_after=2)
    record = json.loads((tmp_path / "config.json").read_text())
    record["config"]["model"]["d_model"] = 128  # the record no longer describes the checkpoint
    (tmp_path / "config.json").write_text(json.dumps(record))
    cfg = small(4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_model=128))
    stderr_before = os.fstat(2)
    with pytest.raises(HoloError, match="other shapes than this run builds"):
        train(cfg, tmp_path)
    # A library caller has its stderr back after the failed restore.
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino)


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_progress_in_a_non_interactive_log_is_a_plain_line_every_few_seconds():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(True, 0, 100, stream=stream, every_seconds=10.0, clock=clock)
    for step in range(1, 101):
        clock.now += 0.5  # 50 s in all: a line at 10, 20, 30, 40 s and the last step
        progress.update(step, loss="1.000")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 5
    assert lines[0] == "step 20/100 loss=1.000" and lines[-1] == "step 100/100 loss=1.000"
