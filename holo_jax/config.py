"""Every experiment knob, as frozen dataclasses, plus `key=value` command-line overrides.

One `TrainConfig` holds nested sections (model, mesh, data, optim, checkpoint, log, memory,
grad_comm, task, stages). Named configs live in `experiments/configs/<job>.py`; `--set
model.d_model=512` overrides a field. Values are parsed by the field's declared type, so a typo
in a key or a value that does not parse is one clear error rather than a silently ignored setting.

What a field accepts is declared once, on the field, in its type:

    keep: Annotated[int, AtLeast(1)] = 3
    dropout: Annotated[float, InRange(0.0, 1.0)] = 0.0      # [0, 1)
    scheme: Literal["fp32", "bf16", "int8", "int4"] = "fp32"

Every float must also be finite unless it is declared `AllowNonFinite()`. `override()` checks a
value against its field's declaration as it parses it; `TrainConfig.check()` checks every field
of every section (stage sections included, for configs built in code), then the rules that relate
fields (`Section.check_relations`, e.g. d_model divisible by n_heads), then the paths the run will
open. Each failure is one `HoloError` sentence naming the key.
"""
from __future__ import annotations

import codecs
import dataclasses
import functools
import json
import math
import types
import typing
from typing import Annotated, Any, Callable, ClassVar, Literal, Sequence

from holo_jax.errors import HoloError

# ----------------------------------------------------------------------------------------
# Field constraints: each says what it wants ("at least 1") or None when the value is fine.


@dataclasses.dataclass(frozen=True)
class AtLeast:
    bound: float

    def problem(self, value: Any) -> str | None:
        return None if value >= self.bound else f"at least {_num(self.bound)}"


@dataclasses.dataclass(frozen=True)
class Above:
    bound: float

    def problem(self, value: Any) -> str | None:
        return None if value > self.bound else f"greater than {_num(self.bound)}"


@dataclasses.dataclass(frozen=True)
class InRange:
    """`lo <= value < hi` by default (a probability-like knob such as dropout or Adam's betas)."""

    lo: float
    hi: float
    hi_closed: bool = False

    def problem(self, value: Any) -> str | None:
        inside = self.lo <= value and (value <= self.hi if self.hi_closed else value < self.hi)
        return None if inside else f"in [{_num(self.lo)}, {_num(self.hi)}{']' if self.hi_closed else ')'}"


@dataclasses.dataclass(frozen=True)
class Rule:
    """Any other per-value constraint: a predicate and what it asks for. `wants` may be a callable
    so that the valid names can come from a registry imported only when a value is checked."""

    ok: Callable[[Any], bool]
    wants: str | Callable[[], str]

    def problem(self, value: Any) -> str | None:
        if self.ok(value):
            return None
        return self.wants() if callable(self.wants) else self.wants


