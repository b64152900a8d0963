"""Every experiment knob, as frozen dataclasses, plus `key=value` command-line overrides.

One `TrainConfig` holds nested sections (model, mesh, data, optim, checkpoint, log). Named
configs live in `experiments/configs/<job>.py`; `--set model.d_model=512` overrides a field.
Values are parsed by the field's declared type, so a typo in a key or a value that does not
parse is one clear error rather than a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Sequence

from holo_jax.errors import HoloError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 258  # byte tokenizer: 256 bytes + end-of-document + padding
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    max_len: int = 256
    tie_embeddings: bool = True
    dropout: float = 0.0
    # Activations and matmuls run in this dtype; parameters and optimizer state stay float32.
    # bfloat16 is what GPUs want; on this CPU float32 is faster.
    compute_dtype: str = "float32"
    # Scanning the layer stack keeps compile time flat in depth.
    scan_layers: bool = True
    # Rematerialisation policy: a name from holo_jax.memory.REMAT_POLICIES ("none" = save every
    # activation), "auto" to let the trainer compile the candidates and take the least-recompute one
    # that fits the per-device budget (see MemoryConfig), or "default": "auto" where that budget is
    # known (memory.budget_bytes set, or devices that report their memory: GPUs, TPUs), else "none".
    # config.json records the value as given; the policy that ran is in metrics.jsonl's first row.
    remat: str = "default"
    # Pad the embedding table to a multiple of this so the logits matmul tiles well
    # (the same trick as nanoGPT's 50257 -> 50304).
    vocab_multiple: int = 128

    @property
    def padded_vocab(self) -> int:
        m = self.vocab_multiple
        return -(-self.vocab_size // m) * m

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def check(self) -> None:
        """One sentence for a model that cannot be built (before any shape arithmetic divides by it)."""
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "vocab_multiple"):
            if getattr(self, name) < 1:
                raise HoloError(f"model.{name} must be at least 1, got {getattr(self, name)}.")
        if self.d_model % self.n_heads:
            raise HoloError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                            "choose a head count that divides the width.")
        if not 0.0 <= self.dropout < 1.0:
            raise HoloError(f"model.dropout must be in [0, 1), got {self.dropout}.")
        # float16 would need loss scaling, which this trainer does not do; bfloat16 has float32's range.
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise HoloError(f"model.compute_dtype must be float32 or bfloat16, got `{self.compute_dtype}`.")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    # Axis sizes; -1 on at most one axis means "whatever is left of the device count".
    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    # "auto": while the sizes above are left at their defaults, the topology planner
    # (holo_jax.topology) chooses sizes and device order; setting any size means you choose.
    # "manual": always use the sizes above, in process-major device order.
    plan: str = "auto"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # embedded | files | c4 | realnews | wikitext103 | bookcorpus
    source: str = "embedded"
    paths: tuple[str, ...] = ()  # for source=files: .txt / .jsonl files or globs
    text_key: str = "text"  # field of .jsonl records holding the text
    tfds_data_dir: str = ""  # "" = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
    tokenizer: str = "byte"  # "byte" or a path to a SentencePiece .model file
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    grad_clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 50
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every_steps: int = 1  # metrics.jsonl cadence; 1 = every step
    eval_every_steps: int = 50
    eval_batches: int = 4
    progress_bar: bool = True
    tensorboard: bool = True
    plot: bool = True


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    """How `model.remat=auto` (and the default, where a budget is known) chooses a policy
    (holo_jax.memory.plan_remat)."""

    # Per-device budget for one train step; 0 = 90% of the memory the device reports. GPUs and
    # TPUs report it, CPUs do not, so a CPU run with remat=auto must set it (with remat=default,
    # setting it is what turns planning on there).
    budget_bytes: int = 0
    # Policies to consider; empty = every registered one (offload ones only where they save memory).
    policies: tuple[str, ...] = ()
    # Microbatch counts tried: `microbatches`, doubled while it divides the batch, up to this.
    max_microbatches: int = 4


@dataclasses.dataclass(frozen=True)
class GradCommConfig:
    """How data-parallel gradients are averaged over the slow mesh axes (holo_jax.parallel.data_parallel)."""

    # fp32: the compiler's exact reduction (nothing added to the step); bf16 | int8 | int4: a
    # two-phase all-reduce of blockwise-encoded gradients (holo_jax.parallel.collectives).
    scheme: str = "fp32"
    block_size: int = 256  # values per block, each with one float32 scale (even: int4 packs pairs)
    rounding: str = "nearest"  # nearest | stochastic (unbiased)
    error_feedback: bool = True  # add what quantization dropped back into the next step
    # Mesh axes the encoded all-reduce runs over. Empty (the default) means "from the mesh": the
    # pure data-parallel axes whose devices sit in different processes (hosts, i.e. the slow
    # fabric), or `data` when the whole mesh is one process. Explicit values (`--set
    # grad_comm.axes=data`) must be pure data-parallel axes. The resolved axes and island are in
    # the run_start event's config (holo_jax.parallel.data_parallel.resolve_grad_comm).
    axes: tuple[str, ...] = ()
    # Hierarchical reduction: devices of the quantized axis averaged in float32 first (one
    # island, e.g. one host's NVLink domain), then encoded across islands. 0 = auto: the devices
    # of one process when the axis crosses processes, else 1; 1 = flat (every device encodes).
    island: int = 0


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What the run trains (holo_jax.train.tasks): the step, the eval step and the loop are built
    from the task this names."""

    # next_token_lm: causal language modelling on packed text (pretraining);
    # sequence_classification: one label per text from the pooled last token (toxicity, with
    # identity annotations for the fairness stages), read from `.jsonl` examples.
    kind: str = "next_token_lm"
    num_classes: int = 2  # sequence_classification only
    # sequence_classification: the identity names whose membership each example may carry
    # (`identities` in the examples); membership is a batch field the stages can read.
    identities: tuple[str, ...] = ()
    label_key: str = "label"  # field of the .jsonl examples holding the class id


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base of every stage's settings section. A stage kind registers its subclass with
    `register_stage_config` (holo_jax.train.stages.register_stage does it), so `--set stages=KIND`
    enables it, `--set stages.NAME.FIELD=V` sets it, and config.json records it. `name` (default:
    the kind) must be unique within a run: it keys the stage's state, randomness, metrics and emits."""

    kind: typing.ClassVar[str] = ""
    name: str = ""

    @property
    def stage_name(self) -> str:
        return self.name or self.kind

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
class TrainConfig:
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
    steps: int = 200
    global_batch: int = 16
    microbatches: int = 1  # gradient accumulation: the global batch is split into this many
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["stages"] = [s.to_dict() for s in self.stages]
        return out


# ----------------------------------------------------------------------------------------
# key=value overrides


def _parse_value(raw: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null"):
            return None
        return _parse_value(raw, args[0], key)
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
        items = json.loads(raw) if raw.startswith("[") else [s for s in raw.split(",") if s]
        (elem, *_) = typing.get_args(tp) or (str,)
        return tuple(_parse_value(str(i), elem, key) for i in items)
    raise HoloError(f"`{key}` has a type ({tp}) that cannot be set from the command line.")


def override(cfg: Any, assignments: Sequence[str]) -> Any:
    """Return `cfg` with each `dotted.key=value` applied, parsed by the field's type."""
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
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, name)
    if isinstance(obj, TrainConfig) and name == "stages":
        return dataclasses.replace(obj, stages=_set_stages(current, path[1:], raw, full_key))
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise HoloError(f"config key `{full_key}` goes below a plain value `{name}`.")
        return dataclasses.replace(obj, **{name: _set_path(current, path[1:], raw, full_key)})
    if dataclasses.is_dataclass(current):
        raise HoloError(f"`{full_key}` is a section; set one of its fields, e.g. {full_key}.<field>=...")
    return dataclasses.replace(obj, **{name: _parse_value(raw, hints[name], full_key)})


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
