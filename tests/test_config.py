"""holo_jax.config: every declared constraint rejects what it should and accepts its edge values,
both when `override()` parses a value and when `check()` walks a config built in code."""
from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Literal

import pytest

from holo_jax.config import (
    STAGE_CONFIGS, AllowNonFinite, AtLeast, DataConfig, GradCommConfig, MeshConfig, ModelConfig, OptimConfig,
    Section, StageConfig, TrainConfig, check_value, choices, override,
)
from holo_jax.errors import HoloError
from holo_jax.model.remat import AUTO, DEFAULT, REMAT_POLICIES
from experiments.configs import pretrain as named_configs


def rejects(cfg_or_assignments, *fragments, parse_only=False):
    """The HoloError message of `cfg.check()`, or of `override(TrainConfig(), assignments)` followed
    by `check()` as the CLI does (`parse_only`: of the override alone)."""
    with pytest.raises(HoloError) as info:
        if isinstance(cfg_or_assignments, list):
            cfg = override(TrainConfig(), cfg_or_assignments)
            if parse_only:
                pytest.fail(f"override() accepted {cfg_or_assignments}")
            cfg.check()
        else:
            cfg_or_assignments.check()
    message = str(info.value)
    assert "\n" not in message and message.endswith("."), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def accepts(*assignments):
    cfg = override(TrainConfig(), list(assignments))
    cfg.check()
    return cfg


@pytest.mark.parametrize("name", sorted(named_configs.CONFIGS))
def test_named_configs_pass(name):
    named_configs.get(name).check()


# --- one kind of constraint at a time: the boundary passes, one step past it fails --------------

@pytest.mark.parametrize("bad, good, fragment", [
    ("checkpoint.keep=0", "checkpoint.keep=1", "checkpoint.keep must be at least 1, got 0."),          # AtLeast
    ("log.eval_every_steps=-1", "log.eval_every_steps=0", "log.eval_every_steps must be at least 0"),  # 0 = never
    ("optim.eps=0", "optim.eps=1e-30", "optim.eps must be greater than 0, got 0.0."),                  # Above
    ("optim.learning_rate=-1", "optim.learning_rate=1e-9", "optim.learning_rate must be greater than 0"),
    ("model.dropout=1.0", "model.dropout=0.999", "model.dropout must be in [0, 1), got 1.0."),        # InRange, open
    ("model.dropout=-0.01", "model.dropout=0", "model.dropout must be in [0, 1)"),
    ("optim.min_lr_ratio=1.01", "optim.min_lr_ratio=1", "optim.min_lr_ratio must be in [0, 1]"),     # closed
    ("optim.b2=1", "optim.b2=0", "optim.b2 must be in [0, 1)"),
    ("mesh.data=0", "mesh.data=-1", "mesh.data must be at least 1, or -1"),                           # Rule
    ("mesh.tensor=-2", "mesh.tensor=2", "mesh.tensor must be at least 1, or -1"),
    ("grad_comm.block_size=255", "grad_comm.block_size=2", "grad_comm.block_size must be even"),
    ("grad_comm.block_size=0", "grad_comm.block_size=256", "grad_comm.block_size must be at least 2"),
    ("data.text_key=", "data.text_key=body", "data.text_key must be non-empty"),
    ("seed=-1", "seed=0", "seed must be at least 0"),
    ("task.num_classes=1", "task.num_classes=2", "task.num_classes must be at least 2"),
])
def test_field_constraint_at_its_boundary(bad, good, fragment):
    rejects([bad], fragment, parse_only=True)  # refused as parsed: later settings never see it
    accepts(good)
    # The same declaration holds for a config built in code, which never went through override().
    rejects(_built_in_code(bad), fragment)


def _built_in_code(assignment):
    """TrainConfig() with `key=value` applied by dataclasses.replace, the value parsed by type only."""
    key, raw = assignment.split("=", 1)
    *outer, field = key.split(".")
    cfg = TrainConfig()
    section = getattr(cfg, outer[0]) if outer else cfg
    tp = typing.get_type_hints(type(section), include_extras=True)[field]
    base = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
    section = dataclasses.replace(section, **{field: raw if base is str else base(raw)})
    return dataclasses.replace(cfg, **{outer[0]: section}) if outer else section


def _float_fields():
    sections = {f.name: f.default for f in dataclasses.fields(TrainConfig) if isinstance(f.default, Section)}
    for name, section in sections.items():
        hints = typing.get_type_hints(type(section), include_extras=True)
        for field in dataclasses.fields(section):
            base = typing.get_args(hints[field.name])[0] if typing.get_origin(hints[field.name]) is Annotated \
                else hints[field.name]
            if base is float:
                yield f"{name}.{field.name}"