@dataclasses.dataclass(frozen=True)
class AllowNonFinite:
    """Marks a float field that may be inf or nan (every other float must be finite)."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    return f"`{value}`" if isinstance(value, str) else str(value)


def _choices(options: Sequence[Any]) -> str:
    names = [str(o) for o in options]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


NON_EMPTY = Rule(bool, "non-empty")


def _remat_names() -> tuple[str, ...]:
    from holo_jax.model.remat import REMAT_POLICIES  # imports jax: only when a value is checked

    return tuple(REMAT_POLICIES)


def _remat_setting_names() -> tuple[str, ...]:
    from holo_jax.model.remat import AUTO, DEFAULT

    return (AUTO, DEFAULT, *_remat_names())


REMAT_SETTING = Rule(lambda v: v in _remat_setting_names(), lambda: f"one of {_choices(_remat_setting_names())}")
REMAT_POLICY = Rule(lambda v: v in _remat_names(), lambda: f"one of {_choices(_remat_names())}")

# ----------------------------------------------------------------------------------------
# Checking a value against its declared type


def _split_annotated(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return base, tuple(extras)
    return tp, ()


def choices(cls: type, field: str) -> tuple[str, ...]:
    """The values a `Literal` field of `cls` accepts, for code that must list or dispatch on them
    (e.g. `choices(DataConfig, "source")`) without repeating them."""
    base, _ = _split_annotated(_hints(cls)[field])
    if typing.get_origin(base) is not Literal:
        raise TypeError(f"{cls.__name__}.{field} is not a Literal field")
    return typing.get_args(base)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def check_value(value: Any, tp: Any, key: str) -> None:
    """Raise HoloError (naming `key`) unless `value` has type `tp` and meets its declared constraints."""
    tp, constraints = _split_annotated(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return
        (tp, *_) = [a for a in typing.get_args(tp) if a is not type(None)]
        return check_value(value, Annotated[(tp, *constraints)] if constraints else tp, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise HoloError(f"{key} must be {_choices(typing.get_args(tp))}, got {_show(value)}.")
    elif origin is tuple:
        if not isinstance(value, tuple):
            raise HoloError(f"{key} must be a tuple, got {value!r}.")
        (elem, *_) = typing.get_args(tp) or (Any,)
        for item in value:
            check_value(item, elem, key)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HoloError(f"{key} must be a number, got {value!r}.")
        if not math.isfinite(value) and not any(isinstance(c, AllowNonFinite) for c in constraints):
            raise HoloError(f"{key} must be a finite number, got {value}.")
    elif isinstance(tp, type) and issubclass(tp, Section):
        if not isinstance(value, tp):
            raise HoloError(f"{key} must be a {tp.__name__} section, got {value!r}.")
        # A stage names itself (`stages.NAME`); a section is named by the field holding it.
        value.check(value.section_key() if isinstance(value, StageConfig) else key)
        return
    elif tp in (int, bool, str):
        # bool is an int in Python; a True where a count belongs is a mistake, not a 1.
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise HoloError(f"{key} must be {'an' if tp is int else 'a'} {tp.__name__}, got {value!r}.")
    for c in constraints:
        if isinstance(c, AllowNonFinite) or (isinstance(value, float) and not math.isfinite(value)):
            continue
        wants = c.problem(value)
        if wants is not None:
            raise HoloError(f"{key} must be {wants}, got {_show(value)}.")


class Section:
    """Base of every config section. `check()` validates each field against its declaration, then
    the rules between fields (`check_relations`); `at` is the section's key prefix in messages."""

    SECTION: ClassVar[str] = ""

    def section_key(self) -> str:
        return self.SECTION

    def check(self, at: str | None = None) -> None:
        at = self.section_key() if at is None else at
        hints = _hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check_value(getattr(self, f.name), hints[f.name], f"{at}.{f.name}" if at else f.name)
        self.check_relations(at)

    def check_relations(self, at: str) -> None:
        """Rules that relate this section's fields; raise HoloError naming the keys."""


