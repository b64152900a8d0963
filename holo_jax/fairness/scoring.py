"""Score labelled examples with a trained sequence classifier, for the bias report of
`python -m experiments.fairness_eval`.

`load_classifier(workdir)` rebuilds a `task.kind=sequence_classification` run from its
`config.json` (the effective config: the original with every recorded resume change) and restores
the parameters of its latest checkpoint, and nothing else, onto one device. `read_examples(path)`
reads every example of a `.jsonl` file in file order, and `Classifier.score(texts)` gives each
text's probability of label 1, exactly once and in order, through one jitted forward of a fixed
batch shape.

Why a reader of its own rather than `LocalExamplesSource`: that source keeps one split (the hash
hold-out) of a training file, while an evaluation scores every line of the file it is given, in
order, so that `--scores-out` lines up with the input.

Why only the parameters: the optimizer state, stage states and gradient-aggregation residuals
are not needed to score, and the residuals are laid out per data-parallel replica of the training
mesh, which one evaluation device does not have. The full abstract train state is still built
(with the run's optimizer and stages), so a checkpoint is only read into the layout the run's own
code gives it, and a stage kind this process does not know fails in one sentence first.

This module is in `fairness/`, not `train/`: `train/` must not import the fairness package
(docs/DESIGN.md section 3), and this one imports `train/`, not the other way round.
"""
from __future__ import annotations

import codecs
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from holo_jax.config import STAGE_CONFIGS, MeshConfig, ModelConfig, OptimConfig, StageConfig, TaskConfig
from holo_jax.errors import HoloError
from holo_jax.fairness.identities import AXIS_OF, IDENTITIES, axes_of

PyTree = Any
DEFAULT_BATCH_SIZE = 32


class LabelledText(NamedTuple):
    text: str
    label: int  # 0 or 1
    identities: tuple[str, ...]
    line: int  # 1-based line number in the file, for messages


@dataclasses.dataclass
class Classifier:
    """A restored binary sequence classifier; `score` runs it."""

    workdir: Path
    step: int
    model_cfg: ModelConfig
    task_cfg: TaskConfig
    task: Any  # holo_jax.train.tasks.SequenceClassification
    model: Any  # flax module
    params: PyTree
    tokenizer: Any
    batch_size: int = DEFAULT_BATCH_SIZE
    _forward: Any = None

    @property
    def max_len(self) -> int:
        return self.model_cfg.max_len

    def encode(self, text: str) -> np.ndarray:
        """Token ids as the trainer's `ClassificationBatches` makes them: the head of the text cut to
        max_len, and an empty text as one end-of-document token (the classifier pools the last real
        token, so every row needs one)."""
        ids = np.asarray(self.tokenizer.encode(text), dtype=np.int32)[: self.max_len]
        if not len(ids):
            ids = np.asarray([self.tokenizer.eos_id], dtype=np.int32)
        return ids

    def probabilities(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """P(label 1) for one batch of exactly `batch_size` rows, [batch_size, max_len] tokens."""
        if self._forward is None:
            task, model = self.task, self.model

            def forward(params, tokens_bt, lengths_b):
                out = task.apply(model, params, {"tokens": tokens_bt, "lengths": lengths_b}, deterministic=True)
                return jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)[:, 1]

            # One fixed shape (the last batch is padded), so this compiles once per process.
            self._forward = jax.jit(forward)
        return np.asarray(self._forward(self.params, tokens, lengths))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts)]: each text's probability of label 1, in order."""
        pad_id = int(getattr(self.tokenizer, "pad_id", self.tokenizer.eos_id))
        b, t = self.batch_size, self.max_len
        out = np.empty(len(texts), dtype=np.float32)
        for start in range(0, len(texts), b):
            chunk = texts[start:start + b]
            # Rows past the chunk are padding (one token each, so lengths >= 1 holds); dropped below.
            tokens = np.full((b, t), pad_id, dtype=np.int32)
            lengths = np.ones(b, dtype=np.int32)
            for i, text in enumerate(chunk):
                ids = self.encode(text)
                tokens[i, : len(ids)] = ids
                lengths[i] = len(ids)
            out[start:start + len(chunk)] = self.probabilities(tokens, lengths)[: len(chunk)]
        return out


# --- the run ---------------------------------------------------------------------------------

def _tuples(x: Any) -> Any:
    """JSON lists back into the tuples the frozen config sections hold."""
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    return x


def _section(cls: type, values: Any, key: str, path: Path):
    if not isinstance(values, dict):
        raise HoloError(f"{path} has no `{key}` section; it was not written by this version of holo_jax's "
                        "trainer, so its checkpoints cannot be read back here.")
    try:
        return cls(**_tuples(values))
    except TypeError as e:  # a field this code does not have (or lacks): another version wrote it
        raise HoloError(f"the `{key}` section of {path} does not match this code ({e}); evaluate the run with the "
                        "holo_jax version that trained it.") from None


