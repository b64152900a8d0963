"""What each system records about a run and can prove afterwards.

Columns (the paper's comparison): resolved config, data lineage, checkpoint digests, fairness and
explanation reports, tamper evidence, policy gates. The peers' cells come from their documentation
and source (each cell cites where); holo_jax's cells are *found in the files a real run wrote*
(`detect_holo_run`), so they change as the governance work lands: a cell says `yes`/`partial` only
when a file in the run directory shows it, and names that file.

`NOT_RUNNABLE` holds, per peer that does not run on this machine, the one sentence saying why
(checked here, see BENCHMARKS.md), and `PUBLISHED` their published throughput figures, labelled as
copied from papers: GPU clusters, not comparable with anything measured here.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

FEATURES = ("resolved_config", "data_lineage", "checkpoint_digests", "fairness_explanation_reports",
            "tamper_evidence", "policy_gates")

_NANOGPT = "https://github.com/karpathy/nanoGPT/blob/master/train.py"
_TORCH_SAVE = "https://pytorch.org/docs/stable/notes/serialization.html"
_DCP = "https://pytorch.org/docs/stable/distributed.checkpoint.html"
_DS_CONFIG = "https://www.deepspeed.ai/docs/config-json/"
_DS_CKPT = "https://deepspeed.readthedocs.io/en/latest/model-checkpointing.html"
_MCORE = "https://github.com/NVIDIA/Megatron-LM (megatron/core)"

# Cells: (level, what) with level in yes / partial / no.
PEERS: dict[str, dict[str, Any]] = {
    "pytorch_loop (nanoGPT)": {
        "resolved_config": ("partial", f"nanoGPT's train.py puts its `config` dict (the globals after "
                                       f"configurator overrides) into ckpt.pt; plain PyTorch records nothing ({_NANOGPT})"),
        "data_lineage": ("no", "reads train.bin with random offsets; neither file digests nor sample order are recorded"),
        "checkpoint_digests": ("no", f"torch.save writes a zip archive whose per-record CRC-32 catches corruption, "
                                     f"not substitution; no content digest is recorded ({_TORCH_SAVE})"),
        "fairness_explanation_reports": ("no", "none"),
        "tamper_evidence": ("no", "none"),
        "policy_gates": ("no", "none"),
    },
    "pytorch_ddp_fsdp2": {
        "resolved_config": ("no", "the process group and FSDP/DDP settings are code, not a record"),
        "data_lineage": ("no", "DistributedSampler's seed and epoch are the user's to save"),
        "checkpoint_digests": ("no", f"torch.distributed.checkpoint writes shards and a .metadata file of "
                                     f"shapes and offsets; no content digests ({_DCP})"),
        "fairness_explanation_reports": ("no", "none"),
        "tamper_evidence": ("no", "none"),
        "policy_gates": ("no", "none"),
    },
    "fairscale": {
        "resolved_config": ("no", "none (FairScale's FSDP was upstreamed into torch.distributed.fsdp; the "
                                  "repository is in maintenance)"),
        "data_lineage": ("no", "none"),
        "checkpoint_digests": ("no", "state_dict / local_state_dict through torch.save"),
        "fairness_explanation_reports": ("no", "none"),
        "tamper_evidence": ("no", "none"),
        "policy_gates": ("no", "none"),
    },
    "deepspeed": {
        "resolved_config": ("yes", f"the engine prints its whole configuration at start-up "
                                   f"(deepspeed/runtime/engine.py: `DeepSpeedEngine configuration`) and stores "
                                   f"`ds_config` and `ds_version` in every checkpoint ({_DS_CONFIG}, {_DS_CKPT})"),
        "data_lineage": ("partial", "checkpoints hold global_steps/global_samples and, with curriculum learning "
                                    "on, the data sampler's state; no digests of the data"),
        "checkpoint_digests": ("no", f"checkpoints are torch.save files per rank plus a `latest` tag file ({_DS_CKPT})"),
        "fairness_explanation_reports": ("no", "none"),
        "tamper_evidence": ("no", "none"),
        "policy_gates": ("no", "none"),
    },
    "megatron_core": {
        "resolved_config": ("partial", f"Megatron-LM's training script prints its arguments and saves them in "
                                       f"each checkpoint; megatron.core itself can dump configs (config_logger.py) "
                                       f"({_MCORE})"),
        "data_lineage": ("partial", "GPT dataset index caches are named by an MD5 of the dataset's description "
                                    "(paths, split, seed, sequence length: megatron/core/datasets/megatron_dataset.py); "
                                    "a cache identity, not a per-run record"),
        "checkpoint_digests": ("no", "dist_checkpointing validates sharding integrity (validation.py), not content"),
        "fairness_explanation_reports": ("no", "none"),
        "tamper_evidence": ("no", "none (the rerun state machine attributes NaNs and loss spikes to nodes, "
                                  "rerun_state_machine.py, alpha)"),
        "policy_gates": ("no", "none"),
    },
}

# Filled from what this machine showed (bench_peers records the live reasons in "unavailable").
NOT_RUNNABLE: dict[str, str] = {
    "megatron_core": ("megatron-core 0.16.1 builds its GPTModel on a CPU (TransformerConfig(use_cpu_initialization="
                      "True), gloo process group) but its forward pass cannot run without CUDA: DotProductAttention "
                      "takes its matmul buffer from GlobalMemoryBuffer.get_tensor(), which allocates on "
                      "torch.cuda.current_device() (megatron/core/utils.py), and model_parallel_cuda_manual_seed() "
                      "asserts a CUDA build; with this CPU-only torch both raise 'Torch not compiled with CUDA enabled'. "
                      "It needs an NVIDIA GPU."),
    "fairscale_fsdp": ("FairScale 0.4.13's FullyShardedDataParallel wraps the model on a CPU (compute_device=cpu, "
                       "gloo) but its first forward fails: _rebuild_full_params() enters "
                       "torch.cuda.stream(self._streams['all_gather']), and those streams are only created when "
                       "CUDA is available (KeyError: 'all_gather'). It needs a GPU; its FSDP lives on as PyTorch's "
                       "(torch_fsdp2 here)."),
}

PUBLISHED: list[dict[str, str]] = [
    {"system": "Megatron-LM", "figure": "1T-parameter GPT on 3072 A100 GPUs: 502 PFLOP/s, 163 TFLOP/s per GPU "
                                        "(52% of peak)",
     "source": "Narayanan et al. 2021, Efficient Large-Scale Language Model Training on GPU Clusters Using "
               "Megatron-LM, SC21, arXiv:2104.04473"},
    {"system": "Megatron-LM", "figure": "8.3B-parameter GPT on 512 V100 GPUs: 15.1 PFLOP/s sustained, 76% "
                                        "scaling efficiency against a 39 TFLOP/s single-GPU baseline",
     "source": "Shoeybi et al. 2019, Megatron-LM: Training Multi-Billion Parameter Language Models Using Model "
               "Parallelism, arXiv:1909.08053"},
    {"system": "DeepSpeed ZeRO", "figure": "100B-parameter models on 400 V100 GPUs at over 15 PFLOP/s (38 TFLOP/s "
                                           "per GPU), super-linear speed-up",
     "source": "Rajbhandari et al. 2020, ZeRO: Memory Optimizations Toward Training Trillion Parameter Models, "
               "SC20, arXiv:1910.02054"},
    {"system": "PyTorch DDP", "figure": "near-linear scaling to 256 GPUs",
     "source": "Li et al. 2020, PyTorch Distributed: Experiences on Accelerating Data Parallel Training, "
               "VLDB 13(12), arXiv:2006.15704"},
    {"system": "PyTorch FSDP", "figure": "comparable performance with DDP, near-linear TFLOP/s scaling for larger "
                                         "models (figures per model in the paper's section 7)",
     "source": "Zhao et al. 2023, PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel, VLDB 16(12), "
               "arXiv:2304.11277"},
    {"system": "FairScale", "figure": "not found: FairScale publishes no throughput paper of its own",
     "source": "https://github.com/facebookresearch/fairscale"},
]


def _json_lines(path: Path) -> list[dict]:
    out = []
    try:
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    except OSError:
        pass
    return out


def _digest_files(root: Path) -> list[str]:
    """Files whose name or JSON content shows a content digest (sha256 / sha512 / blake2)."""
    found = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        low = p.name.lower()
        if any(k in low for k in ("sha256", "sha512", "digest", "blake2", "checksum")):
            found.append(str(p.relative_to(root)))
            continue
        if p.suffix in (".json", ".jsonl") and p.stat().st_size < 5_000_000:
            text = p.read_text(errors="replace").lower()
            if any(k in text for k in ('"sha256', '"digest', '"sha512', '"blake2')):
                found.append(str(p.relative_to(root)))
    return found


def detect_holo_run(run_dir: Path) -> dict[str, tuple[str, str]]:
    """The transparency cells of holo_jax, from the files of the run in `run_dir`."""
    run_dir = Path(run_dir)
    cells: dict[str, tuple[str, str]] = {}
    events = _json_lines(run_dir / "events.jsonl")
    kinds = {e.get("kind") for e in events}
    start = next((e for e in events if e.get("kind") in ("run_start", "resume")), {})
    config_json = run_dir / "config.json"
    record = json.loads(config_json.read_text()) if config_json.is_file() else {}
    if "config" in record and start.get("config"):
        cells["resolved_config"] = ("yes", "config.json (the config as asked + a history of changes on resume) and "
                                           "the run_start event (values resolved on this machine: mesh plan, "
                                           "devices, parameter count)")
    elif "config" in record:
        cells["resolved_config"] = ("partial", "config.json (the config as asked)")
    else:
        cells["resolved_config"] = ("no", "no config.json")

    audit_records = [line.get("record", {}) for line in _json_lines(run_dir / "audit" / "log.jsonl")]
    provenance = [r for r in audit_records if r.get("type") == "checkpoint_provenance"]
    lineage = [e for e in events if e.get("kind") == "data_lineage"]
    fingerprinted = [sp for e in lineage for sp in e.get("splits", []) if sp.get("fingerprint")]
    logged_reports = [e for e in events if e.get("kind") == "report"]

    digests = _digest_files(run_dir)
    data_cfg = (record.get("config") or {}).get("data")
    data_digest = [f for f in digests if "data" in f.lower() or "lineage" in f.lower()]
    ckpts = sorted(p for p in (run_dir / "checkpoints").glob("*") if p.is_dir()) if (run_dir / "checkpoints").is_dir() else []
    has_position = any((c / "data").is_dir() for c in ckpts)
    if fingerprinted:
        cells["data_lineage"] = ("yes", "data_lineage events (source, version, split, shard) with the data's "
                                        f"sha256 fingerprint for {len(fingerprinted)} split(s), in the audit log")
    elif lineage:
        cells["data_lineage"] = ("partial", "data_lineage events (source, split, shard, per process) in the audit "
                                            "log; this source computes no fingerprint of its documents")
    elif data_digest:
        cells["data_lineage"] = ("yes", "digests of the data: " + ", ".join(data_digest[:4]))
    elif data_cfg is not None:
        what = "the data config (source, paths, tokenizer, seed) in config.json"
        if has_position:
            what += " and every row stream's position (document, offset) in each checkpoint's `data` item"
        cells["data_lineage"] = ("partial", what + "; no digest of the documents read")
    else:
        cells["data_lineage"] = ("no", "nothing about the data")

    ckpt_digest = [f for f in digests if f.startswith("checkpoints")]
    if provenance:
        cells["checkpoint_digests"] = ("yes", f"{len(provenance)} checkpoint_provenance records in the audit log: "
                                              "per-file sha256 under a DSSE-signed in-toto statement")
    elif ckpt_digest:
        cells["checkpoint_digests"] = ("yes", ", ".join(ckpt_digest[:4]))
    elif ckpts:
        cells["checkpoint_digests"] = ("no", f"{len(ckpts)} orbax checkpoints with commit_success.txt markers and "
                                             "array metadata; no content digests")
    else:
        cells["checkpoint_digests"] = ("no", "no checkpoints")

    reports = [str(p.relative_to(run_dir)) for p in sorted(run_dir.rglob("*"))
               if p.is_file() and any(k in str(p.relative_to(run_dir)).lower()
                                      for k in ("fairness", "explain", "bias_report", "reports/"))]
    emitted = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "emitted").glob("*.jsonl")) \
        if (run_dir / "emitted").is_dir() else []
    if logged_reports:
        cells["fairness_explanation_reports"] = ("yes", "reports logged by sha256: " + ", ".join(
            f"{e.get('report_kind')} ({e.get('path')})" for e in logged_reports[:4]))
    elif reports:
        cells["fairness_explanation_reports"] = ("yes", ", ".join(reports[:4]))
    elif emitted:
        cells["fairness_explanation_reports"] = ("partial", "stage emits: " + ", ".join(emitted[:4]))
    else:
        cells["fairness_explanation_reports"] = ("no", "none in the run directory (`experiments.fairness_eval "
                                                       "--record` / `experiments.explain --record` file them there)")

    audit = run_dir / "audit"
    if audit.is_dir() and any(audit.iterdir()):
        cells["tamper_evidence"] = ("yes", "audit/: " + ", ".join(sorted(p.name for p in audit.iterdir())[:4]))
    else:
        cells["tamper_evidence"] = ("no", "no audit log (run made with --no-audit)")

    gates = sorted(k for k in kinds if k and any(w in k for w in ("policy", "gate", "approval")))
    gate_files = [str(p.relative_to(run_dir)) for p in sorted(run_dir.rglob("*"))
                  if p.is_file() and any(w in p.name.lower() for w in ("policy", "gate"))]
    if gates or gate_files:
        cells["policy_gates"] = ("yes", ", ".join([*gates, *gate_files][:4]))
    else:
        cells["policy_gates"] = ("no", "none recorded")
    return cells


def real_holo_run(run_dir: Path, python: str, steps: int = 6) -> Path:
    """A short real `experiments.pretrain --config tiny` run into `run_dir` (made afresh)."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [python, "-m", "experiments.pretrain", "--workdir", str(run_dir), "--config", "tiny", "--steps", str(steps),
           "--set", f"checkpoint.every_steps={max(steps // 2, 1)}", "--set", f"log.eval_every_steps={max(steps // 2, 1)}",
           "--set", "log.progress_bar=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"the holo_jax run for the transparency table failed: {done.stderr[-800:]}")
    return run_dir


