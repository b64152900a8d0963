"""Warm start: a classifier's decoder from a pretraining run (`task.init_from`).

`task.init_from` names the --workdir of an earlier run (config.json and checkpoints/, as
`holo_jax.train.loop.train` writes them). When a run starts fresh, the loop

  1. checks that run before anything else happens (`check_source`): the directory, its record, a
     finished checkpoint, its tokenizer and the shapes of its decoder against this run's; each
     problem is one HoloError sentence naming the setting to change;
  2. restores the subtrees of the parameters the task names (`Task.warm_start_params`: the
     classifier's `decoder`) from that run's latest checkpoint, and nothing else: no optimizer
     state, stage state or data position, which only fit the run that wrote them. They are read
     straight into this run's shardings, so the pretraining run may have used another mesh or
     another number of processes (`restore_pretrained`);
  3. initialises the state with them in place (`init_train_state(..., given_params=)`): every
     other parameter (the classification head) and everything initialised from the parameters
     (the optimizer state, stage states) is what a fresh start with the same seed gives;
  4. records it in events.jsonl as a `warm_start` event (`event_fields`).

A resumed run restores its own checkpoint and never reads `task.init_from` again (see the field's
comment in holo_jax/config.py for why changing it on resume is refused nonetheless).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import optax

from holo_jax.config import ModelConfig, TrainConfig
from holo_jax.data.tokenizer import BUILTIN_TOKENIZERS
from holo_jax.errors import HoloError
from holo_jax.train.checkpoint import finished_steps, restore_params
from holo_jax.train.run_config import CONFIG_FILE, effective_config

PyTree = Any
KEY = "task.init_from"
# The model settings that fix the shapes and the layout of the decoder's parameters. The others
# (dropout, compute_dtype, remat, tie_embeddings: the LM head lies outside the decoder) may differ.
SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len", "scan_layers")


@dataclasses.dataclass(frozen=True)
class WarmStartSource:
    """A checked pretraining run: where it is, the checkpoint step read, what it trained."""

    workdir: Path
    step: int
    task: str  # its task.kind
    config_sha256: str  # of its config.json as read, which names the run (and its history)


def check_source(cfg: TrainConfig) -> WarmStartSource:
    """The run `cfg.task.init_from` names, checked against `cfg`; reads only, raises HoloError."""
    given = cfg.task.init_from
    workdir = Path(given).expanduser().absolute()
    what = f"give the --workdir of a pretraining run (a directory holding {CONFIG_FILE} and checkpoints/)"
    if not workdir.exists():
        raise HoloError(f"{KEY}={given} does not exist; {what}.")
    if not workdir.is_dir():
        raise HoloError(f"{KEY}={given} is not a directory; {what}.")
    path = workdir / CONFIG_FILE
    if not path.is_file():
        # People often point at the checkpoints folder, or one step of it, instead of the run.
        for parent in (workdir.parent, workdir.parent.parent):
            if (parent / CONFIG_FILE).is_file():
                raise HoloError(f"{KEY}={given} holds no {CONFIG_FILE}, but {parent} does; pass the run directory: "
                                f"--set {KEY}={parent}.")
        raise HoloError(f"{KEY}={given} holds no {CONFIG_FILE}, so it is not a holo_jax run directory; {what}.")
    config, digest = _read_record(path)
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    _check_tokenizer(config, cfg.data.tokenizer, given)
    _check_model(config, cfg.model, given, path)
    steps = finished_steps(workdir / "checkpoints")
    if not steps:
        raise HoloError(f"{KEY}={given} has no finished checkpoint in {workdir / 'checkpoints'}; train that run until "
                        f"it saves one (every checkpoint.every_steps steps, and at its end) or point {KEY} at "
                        "another run.")
    return WarmStartSource(workdir, steps[-1], str(task.get("kind", "next_token_lm")), digest)


def restore_pretrained(source: WarmStartSource, names: Sequence[str], abstract_params: Mapping[str, PyTree]
                       ) -> dict[str, PyTree]:
    """`{name: subtree}` for each top-level parameter subtree in `names`, read from the source's
    checkpoint into the shardings `abstract_params` (this run's ShapeDtypeStructs) carry."""
    missing = [n for n in names if n not in abstract_params]
    if missing:
        raise ValueError(f"this run's model has no parameters named {missing}")
    wanted = {n: abstract_params[n] for n in names}
    # The source directory is never written to, and this run's may not exist yet: a damaged
    # checkpoint's reader tracebacks go to a file of their own (named in the error).
    fd, log = tempfile.mkstemp(prefix="holo_jax_init_from_", suffix=".log")
    os.close(fd)
    return restore_params(source.workdir / "checkpoints", source.step, wanted, Path(log))


def event_fields(source: WarmStartSource, given: Mapping[str, PyTree], params: Mapping[str, PyTree]) -> dict:
    """The `warm_start` event: the source, its step and record digest, what was restored (count and
    global L2 norm, computed on the devices, so the same on every process) and what started fresh."""
    return {
        "source": str(source.workdir), "source_step": source.step, "source_task": source.task,
        "source_config_sha256": source.config_sha256,
        "restored": sorted(given), "initialised_fresh": sorted(set(params) - set(given)),
        "restored_params": sum(int(x.size) for x in jax.tree.leaves(given)),
        "restored_param_norm": float(jax.jit(optax.global_norm)(given)),
    }


def _read_record(path: Path) -> tuple[dict, str]:
    try:
        raw = path.read_bytes()
        record = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HoloError(f"{path} ({KEY}) cannot be read ({type(e).__name__}: {e}); point {KEY} at an intact "
                        "pretraining run.") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise HoloError(f"{path} ({KEY}) is not a holo_jax run record (no `config` object); point {KEY} at the "
                        "--workdir of a pretraining run.")
    return effective_config(record), hashlib.sha256(raw).hexdigest()


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _check_tokenizer(config: dict, mine: str, given: str) -> None:
    """Token ids must mean the same text to the pretrained embeddings as to this run's data."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    theirs = str(data.get("tokenizer", "byte"))
    if theirs in BUILTIN_TOKENIZERS or mine in BUILTIN_TOKENIZERS:
        if theirs != mine:
            raise HoloError(f"{KEY}={given} was trained with data.tokenizer={theirs} but this run has data.tokenizer="
                            f"{mine}, so its embeddings would read other tokens; set data.tokenizer={theirs}.")
        return
    # Two SentencePiece models: the same file contents. A relative path is read from the current
    # directory, as the pretraining run read it.
    if os.path.isfile(theirs):
        if _sha256(theirs) != _sha256(mine):
            raise HoloError(f"{KEY}={given} was trained with the SentencePiece model {theirs}, whose contents differ "
                            f"from this run's data.tokenizer={mine}, so its embeddings would read other tokens; set "
                            f"data.tokenizer={theirs}.")
    elif theirs != mine:
        raise HoloError(f"{KEY}={given} was trained with the SentencePiece model {theirs}, which is not found here, so "
                        f"this run's data.tokenizer={mine} cannot be checked against it; put that model back at "
                        f"{theirs} (relative paths are read from the current directory) or give its path.")


def _check_model(config: dict, mine: ModelConfig, given: str, path: Path) -> None:
    model = config.get("model")
    if not isinstance(model, dict):
        raise HoloError(f"{path} ({KEY}) has no `model` section, so its decoder's shapes are unknown; point {KEY} "
                        "at a run written by this version of holo_jax.")
    default = ModelConfig()
    theirs = {f: model.get(f, getattr(default, f)) for f in (*SHAPE_FIELDS, "vocab_multiple")}
    differ = [f for f in SHAPE_FIELDS if theirs[f] != getattr(mine, f)]
    if not differ:
        # Equal vocabularies may still pad the embedding table to other sizes.
        m = theirs["vocab_multiple"]
        if isinstance(m, int) and m >= 1 and -(-mine.vocab_size // m) * m != mine.padded_vocab:
            differ = ["vocab_multiple"]
    if differ:
        def settings(values: Callable) -> str:
            return ", ".join(f"model.{f}={json.dumps(values(f))}" for f in differ)

        raise HoloError(f"{KEY}={given} holds a decoder of other shapes than this run builds ({settings(theirs.get)} "
                        f"there, {settings(lambda f: getattr(mine, f))} here); set "
                        f"{' and '.join(f'model.{f}={json.dumps(theirs[f])}' for f in differ)} to fine-tune it.")
