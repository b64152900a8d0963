"""experiments.bench_peers: the shared problem (token stream, spec, initial weights), the energy
figure, the transparency table, the JSON it prints, and its argument checks. The PyTorch parts
are skipped where torch is not installed (CI installs the main dependencies and `test` only)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import bench_peers
from experiments.peers import common, transparency
from holo_jax.config import ModelConfig, OptimConfig, TrainConfig

TINY = ["--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2",
        "--set", "model.d_ff=64", "--set", "model.max_len=16", "--set", "global_batch=4"]


def _tiny_cfg() -> TrainConfig:
    return TrainConfig(model=ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, max_len=16),
                       optim=OptimConfig(warmup_steps=2), global_batch=4, steps=5)


def test_the_token_stream_is_holo_jax_pipeline_and_splits_over_ranks_like_it() -> None:
    from holo_jax.data import PackedBatches, make_source, make_tokenizer

    cfg = _tiny_cfg()
    tokens = common.token_stream(cfg, 3)
    assert tokens.shape == (3, 4, 17) and tokens.dtype == np.int32
    for rank in range(2):
        pipe = PackedBatches(make_source(cfg.data, "train"), make_tokenizer("byte"), seq_len=16, global_batch=4,
                             process_index=rank, process_count=2, seed=cfg.data.seed)
        rows = common.rank_rows(4, rank, 2)
        for s in range(3):
            b = next(pipe)
            np.testing.assert_array_equal(tokens[s, rows, :-1], b["inputs"])
            np.testing.assert_array_equal(tokens[s, rows, 1:], b["targets"])


def test_the_spec_carries_holo_jax_schedule_and_round_trips(tmp_path: Path) -> None:
    from holo_jax.train.optimizer import learning_rate_schedule

    cfg = _tiny_cfg()
    spec = common.spec_from_config(cfg, 6)
    sched = learning_rate_schedule(cfg.optim, 6)
    assert spec.learning_rates == pytest.approx([float(sched(i)) for i in range(6)])
    assert spec.learning_rates[0] == 0.0 and max(spec.learning_rates) == pytest.approx(cfg.optim.learning_rate)
    assert (spec.padded_vocab, spec.steps, spec.tokens_per_step) == (384, 6, 64)
    assert common.PeerSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_prepare_writes_the_files_every_worker_reads(tmp_path: Path) -> None:
    from experiments.peers.holo_worker import config_for

    spec = common.prepare_workdir(_tiny_cfg(), 4, tmp_path)
    assert common.load_spec(tmp_path) == spec
    assert np.load(tmp_path / common.TOKENS_FILE).shape == (4, 4, 17)
    init = np.load(tmp_path / common.INIT_FILE)
    assert {"decoder/embedding", "decoder/blocks/attn/query", "decoder/blocks/mlp/wi/kernel"} <= set(init.files)
    assert init["decoder/blocks/attn/query"].shape == (1, 32, 2, 16)  # scanned: layers first
    # The holo_jax worker rebuilds the same config from the spec.
    back = config_for(spec)
    assert dataclasses.astuple(back.model)[:6] == dataclasses.astuple(_tiny_cfg().model)[:6]
    assert common.spec_from_config(back, 4).learning_rates == spec.learning_rates


def test_energy_is_rapl_where_readable_else_the_stated_estimate(tmp_path: Path, monkeypatch) -> None:
    assert common.joules_per_token(2.0, 1000, 6.25) == pytest.approx(0.0125)
    monkeypatch.setattr(common, "RAPL_ROOT", tmp_path / "absent")
    method = common.energy_method(common.DEFAULT_WATTS_PER_CORE)
    assert method["method"].startswith("estimate") and "8480+" in method["watts_per_core_source"]
    assert "not present" in method["why_not_rapl"]
    assert common.energy_method(3.0)["watts_per_core_source"] == "given with --watts-per-core"
    zone = tmp_path / "rapl" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("123456\n")
    (tmp_path / "rapl" / "intel-rapl:0:0").mkdir()  # a sub-zone (core): not counted twice
    monkeypatch.setattr(common, "RAPL_ROOT", tmp_path / "rapl")
    assert common.rapl_energy_uj() == {"intel-rapl:0": 123456}
    assert common.energy_method(6.25)["method"] == "rapl"


def _fake_run(root: Path) -> Path:
    """The files `experiments.pretrain` writes, reduced to what the detectors read."""
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"config": {"data": {"source": "embedded"}}, "history": []}))
    events = [{"kind": "run_start", "config": {"data": {}}, "mesh_plan": {}}, {"kind": "run_end"}]
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (root / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    for step in (3, 6):
        (root / "checkpoints" / str(step) / "data").mkdir(parents=True)
        (root / "checkpoints" / str(step) / "commit_success.txt").write_text("ok")
    return root


def test_the_holo_jax_column_comes_from_the_files_of_the_run(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    cells = transparency.detect_holo_run(run)
    assert set(cells) == set(transparency.FEATURES)
    assert cells["resolved_config"][0] == "yes"
    assert cells["data_lineage"][0] == "partial" and "position" in cells["data_lineage"][1]
    assert cells["checkpoint_digests"][0] == "no" and "2 orbax checkpoints" in cells["checkpoint_digests"][1]
    assert [cells[f][0] for f in ("fairness_explanation_reports", "tamper_evidence", "policy_gates")] == ["no"] * 3
    # As the governance work lands, the cells follow the files.
    (run / "audit").mkdir()
    (run / "audit" / "log.jsonl").write_text('{"sha256": "ab"}\n')
    (run / "reports").mkdir()
    (run / "reports" / "fairness.json").write_text("{}")
    (run / "checkpoints" / "6" / "digests.json").write_text('{"sha256": "cd"}')
    cells = transparency.detect_holo_run(run)
    assert cells["tamper_evidence"][0] == "yes" and cells["fairness_explanation_reports"][0] == "yes"
    assert cells["checkpoint_digests"] == ("yes", "checkpoints/6/digests.json")
    # What the governance layer writes: provenance records in the audit log, data_lineage and report events.
    (run / "audit" / "log.jsonl").write_text(json.dumps({"_sha256": "ab", "prev": "", "seq": 0, "record": {
        "type": "checkpoint_provenance", "step": 6}}) + "\n")
    with open(run / "events.jsonl", "a") as f:
        f.write(json.dumps({"kind": "data_lineage", "splits": [{"split": "train", "fingerprint": "ef"}]}) + "\n")
        f.write(json.dumps({"kind": "report", "report_kind": "fairness", "path": "reports/fairness.json"}) + "\n")
    cells = transparency.detect_holo_run(run)
    assert cells["checkpoint_digests"][0] == "yes" and "checkpoint_provenance" in cells["checkpoint_digests"][1]
    assert cells["data_lineage"][0] == "yes" and "fingerprint" in cells["data_lineage"][1]
    assert "fairness (reports/fairness.json)" in cells["fairness_explanation_reports"][1]


def test_the_table_lists_every_peer_with_sources_and_renders_as_markdown(tmp_path: Path) -> None:
    tab = transparency.table(_fake_run(tmp_path / "run"))
    names = list(tab["systems"])
    assert names[0].startswith("holo_jax") and len(names) == 1 + len(transparency.PEERS)
    for cells in tab["systems"].values():
        assert set(cells) == set(transparency.FEATURES)
        assert all(c["level"] in ("yes", "partial", "no") and c["evidence"] for c in cells.values())
    assert {"checkpoints", "config.json", "events.jsonl", "metrics.jsonl"} <= set(tab["holo_jax_run_files"])
    md = transparency.markdown(tab).splitlines()
    assert len(md) == 2 + len(names) and md[0].startswith("| system | resolved config")
    assert transparency.table(None)["systems"] and "holo_jax_run_files" not in transparency.table(None)
    assert all(p["source"] for p in transparency.PUBLISHED) and set(transparency.NOT_RUNNABLE) >= {"megatron_core"}


def test_json_output_of_a_tiny_run(tmp_path: Path, capsys) -> None:
    # holo_jax for real (one worker process); torch_eager for real where torch is installed, else
    # listed as unavailable with the reason.
    argv = ["--json", "--systems", "holo_jax,torch_eager", *TINY, "--repeats", "2", "--warmup", "1",
            "--workdir", str(tmp_path / "bench"), "--no-transparency-run", "--timeout", "120"]
    assert bench_peers.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"machine", "problem", "method", "systems", "unavailable", "comparisons", "not_runnable_here",
            "published", "transparency"} <= set(out)
    assert out["problem"]["steps"] == 3 and out["problem"]["global_batch"] == 4
    assert out["method"]["energy"]["method"] in ("rapl", "estimate: cpu_seconds x watts_per_core")
    holo = out["systems"]["holo_jax"]
    for key in ("tokens_per_second", "tokens_per_second_all", "step_seconds", "cpu_seconds_per_token",
                "joules_per_token", "losses", "final_loss", "peak_rss_bytes", "allocator"):
        assert holo[key] is not None, key
    assert len(holo["tokens_per_second_all"]) == 2 and len(holo["losses"]) == 3
    assert holo["losses"][0] == pytest.approx(np.log(384), rel=0.05)  # a fresh model: uniform over the padded vocabulary
    assert holo["peak_rss_bytes"][0] > 10 * 2**20
    if "torch_eager" in out["systems"]:
        torch_losses = out["systems"]["torch_eager"]["losses"]
        np.testing.assert_allclose(torch_losses, holo["losses"], rtol=1e-4)  # same weights, same batches
        assert out["comparisons"]["holo_jax/torch_eager"] > 0
    else:
        assert "torch" in out["unavailable"]["torch_eager"]


def test_the_pytorch_gpt_computes_holo_jax_loss_from_the_same_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp
    import optax

    from experiments.peers.torch_gpt import GPT, load_holo_init, optimizer_groups
    from holo_jax.model import CausalLM

    cfg = _tiny_cfg()
    spec = common.prepare_workdir(cfg, 2, tmp_path)
    init = dict(np.load(tmp_path / common.INIT_FILE))
    model = GPT(spec)
    load_holo_init(model, init)
    rows = np.load(tmp_path / common.TOKENS_FILE)[0]
    with torch.no_grad():
        torch_loss = float(model(torch.from_numpy(rows[:, :-1].astype("int64")),
                                 torch.from_numpy(rows[:, 1:].astype("int64"))))
    params = {}
    for name, value in init.items():  # back to the nested tree
        node = params
        *path, leaf = name.split("/")
        for k in path:
            node = node.setdefault(k, {})
        node[leaf] = jnp.asarray(value)
    logits, _ = CausalLM(cfg.model).apply({"params": params}, jnp.asarray(rows[:, :-1]))
    holo_loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(rows[:, 1:])).mean())
    assert torch_loss == pytest.approx(holo_loss, rel=1e-5)
    decay, no_decay = optimizer_groups(model, 0.1, spec.undecayed)
    # Per layer two LayerNorms (scale, bias) and the MLP's two biases; the final LayerNorm.
    assert len(no_decay["params"]) == 6 * cfg.model.n_layers + 2
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == sum(v.size for v in init.values())


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats and --steps-per-repeat must be at least 1"),
    (["--warmup", "-1"], "--warmup at least 0"),
    (["--systems", "holo_jax,megatron"], "unknown systems ['megatron']"),
    (["--watts-per-core", "0"], "--watts-per-core must be a positive number"),
])
def test_bad_arguments_are_one_sentence(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        bench_peers.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