def _stage_sections(entries: Any, path: Path) -> tuple[StageConfig, ...]:
    stages = []
    for entry in entries or ():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in STAGE_CONFIGS:
            known = ", ".join(sorted(STAGE_CONFIGS)) or "none are registered"
            raise HoloError(f"the run in {path.parent} used stage kind `{kind}`, which no module imported in this "
                            f"process registers (known: {known}); pass --plugin MODULE with the module that "
                            "registered it for training.")
        fields = {k: v for k, v in entry.items() if k != "kind"}
        stages.append(_section(STAGE_CONFIGS[kind], fields, f"stages.{fields.get('name', kind)}", path))
    return tuple(stages)


def _run_record(workdir: Path) -> tuple[Path, dict]:
    from holo_jax.train.run_config import CONFIG_FILE, _load, effective_config

    if not workdir.exists():
        raise HoloError(f"--checkpoint {workdir} does not exist; give the --workdir of a classification run.")
    if not workdir.is_dir():
        raise HoloError(f"--checkpoint {workdir} is not a directory; give the --workdir of a classification run.")
    path = workdir / CONFIG_FILE
    if not path.exists():
        # People often point at the checkpoints folder, or one step of it, instead of the run.
        for parent in (workdir.parent, workdir.parent.parent):
            if (parent / CONFIG_FILE).exists():
                raise HoloError(f"--checkpoint {workdir} holds no {CONFIG_FILE}, but {parent} does; pass the run "
                                f"directory: --checkpoint {parent}.")
        raise HoloError(f"--checkpoint {workdir} holds no {CONFIG_FILE}, so it is not a holo_jax run directory; "
                        "give the --workdir a classification run trained in.")
    return path, effective_config(_load(path))


def load_classifier(workdir: str | Path, *, batch_size: int = DEFAULT_BATCH_SIZE) -> Classifier:
    """The classification run in `workdir` with the parameters of its latest checkpoint, on one device.

    Raises HoloError (one sentence) for a directory that is not a run, a run of another task or
    with more than two classes, a stage kind this process does not register, or a run with no
    readable checkpoint."""
    import orbax.checkpoint as ocp

    from holo_jax.data import make_tokenizer
    from holo_jax.parallel.mesh import build_mesh
    from holo_jax.train.checkpoint import _stderr_to
    from holo_jax.train.optimizer import make_optimizer
    from holo_jax.train.stages import build_stages
    from holo_jax.train.state import abstract_train_state
    from holo_jax.train.tasks import make_task

    if batch_size < 1:
        raise HoloError(f"the batch size must be at least 1, got {batch_size}.")
    workdir = Path(workdir).absolute()
    path, config = _run_record(workdir)
    task_cfg = _section(TaskConfig, config.get("task"), "task", path)
    if task_cfg.kind != "sequence_classification":
        raise HoloError(f"{workdir} is a task.kind={task_cfg.kind} run; fairness_eval scores a "
                        "task.kind=sequence_classification run: give the --workdir of one.")
    if task_cfg.num_classes != 2:
        raise HoloError(f"{workdir} trained a {task_cfg.num_classes}-class classifier; the bias metrics need a "
                        "binary one (task.num_classes=2, label 1 = toxic).")
    # Remat only changes what the backward pass recomputes; a forward pass has none, and the
    # parameters are the same under every policy (the loop restores any run into either).
    model_cfg = dataclasses.replace(_section(ModelConfig, config.get("model"), "model", path), remat="none")
    optim_cfg = _section(OptimConfig, config.get("optim"), "optim", path)
    stages = build_stages(_stage_sections(config.get("stages"), path), make_task(task_cfg))
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    tokenizer = make_tokenizer(str(data.get("tokenizer", "byte")))
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise HoloError(f"the run's tokenizer `{data.get('tokenizer')}` has {tokenizer.vocab_size} ids but the "
                        f"model only {model_cfg.vocab_size}; the tokenizer file changed since training.")

    task = make_task(task_cfg)
    model = task.build_model(model_cfg)
    # One device: scoring is a forward pass of a small batch, and any checkpoint is resharded on restore.
    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, plan="manual"), model_cfg, jax.devices()[:1])
    target, _ = abstract_train_state(model, task.init_inputs(model_cfg.max_len),
                                     make_optimizer(optim_cfg, int(config.get("steps", 1))), stages, mesh,
                                     int(config.get("seed", 0)))

    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise HoloError(f"{workdir} has no checkpoints yet; train it (python -m experiments.pretrain --workdir "
                        f"{workdir} ...) until it saves one.")
    # read_only: an evaluation must never create, save into or prune a run's checkpoints. Orbax logs
    # a warning for every read-only manager, which is the point here, not news: silenced for the call.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0),
            item_names=("state", "data"))
    finally:
        absl_logger.setLevel(level)
    failed = False
    try:
        step = manager.latest_step()
        if step is None:
            raise HoloError(f"{workdir} has no finished checkpoint yet; train it until it saves one.")
        wanted = {"params": target.params}
        log = workdir / "restore_errors.log"
        try:
            # As in train/checkpoint.py: tensorstore's reader threads print tracebacks for a damaged
            # checkpoint; they go to the log, the one sentence to the terminal.
            with _stderr_to(log) as redirect:
                restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                    item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
                    partial_restore=True)))
        except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
            reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            error = HoloError(f"the checkpoint for step {step} in {directory} cannot be restored ({reason}); "
                              f"if it is damaged, move that step's directory aside to evaluate the previous one "
                              f"(details: {log}).")
            error.print_to = redirect.original
            failed = True
            raise error from e
        if log.exists() and log.stat().st_size == 0:
            log.unlink()
    finally:
        # After a failed read, reads still in flight call back into the manager's event loop
        # (as train/checkpoint.py explains): closing it then would only add tracebacks.
        if not failed:
            manager.close()
    return Classifier(workdir=workdir, step=int(step), model_cfg=model_cfg, task_cfg=task_cfg, task=task,
                      model=model, params=restored["state"]["params"], tokenizer=tokenizer, batch_size=batch_size)


