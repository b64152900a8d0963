"""Bad settings and inputs for `python -m experiments.pretrain` (issue 11 item 8): each one exits
with status 2 and exactly one `error:` line, shows no traceback, and leaves the workdir as it was
(not created, or an existing run's files byte-identical).

Most cases run `experiments.pretrain.main` in-process behind the same handler the module's
`__main__` uses (without the hard exit), which is fast; a few run the real command to show the
same end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import pretrain
from holo_jax.data import holdout_split
from holo_jax.errors import exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--set", "log.progress_bar=false", "--set", "log.tensorboard=false", "--set", "log.plot=false"]


def _inputs(tmp: Path) -> dict[str, Path]:
    """Files the path cases point at."""
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / "a.txt").write_text("text\n")
    (tmp / "binary.txt").write_bytes(b"PK\x03\x04\xff\xfe\x00\x00")
    (tmp / "table.csv").write_text("a,b\n1,2\n")
    (tmp / "junk.model").write_bytes(b"not a sentencepiece model")
    # One document, in the train split: the validation split is empty.
    one = next(t for t in (f"just one document, number {i}.\n" for i in range(1000)) if holdout_split(t.encode()) == "train")
    (tmp / "one_doc.txt").write_text(one)
    return {"dir": tmp / "corpus", "binary": tmp / "binary.txt", "csv": tmp / "table.csv", "junk": tmp / "junk.model",
            "missing": tmp / "missing.txt", "one_doc": tmp / "one_doc.txt"}


S = lambda *kv: [a for x in kv for a in ("--set", x)]  # noqa: E731

# (id, arguments after --workdir/--config tiny, a fragment the error line must hold). `{dir}` etc.
# name the files `_inputs` writes.
CASES = [
    ("steps_0", S("steps=0"), "steps must be at least 1, got 0."),
    ("steps_negative", S("steps=-5"), "steps must be at least 1, got -5."),
    ("flag_steps_0", ["--steps", "0"], "--steps must be at least 1"),
    ("flag_steps_negative", ["--steps", "-3"], "--steps must be at least 1"),
    ("flag_stop_after_0", ["--stop-after", "0"], "--stop-after must be at least 1"),
    ("keep_0", S("checkpoint.keep=0"), "checkpoint.keep must be at least 1, got 0."),
    ("keep_negative", S("checkpoint.keep=-1"), "checkpoint.keep must be at least 1, got -1."),
    ("checkpoint_every_0", S("checkpoint.every_steps=0"), "checkpoint.every_steps must be at least 1"),
    ("log_every_0", S("log.every_steps=0"), "log.every_steps must be at least 1"),
    ("eval_batches_0", S("log.eval_batches=0"), "log.eval_batches must be at least 1"),
    ("eval_every_negative", S("log.eval_every_steps=-1"), "log.eval_every_steps must be at least 0"),
    ("lr_nan", S("optim.learning_rate=nan"), "optim.learning_rate must be a finite number, got nan."),
    ("lr_inf", S("optim.learning_rate=inf"), "optim.learning_rate must be a finite number, got inf."),
    ("lr_overflow", S("optim.learning_rate=1e999"), "optim.learning_rate must be a finite number, got inf."),
    ("lr_negative", S("optim.learning_rate=-1"), "optim.learning_rate must be greater than 0"),
    ("lr_not_a_number", S("optim.learning_rate=fast"), "`optim.learning_rate=fast` is not a valid float"),
    ("weight_decay_nan", S("optim.weight_decay=nan"), "optim.weight_decay must be a finite number"),
    ("b1_above_1", S("optim.b1=1.5"), "optim.b1 must be in [0, 1), got 1.5."),
    ("b2_negative", S("optim.b2=-0.1"), "optim.b2 must be in [0, 1), got -0.1."),
    ("eps_0", S("optim.eps=0"), "optim.eps must be greater than 0"),
    ("clip_negative", S("optim.grad_clip_norm=-1"), "optim.grad_clip_norm must be greater than 0"),
    ("warmup_negative", S("optim.warmup_steps=-1"), "optim.warmup_steps must be at least 0"),
    ("min_lr_ratio_2", S("optim.min_lr_ratio=2"), "optim.min_lr_ratio must be in [0, 1]"),
    ("d_model_0", S("model.d_model=0"), "model.d_model must be at least 1, got 0."),
    ("heads_not_dividing", S("model.n_heads=3"), "model.d_model=64 is not divisible by model.n_heads=3"),
    ("dropout_1", S("model.dropout=1.0"), "model.dropout must be in [0, 1), got 1.0."),
    ("float16", S("model.compute_dtype=float16"), "model.compute_dtype must be float32 or bfloat16, got `float16`."),
    ("remat_bogus", S("model.remat=bogus"), "model.remat must be one of auto, default, none"),
    ("vocab_0", S("model.vocab_size=0"), "model.vocab_size must be at least 1"),
    ("max_len_0", S("model.max_len=0"), "model.max_len must be at least 1"),
    ("layers_0", S("model.n_layers=0"), "model.n_layers must be at least 1"),
    ("tie_not_bool", S("model.tie_embeddings=2"), "`model.tie_embeddings=2` is not a boolean"),
    ("global_batch_0", S("global_batch=0"), "global_batch must be at least 1, got 0."),
    ("microbatches_0", S("microbatches=0"), "microbatches must be at least 1, got 0."),
    ("microbatches_not_dividing", S("microbatches=3"), "global_batch=8 is not divisible by microbatches=3"),
    ("seed_negative", S("seed=-1"), "seed must be at least 0"),
    ("data_seed_negative", S("data.seed=-2"), "data.seed must be at least 0"),
    ("mesh_data_0", S("mesh.data=0"), "mesh.data must be at least 1, or -1"),
    ("mesh_two_rest_axes", S("mesh.data=-1", "mesh.fsdp=-1"), "at most one of mesh.data, mesh.fsdp and mesh.tensor"),
    ("mesh_plan_bogus", S("mesh.plan=bogus"), "mesh.plan must be auto or manual, got `bogus`."),
    ("unknown_key", S("model.widht=3"), "unknown config key `model.widht`"),
    ("unknown_section", S("optimizer.lr=1"), "unknown config key `optimizer.lr`"),
    ("missing_equals", S("model.d_model"), "needs the form key=value"),
    ("section_as_value", S("model=3"), "`model` is a section"),
    ("below_a_value", S("steps.x=3"), "goes below a plain value `steps`"),
    ("bad_bool", S("log.plot=maybe"), "`log.plot=maybe` is not a boolean"),
    ("bad_int", S("model.d_model=6.5"), "`model.d_model=6.5` is not a valid int"),
    ("source_bogus", S("data.source=bogus"), "data.source must be embedded, files, c4"),
    ("files_without_paths", S("data.source=files"), "data.source=files needs data.paths"),
    ("paths_missing_file", S("data.source=files", "data.paths={missing}"), "missing.txt` does not exist"),
    ("paths_glob_no_match", S("data.source=files", "data.paths={dir}/*.jsonl"), "matches no files"),
    ("paths_unclosed_list", S("data.source=files", "data.paths=[x"), "`data.paths=[x` is not a JSON list"),
    ("paths_directory", S("data.source=files", "data.paths={dir}"), "is a directory"),
    ("paths_wrong_extension", S("data.source=files", "data.paths={csv}"), "neither .txt nor .jsonl"),
    ("paths_not_utf8", S("data.source=files", "data.paths={binary}"), "is not UTF-8 text"),
    ("paths_without_files_source", S("data.paths={dir}/a.txt"), "data.paths is set but data.source is `embedded`"),
    ("text_key_empty", S("data.text_key="), "data.text_key must be non-empty"),
    ("tokenizer_missing", S("data.tokenizer={missing}"), "missing.txt"),
    ("tokenizer_not_a_model", S("data.tokenizer={junk}"), "is not a readable SentencePiece model"),
    ("scheme_int3", S("grad_comm.scheme=int3"), "grad_comm.scheme must be fp32, bf16, int8 or int4, got `int3`."),
    ("block_size_0", S("grad_comm.block_size=0"), "grad_comm.block_size must be at least 2"),
    ("block_size_odd_int4", S("grad_comm.scheme=int4", "grad_comm.block_size=255"),
     "grad_comm.block_size must be even"),
    ("rounding_bogus", S("grad_comm.rounding=bogus"), "grad_comm.rounding must be nearest or stochastic"),
    ("island_negative", S("grad_comm.island=-1"), "grad_comm.island must be at least 0"),
    ("budget_negative", S("memory.budget_bytes=-1"), "memory.budget_bytes must be at least 0"),
    ("max_microbatches_0", S("memory.max_microbatches=0"), "memory.max_microbatches must be at least 1"),
    ("policies_bogus", S("memory.policies=none,bogus"), "memory.policies must be one of"),
    ("task_kind_bogus", S("task.kind=bogus"), "task.kind must be next_token_lm or sequence_classification"),
    ("num_classes_1", S("task.num_classes=1"), "task.num_classes must be at least 2, got 1."),
    ("identities_repeated", S("task.identities=a,b,a"), "task.identities names a more than once"),
    ("stage_kind_unknown", S("stages=bogus"), "unknown stage kind `bogus`"),
    ("stage_not_enabled", S("stages.fair.weight=1"), "names stage `fair`, which is not enabled"),
    ("config_bogus", ["--config", "bogus"], "unknown config `bogus`"),
    ("flag_unknown", ["--bogus"], "unrecognized arguments: --bogus"),
    ("flag_steps_not_int", ["--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    ("plugin_missing", ["--plugin", "no_such_module_xyz"], "--plugin no_such_module_xyz cannot be imported"),
    # Found only once devices and data are opened: still before anything in the workdir changes.
    ("mesh_not_dividing", S("mesh.data=3"), "= 3 devices, but 8 are available"),
    ("tensor_not_dividing_heads", S("mesh.data=1", "mesh.tensor=8"), "model.n_heads=4 is not divisible by the tensor axis (8)"),
    ("rows_not_sharing_devices", S("global_batch=4", "mesh.plan=manual"), "data-parallel devices"),
    ("tfds_not_prepared", S("data.source=c4", "data.tfds_data_dir={missing}"), "tfds build"),
    ("validation_split_empty", S("data.source=files", "data.paths={one_doc}"), "has no documents"),
    ("classification_on_unlabelled_tfds", S("task.kind=sequence_classification", "data.source=c4"),
     "reads labelled .jsonl examples"),
    ("embedded_bias_on_other_source", S("data.source=c4", "data.embedded_bias=0.5"),
     "data.embedded_bias is set but data.source is `c4`"),
    ("embedded_bias_out_of_range", S("data.embedded_bias=2"), "data.embedded_bias must be in [0, 1]"),
    ("classification_on_plain_text", S("task.kind=sequence_classification", "data.source=files",
                                       "data.paths={one_doc}"), "is not .jsonl"),
    # task.init_from (a warm start; more cases, against a real pretraining run, in tests/train/test_warm_start.py)
    ("init_from_on_lm", S("task.init_from={dir}"), "task.init_from is set but task.kind is next_token_lm"),
    ("init_from_missing", S("task.kind=sequence_classification", "task.init_from={missing}"),
     "missing.txt does not exist; give the --workdir of a pretraining run"),
    ("init_from_a_file", S("task.kind=sequence_classification", "task.init_from={csv}"),
     "table.csv is not a directory; give the --workdir of a pretraining run"),
    ("init_from_not_a_run", S("task.kind=sequence_classification", "task.init_from={dir}"),
     "holds no config.json, so it is not a holo_jax run directory"),
]


def _argv(workdir: Path, args: list[str], files: dict[str, Path]) -> list[str]:
    # `--config bogus` replaces tiny: argparse keeps the last --config.
    return ["--workdir", str(workdir), "--config", "tiny", *QUIET, *(a.format(**files) for a in args)]


def _snapshot(workdir: Path) -> dict[str, bytes] | None:
    if not workdir.exists():
        return None
    if workdir.is_file():
        return {"": workdir.read_bytes()}
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def _previous_run(workdir: Path) -> None:
    """Files as a run leaves them, for the cases that point at an existing workdir."""
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text('{"steps": 40}')
    (workdir / "metrics.jsonl").write_text('{"step": 1, "loss": 5.5}\n')
    (workdir / "events.jsonl").write_text('{"event": "run_start"}\n')


def _assert_one_clear_error(returncode, stderr: str, fragment: str) -> None:
    assert returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    assert fragment in errors[0], errors[0]


def test_enough_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("existing", [False, True], ids=["new_workdir", "existing_workdir"])
@pytest.mark.parametrize("args, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_in_process(tmp_path, capsys, args, fragment, existing):
    files = _inputs(tmp_path)
    workdir = tmp_path / "run"
    if existing:
        _previous_run(workdir)
    before = _snapshot(workdir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(pretrain.main)(_argv(workdir, args, files))
    _assert_one_clear_error(info.value.code, capsys.readouterr().err, fragment)
    assert _snapshot(workdir) == before


def test_workdir_that_is_a_file(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.write_text("not a directory")
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(pretrain.main)(_argv(workdir, ["--steps", "1"], {}))
    _assert_one_clear_error(info.value.code, capsys.readouterr().err, "exists and is not a directory")
    assert workdir.read_text() == "not a directory"


@pytest.mark.parametrize("name", ["steps_0", "lr_nan", "paths_unclosed_list", "keep_0", "config_bogus",
                                  "remat_bogus"])
def test_bad_input_end_to_end(tmp_path, name):
    """The real command: the handler in `__main__` (hard exit) prints the sentence, no traceback."""
    (args, fragment), = [c[1:] for c in CASES if c[0] == name]
    files = _inputs(tmp_path)
    workdir = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "experiments.pretrain", *_argv(workdir, args, files)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    _assert_one_clear_error(proc.returncode, proc.stderr, fragment)
    assert not workdir.exists()