def table(holo_run_dir: Path | None) -> dict[str, Any]:
    """{"features", "systems": {name: {feature: {"level", "evidence"}}}, "holo_jax_files"}."""
    systems: dict[str, Any] = {}
    if holo_run_dir is not None:
        cells = detect_holo_run(holo_run_dir)
        systems["holo_jax (from a real run's files)"] = {f: {"level": lv, "evidence": ev} for f, (lv, ev) in cells.items()}
    for name, cells in PEERS.items():
        systems[name + " (from documentation)"] = {f: {"level": lv, "evidence": ev} for f, (lv, ev) in cells.items()}
    out: dict[str, Any] = {"features": list(FEATURES), "systems": systems}
    if holo_run_dir is not None:
        root = Path(holo_run_dir)
        out["holo_jax_run_files"] = sorted({str(p.relative_to(root)).split("/")[0] for p in root.rglob("*")})
    return out


def markdown(tab: dict[str, Any]) -> str:
    """The table as Markdown (level only; the JSON holds the evidence)."""
    head = "| system | " + " | ".join(f.replace("_", " ") for f in tab["features"]) + " |"
    rows = [head, "|" + "---|" * (len(tab["features"]) + 1)]
    for name, cells in tab["systems"].items():
        rows.append(f"| {name} | " + " | ".join(cells[f]["level"] for f in tab["features"]) + " |")
    return "\n".join(rows)