# ----------------------------------------------------------------------------------------
# Sections


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    SECTION: ClassVar[str] = "model"

    vocab_size: Annotated[int, AtLeast(1)] = 258  # byte tokenizer: 256 bytes + end-of-document + padding
    d_model: Annotated[int, AtLeast(1)] = 256
    n_layers: Annotated[int, AtLeast(1)] = 4
    n_heads: Annotated[int, AtLeast(1)] = 4
    d_ff: Annotated[int, AtLeast(1)] = 1024
    max_len: Annotated[int, AtLeast(1)] = 256
    tie_embeddings: bool = True
    dropout: Annotated[float, InRange(0.0, 1.0)] = 0.0
    # Activations and matmuls run in this dtype; parameters and optimizer state stay float32.
    # bfloat16 is what GPUs want; on this CPU float32 is faster. float16 is not offered: it would
    # need loss scaling, which this trainer does not do; bfloat16 has float32's range.
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    # Scanning the layer stack keeps compile time flat in depth.
    scan_layers: bool = True
    # Rematerialisation policy: a name from holo_jax.model.remat.REMAT_POLICIES ("none" = save every
    # activation), "auto" to let the trainer compile the candidates and take the least-recompute one
    # that fits the per-device budget (see MemoryConfig), or "default": "auto" where that budget is
    # known (memory.budget_bytes set, or devices that report their memory: GPUs, TPUs), else "none".
    # config.json records the value as given; the policy that ran is in metrics.jsonl's first row.
    remat: Annotated[str, REMAT_SETTING] = "default"
    # Pad the embedding table to a multiple of this so the logits matmul tiles well
    # (the same trick as nanoGPT's 50257 -> 50304).
    vocab_multiple: Annotated[int, AtLeast(1)] = 128

    @property
    def padded_vocab(self) -> int:
        m = self.vocab_multiple
        return -(-self.vocab_size // m) * m

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def check_relations(self, at: str) -> None:
        if self.d_model % self.n_heads:
            raise HoloError(f"{at}.d_model={self.d_model} is not divisible by {at}.n_heads={self.n_heads}; "
                            "choose a head count that divides the width.")


# -1: "whatever is left of the device count" (at most one axis, see MeshConfig.check_relations).
_AXIS_SIZE = Rule(lambda v: v == -1 or v >= 1, "at least 1, or -1 for the rest of the devices")


@dataclasses.dataclass(frozen=True)
class MeshConfig(Section):
    SECTION: ClassVar[str] = "mesh"

    # Axis sizes; -1 on at most one axis means "whatever is left of the device count".
    data: Annotated[int, _AXIS_SIZE] = -1
    fsdp: Annotated[int, _AXIS_SIZE] = 1
    tensor: Annotated[int, _AXIS_SIZE] = 1
    # "auto": while the sizes above are left at their defaults, the topology planner
    # (holo_jax.topology) chooses sizes and device order; setting any size means you choose.
    # "manual": always use the sizes above, in process-major device order.
    plan: Literal["auto", "manual"] = "auto"

    def check_relations(self, at: str) -> None:
        if [self.data, self.fsdp, self.tensor].count(-1) > 1:
            raise HoloError(f"at most one of {at}.data, {at}.fsdp and {at}.tensor may be -1 "
                            "(\"the rest of the devices\"); set the others explicitly.")


# Bytes of each data file read by `check()`: enough to catch a binary or mis-encoded file, cheap
# for any corpus (the whole file is read and checked when the source opens).
_SNIFF_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    SECTION: ClassVar[str] = "data"

    # civil_comments holds labelled examples (TFDS civil_comments/CivilCommentsIdentities), so only
    # task.kind=sequence_classification reads it; files serves both tasks; embedded too (the pydoc
    # corpus for LM, a generated toxicity set for classification); the others are LM text only.
    source: Literal["embedded", "files", "c4", "realnews", "wikitext103", "bookcorpus", "civil_comments",
                    "mixture"] = "embedded"
    paths: tuple[str, ...] = ()  # for source=files: .txt / .jsonl files or globs
    text_key: Annotated[str, NON_EMPTY] = "text"  # field of .jsonl records holding the text
    tfds_data_dir: str = ""  # "" = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
    # "byte", a shipped SentencePiece model by name (embedded_toxicity_bpe), or a path to a .model file
    tokenizer: Annotated[str, NON_EMPTY] = "byte"
    seed: Annotated[int, AtLeast(0)] = 0  # numpy's generators take no negative seed
    # source=embedded with task.kind=sequence_classification: the strength of the identity/toxicity
    # correlation planted in the train split (holo_jax/data/embedded_toxicity.py): 0 none, 1 the
    # documented rates (0.8 / 0.5 / 0.2 toxic by identity against a 0.2 background).
    embedded_bias: Annotated[float, InRange(0.0, 1.0, hi_closed=True)] = 1.0
    # source=mixture (holo_jax/data/mixture.py): two component sources, each an LM source name or a
    # .txt/.jsonl file or glob; virtual documents [0, mixture_switch_document) come from the first,
    # later ones from the second (row r of a global batch B switches after ~switch/B documents);
    # `ramp`: the second's share rises linearly over the next mixture_ramp_documents documents.
    mixture: tuple[str, ...] = ()
    mixture_schedule: Literal["switch", "ramp"] = "switch"
    mixture_switch_document: Annotated[int, AtLeast(0)] = 0
    mixture_ramp_documents: Annotated[int, AtLeast(0)] = 0

    def check_relations(self, at: str) -> None:
        # Imported here: the data package imports numpy and its sources import this module.
        from holo_jax.data.local_files import expand_paths
        from holo_jax.data.tokenizer import make_tokenizer

        if self.source == "mixture":
            from holo_jax.data.mixture import check_mixture

            check_mixture(self, at)
        elif self.mixture:
            raise HoloError(f"{at}.mixture is set but {at}.source is `{self.source}`; set {at}.source=mixture "
                            f"or leave {at}.mixture empty.")

        if self.source == "files":
            if not self.paths:
                raise HoloError(f"{at}.source=files needs {at}.paths, e.g. --set {at}.paths=corpus/*.txt,extra.jsonl.")
            for path in expand_paths(self.paths):  # exists, glob matches, not a directory, .txt/.jsonl
                _check_text_file(path)
        if self.embedded_bias != 1.0 and self.source != "embedded":
            raise HoloError(f"{at}.embedded_bias is set but {at}.source is `{self.source}`; it shapes only the "
                            f"embedded toxicity set: set {at}.source=embedded or leave {at}.embedded_bias at 1.")
        if self.source != "files" and self.paths:
            # Otherwise a forgotten `source=files` trains on the default corpus and looks fine.
            raise HoloError(f"{at}.paths is set but {at}.source is `{self.source}`, which does not read it; "
                            f"set {at}.source=files or leave {at}.paths empty.")
        make_tokenizer(self.tokenizer)  # a built-in name, or a SentencePiece model that exists and loads


def _check_text_file(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise HoloError(f"cannot read data file `{path}` ({e.strerror}); "
                        "check data.paths and the file's permissions.") from None
    try:
        # final=False: the sniffed prefix may end inside a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as e:
        raise HoloError(f"data file `{path}` is not UTF-8 text (bad byte at offset {e.start}); "
                        "give .txt/.jsonl files in UTF-8 in data.paths.") from None


_PROBABILITY = InRange(0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class OptimConfig(Section):
    SECTION: ClassVar[str] = "optim"

    learning_rate: Annotated[float, Above(0.0)] = 3e-3
    # cosine decays to learning_rate * min_lr_ratio
    min_lr_ratio: Annotated[float, InRange(0.0, 1.0, hi_closed=True)] = 0.1
    # Longer than the run is allowed: the schedule clamps it (train/optimizer.py).
    warmup_steps: Annotated[int, AtLeast(0)] = 20
    weight_decay: Annotated[float, AtLeast(0.0)] = 0.1
    b1: Annotated[float, _PROBABILITY] = 0.9
    b2: Annotated[float, _PROBABILITY] = 0.95
    eps: Annotated[float, Above(0.0)] = 1e-8
    # 0 would scale every update to zero (optax.clip_by_global_norm), not turn clipping off.
    grad_clip_norm: Annotated[float, Above(0.0)] = 1.0
    # This many non-finite steps in a row (gradients or updates) stop the run with an error and a
    # checkpoint of the last good state; isolated ones are skipped and counted.
    max_consecutive_skips: Annotated[int, AtLeast(1)] = 5


@dataclasses.dataclass(frozen=True)
class CheckpointConfig(Section):
    SECTION: ClassVar[str] = "checkpoint"

    every_steps: Annotated[int, AtLeast(1)] = 50
    # orbax's max_to_keep=0 deletes every checkpoint after it is saved.
    keep: Annotated[int, AtLeast(1)] = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LogConfig(Section):
    SECTION: ClassVar[str] = "log"

    every_steps: Annotated[int, AtLeast(1)] = 1  # metrics.jsonl cadence; 1 = every step
    eval_every_steps: Annotated[int, AtLeast(0)] = 50  # 0 = never evaluate
    eval_batches: Annotated[int, AtLeast(1)] = 4
    progress_bar: bool = True
    tensorboard: bool = True
    plot: bool = True


@dataclasses.dataclass(frozen=True)
class MemoryConfig(Section):
    """How `model.remat=auto` (and the default, where a budget is known) chooses a policy
    (holo_jax.memory.plan_remat)."""

    SECTION: ClassVar[str] = "memory"

    # Per-device budget for one train step; 0 = 90% of the memory the device reports. GPUs and
    # TPUs report it, CPUs do not, so a CPU run with remat=auto must set it (with remat=default,
    # setting it is what turns planning on there).
    budget_bytes: Annotated[int, AtLeast(0)] = 0
    # Policies to consider; empty = every registered one (offload ones only where they save memory).
    policies: tuple[Annotated[str, REMAT_POLICY], ...] = ()
    # Microbatch counts tried: `microbatches`, doubled while it divides the batch, up to this.
    max_microbatches: Annotated[int, AtLeast(1)] = 4


@dataclasses.dataclass(frozen=True)
class GradCommConfig(Section):
    """How data-parallel gradients are averaged over the slow mesh axes (holo_jax.parallel.grad_comm)."""

    SECTION: ClassVar[str] = "grad_comm"

    # fp32: the compiler's exact reduction (nothing added to the step); bf16 | int8 | int4: a
    # two-phase all-reduce of blockwise-encoded gradients (holo_jax.parallel.collectives).
    scheme: Literal["fp32", "bf16", "int8", "int4"] = "fp32"
    # Values per block, each with one float32 scale; even, because int4 packs pairs into a byte.
    block_size: Annotated[int, AtLeast(2), Rule(lambda v: v % 2 == 0, "even (int4 packs pairs of values)")] = 256
    rounding: Literal["nearest", "stochastic"] = "nearest"  # stochastic is unbiased
    error_feedback: bool = True  # add what quantization dropped back into the next step
    # Mesh axes the encoded all-reduce runs over. Empty (the default) means "from the mesh": the
    # pure data-parallel axes whose devices sit in different processes (hosts, i.e. the slow
    # fabric), or `data` when the whole mesh is one process. Explicit values (`--set
    # grad_comm.axes=data`) must be pure data-parallel axes. The resolved axes and island are in
    # the run_start event's config (holo_jax.parallel.grad_comm_plan.resolve_grad_comm).
    axes: tuple[str, ...] = ()
    # Hierarchical reduction: devices of the quantized axis averaged in float32 first (one
    # island, e.g. one host's NVLink domain), then encoded across islands. 0 = auto: the devices
    # of one process when the axis crosses processes, else 1; 1 = flat (every device encodes).
    island: Annotated[int, AtLeast(0)] = 0


@dataclasses.dataclass(frozen=True)
class TaskConfig(Section):
    """What the run trains (holo_jax.train.tasks): the step, the eval step and the loop are built
    from the task this names."""

    SECTION: ClassVar[str] = "task"

    # next_token_lm: causal language modelling on packed text (pretraining);
    # sequence_classification: one label per text from the pooled last token (toxicity, with
    # identity annotations for the fairness stages), read from `.jsonl` examples.
    kind: Literal["next_token_lm", "sequence_classification"] = "next_token_lm"
    num_classes: Annotated[int, AtLeast(2)] = 2  # sequence_classification only
    # sequence_classification: the identity names whose membership each example may carry
    # (`identities` in the examples); membership is a batch field the stages can read.
    identities: tuple[Annotated[str, NON_EMPTY], ...] = ()
    label_key: Annotated[str, NON_EMPTY] = "label"  # field of the .jsonl examples holding the class id
    # sequence_classification: what the head reads. "last": the hidden state at the last real token
    # (the only position a causal decoder has seen the whole text from; what a fine-tuned LM's
    # next-token state holds). "mean": the mean over the real tokens (every position's state gets
    # gradient; trained from scratch on short texts it learns far faster: BENCHMARKS.md, issue 12).
    pooling: Literal["last", "mean"] = "last"
    # sequence_classification only: the --workdir of a pretraining run (config.json + checkpoints/).
    # A run that starts fresh takes its decoder's parameters from that run's latest checkpoint
    # (parameters only, resharded onto this run's mesh) and initialises the head as from scratch
    # (holo_jax.train.warm_start). The directory is read, and checked against this run's model and
    # tokenizer, only then: a resumed run restores its own checkpoint and never reads it again, so
    # it resumes even after the pretraining directory was moved or deleted.
    # Not in MUTABLE_ON_RESUME (holo_jax.train.run_config), although it means nothing once the run
    # has a checkpoint: the same command resumes whether or not the directory still exists, and the
    # one case where a new value would be read, a restart of a run that crashed before its first
    # checkpoint, would start from other weights than config.json records; that is a new run, in a
    # new --workdir.
    init_from: str = ""

    def check_relations(self, at: str) -> None:
        repeated = sorted({i for i in self.identities if self.identities.count(i) > 1})
        if repeated:
            raise HoloError(f"{at}.identities names {', '.join(repeated)} more than once; list each identity once.")
        if self.init_from and self.kind != "sequence_classification":
            raise HoloError(f"{at}.init_from is set but {at}.kind is {self.kind}; a warm start initialises the "
                            f"decoder of a sequence_classification run from a pretraining run: set "
                            f"{at}.kind=sequence_classification or leave {at}.init_from empty.")


# A stage's name keys `--set stages.NAME.FIELD=V` and `stages=KIND:NAME`, so it cannot hold their separators.
_STAGE_NAME = Rule(lambda v: not set(v) & set(".,:="), "a name without `.`, `,`, `:` or `=`")


@dataclasses.dataclass(frozen=True)
class StageConfig(Section):
    """Base of every stage's settings section. A stage kind registers its subclass with
    `register_stage_config` (holo_jax.train.stages.register_stage does it), so `--set stages=KIND`
    enables it, `--set stages.NAME.FIELD=V` sets it, and config.json records it. `name` (default:
    the kind) must be unique within a run: it keys the stage's state, randomness, metrics and emits.
    Its fields declare their constraints as every section's do; `TrainConfig.check()` checks them."""

    kind: typing.ClassVar[str] = ""
    name: Annotated[str, _STAGE_NAME] = ""

    @property
    def stage_name(self) -> str:
        return self.name or self.kind

    def section_key(self) -> str:
        return f"stages.{self.stage_name}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self), "name": self.stage_name}


# kind -> its settings class; filled by register_stage_config.
STAGE_CONFIGS: dict[str, type[StageConfig]] = {}


def register_stage_config(cls: type[StageConfig]) -> type[StageConfig]:
    if not cls.kind:
        raise ValueError(f"{cls.__name__} must set the class attribute `kind`")
    if STAGE_CONFIGS.get(cls.kind, cls) is not cls:
        raise ValueError(f"stage kind `{cls.kind}` is registered twice")
    STAGE_CONFIGS[cls.kind] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    """The whole run. `check()` is the one check before any device work: every section's fields
    and relations (stage sections included), then the rules across sections."""

    model: ModelConfig = ModelConfig()
    mesh: MeshConfig = MeshConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    memory: MemoryConfig = MemoryConfig()
    grad_comm: GradCommConfig = GradCommConfig()
    task: TaskConfig = TaskConfig()
    # Stages around the step, in order (holo_jax.train.stages); each is its own settings section.
    stages: tuple[StageConfig, ...] = ()
    steps: Annotated[int, AtLeast(1)] = 200
    global_batch: Annotated[int, AtLeast(1)] = 16
    microbatches: Annotated[int, AtLeast(1)] = 1  # gradient accumulation: the global batch is split into this many
    seed: Annotated[int, AtLeast(0)] = 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    def check_relations(self, at: str) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            if not isinstance(stage, StageConfig) or STAGE_CONFIGS.get(stage.kind) is not type(stage):
                known = ", ".join(sorted(STAGE_CONFIGS)) or "none are registered"
                raise HoloError(f"stages holds {stage!r}, which is not a registered stage section; "
                                f"known kinds: {known}.")
            if stage.stage_name in seen:
                raise HoloError(f"two stages are named `{stage.stage_name}`; give each its own name "
                                f"(--set stages={stage.kind}:OTHER_NAME).")
            seen.add(stage.stage_name)
        # Which task reads which sources (the sources themselves say so again when opened).
        if self.task.kind == "next_token_lm" and self.data.source == "civil_comments":
            raise HoloError("data.source=civil_comments holds labelled comments for task.kind=sequence_classification, "
                            "not documents for language modelling; set task.kind=sequence_classification or pick "
                            "another data.source.")
        # embedded means the pydoc corpus for the LM task and the generated toxicity set for classification.
        if self.task.kind == "sequence_classification" and self.data.source not in ("files", "civil_comments",
                                                                                   "embedded"):
            raise HoloError(f"task.kind=sequence_classification reads labelled .jsonl examples (data.source=files), "
                            f"civil_comments or embedded (a generated toxicity set), not data.source="
                            f"{self.data.source}; set data.source to one of those.")
        if self.global_batch % self.microbatches:
            raise HoloError(f"global_batch={self.global_batch} is not divisible by microbatches={self.microbatches}; "
                            f"choose a divisor of {self.global_batch}.")
        if self.data.tokenizer != "byte":
            from holo_jax.data.tokenizer import make_tokenizer

            vocab = make_tokenizer(self.data.tokenizer).vocab_size
            if vocab > self.model.vocab_size:
                raise HoloError(f"the tokenizer has {vocab} ids but model.vocab_size={self.model.vocab_size}; "
                                f"set model.vocab_size={vocab}.")


# ----------------------------------------------------------------------------------------
# key=value overrides


def _parse_value(raw: str, tp: Any, key: str) -> Any:
    tp, _ = _split_annotated(tp)  # constraints are checked on the parsed value (`override`)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        return _parse_value(raw, args[0], key)
    if origin is Literal:
        return raw  # its choices are checked with the other constraints
    if tp is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise HoloError(f"`{key}={raw}` is not a boolean; use true or false.")
    if tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            raise HoloError(f"`{key}={raw}` is not a valid {tp.__name__}; give a number.") from None
    if tp is str:
        return raw
    if origin is tuple:
        if raw.startswith("["):
            try:
                items = json.loads(raw)
            except json.JSONDecodeError as e:
                raise HoloError(f"`{key}={raw}` is not a JSON list ({e.msg}); write {key}='[\"a\", \"b\"]' "
                                f"or {key}=a,b.") from None
            if not isinstance(items, list) or any(isinstance(i, (list, dict)) for i in items):
                raise HoloError(f"`{key}={raw}` must be a flat JSON list; write {key}='[\"a\", \"b\"]' or {key}=a,b.")
        else:
            items = [s for s in raw.split(",") if s]
        (elem, *_) = typing.get_args(tp) or (str,)
        return tuple(_parse_value(str(i), elem, key) for i in items)
    raise HoloError(f"`{key}` has a type ({tp}) that cannot be set from the command line.")


def override(cfg: Any, assignments: Sequence[str]) -> Any:
    """Return `cfg` with each `dotted.key=value` applied, parsed by the field's type and checked
    against the field's declared constraints (relations between fields: `TrainConfig.check()`)."""
    for assignment in assignments:
        if "=" not in assignment:
            raise HoloError(f"`--set {assignment}` needs the form key=value, e.g. --set model.d_model=512.")
        key, raw = assignment.split("=", 1)
        cfg = _set_path(cfg, key.strip().split("."), raw.strip(), key.strip())
    return cfg


def _set_path(obj: Any, path: list[str], raw: str, full_key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields:
        raise HoloError(
            f"unknown config key `{full_key}`; valid keys here are: {', '.join(sorted(fields))}."
        )
    current = getattr(obj, name)
    if isinstance(obj, TrainConfig) and name == "stages":
        return dataclasses.replace(obj, stages=_set_stages(current, path[1:], raw, full_key))
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise HoloError(f"config key `{full_key}` goes below a plain value `{name}`.")
        return dataclasses.replace(obj, **{name: _set_path(current, path[1:], raw, full_key)})
    if dataclasses.is_dataclass(current):
        raise HoloError(f"`{full_key}` is a section; set one of its fields, e.g. {full_key}.<field>=...")
    tp = _hints(type(obj))[name]
    value = _parse_value(raw, tp, full_key)
    check_value(value, tp, full_key)
    return dataclasses.replace(obj, **{name: value})


def _set_stages(stages: tuple[StageConfig, ...], path: list[str], raw: str, full_key: str
                ) -> tuple[StageConfig, ...]:
    """`stages=KIND[:NAME],...` enables stages in order with default settings (a stage already
    configured under that name keeps its settings); `stages.NAME.FIELD=V` sets one field."""
    if not path:
        by_name = {s.stage_name: s for s in stages}
        chosen = []
        for item in (i.strip() for i in raw.split(",") if i.strip()):
            kind, _, name = item.partition(":")
            if kind not in STAGE_CONFIGS:
                known = ", ".join(sorted(STAGE_CONFIGS)) or "none are registered"
                raise HoloError(f"unknown stage kind `{kind}` in `{full_key}={raw}`; known kinds: {known}.")
            existing = by_name.get(name or kind)
            chosen.append(existing if existing is not None and existing.kind == kind
                          else STAGE_CONFIGS[kind](name=name))
        return tuple(chosen)
    name, rest = path[0], path[1:]
    for i, stage in enumerate(stages):
        if stage.stage_name == name:
            if not rest:
                raise HoloError(f"`{full_key}` is a stage section; set one of its fields, e.g. {full_key}.<field>=...")
            return stages[:i] + (_set_path(stage, rest, raw, full_key),) + stages[i + 1:]
    enabled = ", ".join(s.stage_name for s in stages) or "none"
    raise HoloError(f"`{full_key}` names stage `{name}`, which is not enabled (enabled: {enabled}); "
                    f"enable it first with --set stages=<kind>[:{name}].")