# --- the data --------------------------------------------------------------------------------

def read_examples(path: str | Path) -> list[LabelledText]:
    """Every example of a `.jsonl` file, in file order: `{"text": str, "label": 0 or 1,
    "identities": [Civil Comments names]}` per non-blank line (`identities` optional). Blank lines
    hold no example and are skipped, as the trainer's reader skips them. Raises HoloError naming
    the file and line of the first bad one."""
    path = Path(path)
    if not path.exists():
        raise HoloError(f"--data {path} does not exist; give a .jsonl file of "
                        '{"text", "label", "identities"} lines.')
    if not path.is_file():
        raise HoloError(f"--data {path} is not a file; give a .jsonl file of {{\"text\", \"label\", \"identities\"}} lines.")
    examples: list[LabelledText] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):  # Windows editors' UTF-8 files
                raw = raw[len(codecs.BOM_UTF8):]
            if raw.strip():
                examples.append(_parse(raw, f"{path}:{number}", number))
    if not examples:
        raise HoloError(f"--data {path} holds no examples; give a .jsonl file with one example per line.")
    return examples


def _parse(raw: bytes, where: str, number: int) -> LabelledText:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise HoloError(f"{where} is not valid UTF-8 (byte {e.start + 1} of the line); re-encode the file as "
                        "UTF-8.") from None
    except ValueError as e:
        raise HoloError(f"{where} is not valid JSON ({e}); each line must be one JSON object.") from None
    if not isinstance(record, dict):
        raise HoloError(f"{where} is a JSON {type(record).__name__}, not an object; write one object per line.")
    for key in ("text", "label"):
        if key not in record:
            raise HoloError(f"{where} has no `{key}` field (found: {', '.join(record) or 'no fields'}); every line "
                            'needs "text" and "label".')
    text, label, names = record["text"], record["label"], record.get("identities", [])
    if not isinstance(text, str):
        raise HoloError(f"{where}: `text` is a {type(text).__name__}, not a string.")
    # bool is an int subclass; `true` as a label is almost surely a mislabelled column.
    if not isinstance(label, int) or isinstance(label, bool) or label not in (0, 1):
        raise HoloError(f"{where}: `label` is {json.dumps(label)[:80]}, not 0 or 1; binarize fractional "
                        "toxicity (label >= 0.5 is toxic) first.")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise HoloError(f"{where}: `identities` is {json.dumps(names)[:80]}, not a list of identity names such as "
                        '["female", "muslim"].')
    for name in names:
        if name not in AXIS_OF:
            try:
                axes_of((name,))  # its sentence suggests the closest identity
            except HoloError as e:
                raise HoloError(f"{where}: {e}") from None
    return LabelledText(text, label, tuple(dict.fromkeys(names)), number)


def identities_to_report(examples: Sequence[LabelledText], tracked: Sequence[str]) -> tuple[str, ...]:
    """The identities mentioned in `examples` plus those the run tracks (`task.identities`), in the
    Civil Comments column order. A tracked name outside that vocabulary cannot be placed on an axis,
    so it raises in one sentence."""
    for name in tracked:
        if name not in AXIS_OF:
            try:
                axes_of((name,))
            except HoloError as e:
                raise HoloError(f"the run's task.identities cannot be reported: {e}") from None
    named = {n for ex in examples for n in ex.identities} | set(tracked)
    return tuple(n for n in IDENTITIES if n in named)


def membership(examples: Sequence[LabelledText], identities: Sequence[str]) -> np.ndarray:
    """int8 [n, k]: 1 where example i names identities[j]."""
    column = {name: j for j, name in enumerate(identities)}
    out = np.zeros((len(examples), len(identities)), dtype=np.int8)
    for i, ex in enumerate(examples):
        for name in ex.identities:
            if name in column:
                out[i, column[name]] = 1
    return out