@pytest.mark.parametrize("key", list(_float_fields()))
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999"])
def test_every_float_must_be_finite(key, raw):
    rejects([f"{key}={raw}"], f"{key} must be a finite number")


def test_a_float_declared_non_finite_may_be_inf():
    @dataclasses.dataclass(frozen=True)
    class Probe(Section):
        SECTION = "probe"
        cap: Annotated[float, AllowNonFinite(), AtLeast(0.0)] = float("inf")
        ratio: float = 0.5

    Probe().check()
    with pytest.raises(HoloError, match="probe.ratio must be a finite number"):
        Probe(ratio=float("nan")).check()
    with pytest.raises(HoloError, match="probe.cap must be at least 0"):
        Probe(cap=-1.0).check()


def test_types_are_checked_for_configs_built_in_code():
    rejects(TrainConfig(model=ModelConfig(d_model="64")), "model.d_model must be an int, got '64'")
    rejects(TrainConfig(steps=True), "steps must be an int, got True")  # a bool is not a count
    rejects(TrainConfig(optim=OptimConfig(b1="0.9")), "optim.b1 must be a number")
    rejects(TrainConfig(data=DataConfig(paths="a.txt")), "data.paths must be a tuple")
    OptimConfig(learning_rate=1).check()  # an int where a float is declared is fine


# --- Literal choices: checked as parsed, and again by check() -----------------------------------

LITERALS = [("model", ModelConfig, "compute_dtype"), ("mesh", MeshConfig, "plan"), ("data", DataConfig, "source"),
            ("grad_comm", GradCommConfig, "scheme"), ("grad_comm", GradCommConfig, "rounding")]


@pytest.mark.parametrize("section, cls, field", LITERALS)
def test_literal_rejected_when_parsed_and_in_code(section, cls, field):
    options = choices(cls, field)
    for option in options:
        parsed = override(TrainConfig(), [f"{section}.{field}={option}"])
        assert getattr(getattr(parsed, section), field) == option
    message = rejects([f"{section}.{field}=bogus"], f"{section}.{field} must be", "got `bogus`", parse_only=True)
    assert all(o in message for o in options)
    rejects(dataclasses.replace(TrainConfig(), **{section: cls(**{field: "bogus"})}), f"{section}.{field} must be")


def test_known_literal_choices():
    assert choices(DataConfig, "source") == ("embedded", "files", "c4", "realnews", "wikitext103", "bookcorpus",
                                             "civil_comments", "mixture")
    assert choices(GradCommConfig, "scheme") == ("fp32", "bf16", "int8", "int4")
    rejects(["task.kind=bogus"], "task.kind must be next_token_lm or sequence_classification")
    # float16 stays constructible (the topology planner models it) but a run refuses it.
    rejects(TrainConfig(model=ModelConfig(compute_dtype="float16")), "model.compute_dtype must be float32 or bfloat16")


def test_remat_names_come_from_the_policy_registry():
    for name in (AUTO, DEFAULT, *REMAT_POLICIES):
        assert accepts(f"model.remat={name}").model.remat == name
    rejects(["model.remat=bogus"], "model.remat must be one of", "dots_no_batch", "got `bogus`")
    rejects(["memory.policies=none,bogus"], "memory.policies must be one of", "got `bogus`")
    rejects(["memory.policies=auto"], "memory.policies")  # the planner's candidates are real policies
    assert accepts("memory.policies=none,full").memory.policies == ("none", "full")


# --- relations between fields -------------------------------------------------------------------

def test_relations():
    rejects(["model.d_model=64", "model.n_heads=3"], "model.d_model=64 is not divisible by model.n_heads=3")
    rejects(TrainConfig(model=ModelConfig(d_model=64, n_heads=3)), "not divisible")
    with pytest.raises(HoloError, match="model.d_model=64 is not divisible"):
        ModelConfig(d_model=64, n_heads=3).check()  # the standalone check callers use keeps its prefix
    rejects(TrainConfig(global_batch=8, microbatches=3), "global_batch=8 is not divisible by microbatches=3")
    TrainConfig(global_batch=8, microbatches=4).check()
    rejects(TrainConfig(mesh=MeshConfig(data=-1, fsdp=-1)), "at most one of mesh.data, mesh.fsdp and mesh.tensor")
    rejects(["task.identities=a,b,a"], "task.identities names a more than once")


# --- tuple parsing ------------------------------------------------------------------------------

def test_tuple_parsing():
    assert override(TrainConfig(), ['memory.policies=["none", "full"]']).memory.policies == ("none", "full")
    assert override(TrainConfig(), ["task.identities=a,b"]).task.identities == ("a", "b")
    rejects(["data.paths=[x"], "`data.paths=[x` is not a JSON list")
    rejects(['data.paths=[["a"]]'], "must be a flat JSON list")


def test_override_errors_name_the_key():
    rejects(["model.widht=3"], "unknown config key `model.widht`")
    rejects(["model.d_model"], "needs the form key=value")
    rejects(["model.d_model=6.5"], "`model.d_model=6.5` is not a valid int")
    rejects(["log.plot=maybe"], "`log.plot=maybe` is not a boolean")
    rejects(["model=3"], "`model` is a section")


# --- paths that must exist and decode -----------------------------------------------------------

def test_data_paths(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("some text\n" * 10)
    accepts("data.source=files", f"data.paths={good}")
    accepts("data.source=files", f"data.paths={tmp_path}/*.txt")
    rejects(["data.source=files"], "data.source=files needs data.paths")
    rejects(["data.source=files", f"data.paths={tmp_path}/missing.txt"], "missing.txt", "does not exist")
    rejects(["data.source=files", f"data.paths={tmp_path}/*.jsonl"], "matches no files")
    rejects(["data.source=files", f"data.paths={tmp_path}"], "is a directory")
    (tmp_path / "b.csv").write_text("x,y\n")
    rejects(["data.source=files", f"data.paths={tmp_path}/b.csv"], "neither .txt nor .jsonl")
    binary = tmp_path / "c.txt"
    binary.write_bytes(b"ok\xff\xfe\x00 not text")
    rejects(["data.source=files", f"data.paths={binary}"], "c.txt", "is not UTF-8 text (bad byte at offset 2)")
    cut = tmp_path / "d.txt"
    cut.write_bytes(b"a" * ((1 << 16) - 1) + "é".encode())  # a character cut by the sniff is not an error
    accepts("data.source=files", f"data.paths={cut}")
    rejects([f"data.paths={good}"], "data.paths is set but data.source is `embedded`")


def test_tokenizer_path(tmp_path):
    rejects([f"data.tokenizer={tmp_path}/none.model"], "none.model", "data.tokenizer")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a sentencepiece model")
    rejects([f"data.tokenizer={junk}"], "junk.model", "is not a readable SentencePiece model")


# --- stage sections -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProbeStageConfig(StageConfig):
    kind: typing.ClassVar[str] = "config_probe"
    weight: Annotated[float, AtLeast(0.0)] = 1.0
    mode: Literal["sum", "mean"] = "mean"


@pytest.fixture
def probe_stage(monkeypatch):
    monkeypatch.setitem(STAGE_CONFIGS, ProbeStageConfig.kind, ProbeStageConfig)


def test_stage_fields_checked_when_parsed(probe_stage):
    cfg = accepts("stages=config_probe:p", "stages.p.weight=0.5", "stages.p.mode=sum")
    assert cfg.stages == (ProbeStageConfig(name="p", weight=0.5, mode="sum"),)
    rejects(["stages=config_probe:p", "stages.p.weight=-1"], "stages.p.weight must be at least 0, got -1.0.",
            parse_only=True)
    rejects(["stages=config_probe", "stages.config_probe.mode=max"], "stages.config_probe.mode must be sum or mean",
            parse_only=True)
    rejects(["stages=config_probe", "stages.config_probe.weight=nan"], "stages.config_probe.weight must be a finite")
    rejects(["stages=bogus"], "unknown stage kind `bogus`")


def test_stage_sections_checked_by_check(probe_stage):
    rejects(TrainConfig(stages=(ProbeStageConfig(name="p", weight=-2.0),)), "stages.p.weight must be at least 0")
    rejects(TrainConfig(stages=(ProbeStageConfig(mode="max"),)), "stages.config_probe.mode must be sum or mean")
    rejects(TrainConfig(stages=(ProbeStageConfig(), ProbeStageConfig())), "two stages are named `config_probe`")
    rejects(TrainConfig(stages=(ProbeStageConfig(name="a.b"),)), "stages.a.b.name must be a name without `.`")
    TrainConfig(stages=(ProbeStageConfig(name="a"), ProbeStageConfig(name="b"))).check()


def test_unregistered_stage_section_is_refused():
    rejects(TrainConfig(stages=(ProbeStageConfig(),)), "not a registered stage section")


def test_to_dict_records_stage_kinds(probe_stage):
    cfg = TrainConfig(stages=(ProbeStageConfig(name="p", weight=2.0),))
    assert cfg.to_dict()["stages"] == [{"kind": "config_probe", "name": "p", "weight": 2.0, "mode": "mean"}]
    assert cfg.to_dict()["model"] == dataclasses.asdict(ModelConfig())


def test_check_value_on_optional_fields():
    check_value(None, Annotated[int | None, AtLeast(1)], "x")
    with pytest.raises(HoloError, match="x must be at least 1, got 0"):
        check_value(0, Annotated[int | None, AtLeast(1)], "x")
