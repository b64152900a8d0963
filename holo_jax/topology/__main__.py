"""`python -m holo_jax.topology`: show a topology and the mesh plan for it.

    python -m holo_jax.topology --nvidia-smi-topo topo.txt --hosts 4 --json
    python -m holo_jax.topology --topology dgx-a100 --hosts 64 --model gpt-3.6b --set global_batch=512 --explain
    python -m holo_jax.topology --json            # detect this machine (CPU devices here)

The workload planned for is the trainer's default `TrainConfig` (global batch, microbatches,
model), or a published GPT shape with `--model`, adjusted with `--set key=value`; gradients are
priced under the configured `grad_comm.scheme` (e.g. `--set grad_comm.scheme=int8`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from holo_jax.config import TrainConfig, override
from holo_jax.errors import HoloError, exit_on_user_error
from holo_jax.topology import nvidia_smi
from holo_jax.topology.detect import detect
from holo_jax.topology.model import Topology, replicate
from holo_jax.topology.plan import AXES, Workload, candidates, describe, explain, nothing_fits
from holo_jax.topology.presets import PRESETS, preset
from holo_jax.topology.probes import Probe
from holo_jax.topology.published import MODELS

EXPLAIN_TOP = 5


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m holo_jax.topology", description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--nvidia-smi-topo", metavar="FILE", help="`nvidia-smi topo -m` output of one host")
    source.add_argument("--topology", metavar="FILE_OR_PRESET",
                        help=f"a topology JSON/YAML file or a preset: {', '.join(PRESETS)}")
    p.add_argument("--hosts", type=int, default=None, help="replicate a one-host topology over N identical hosts")
    p.add_argument("--nic-gbit", type=float, default=None,
                   help="rate (Gb/s) to assume for NICs whose rate the input does not give, e.g. a pasted matrix")
    p.add_argument("--model", choices=sorted(MODELS), help="plan for a published GPT shape instead of the default")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field, e.g. global_batch=512 or model.remat=full")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--explain", action="store_true", help=f"also show the top {EXPLAIN_TOP} candidates and why")
    p.add_argument("--save", metavar="FILE", help="write the topology as JSON (loadable with --topology)")
    return p.parse_args(argv)


def load_topology(args: argparse.Namespace) -> tuple[Topology, list[Probe]]:
    if args.nvidia_smi_topo:
        topology, probes = nvidia_smi.parse_file(args.nvidia_smi_topo), []
    elif args.topology:
        looks_like_file = Path(args.topology).suffix or Path(args.topology).exists()
        topology, probes = (Topology.load(args.topology) if looks_like_file else preset(args.topology)), []
    else:
        found = detect()
        topology, probes = found.topology, list(found.probes)
    if args.nic_gbit is not None:
        if not (math.isfinite(args.nic_gbit) and args.nic_gbit > 0):
            raise HoloError(f"--nic-gbit must be a positive number of Gb/s, got {args.nic_gbit}.")
        topology = dataclasses.replace(topology, links=dataclasses.replace(topology.links, default_nic_gbit=args.nic_gbit))
    if args.hosts is not None:
        topology = replicate(topology, args.hosts)
    return topology, probes


def report(topology: Topology, probes: list[Probe], work: Workload, show: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": topology.source,
        "hosts": list(topology.hosts),
        "device": dataclasses.asdict(topology.device),
        "gpus": [dataclasses.asdict(g) for g in topology.gpus],
        "islands": [list(i.gpus) for i in topology.islands],
        "nvlinks": [list(link) for link in topology.nvlinks],
        "nics": [dataclasses.asdict(n) for n in topology.nics],
    }
    if probes:
        out["probes"] = [dataclasses.asdict(p) for p in probes]
    try:
        ranked = candidates(topology, work)
    except HoloError as e:  # the topology is still worth showing when it cannot be planned on
        return {**out, "mesh_plan": None, "mesh_plan_error": str(e)}
    if not ranked[0].feasible:
        return {**out, "mesh_plan": None, "mesh_plan_error": nothing_fits(ranked, topology)}
    best = dataclasses.replace(ranked[0], why=explain(ranked))
    out["mesh_plan"] = best.to_dict()
    if show:
        out["candidates"] = [{"mesh": p.label(), "summary": describe(p), "feasible": p.feasible,
                              "problems": list(p.problems)} for p in ranked[:show]]
    return out


def render(out: dict[str, Any]) -> str:
    lines = [f"{out['source']}: {len(out['hosts'])} host(s), {len(out['gpus'])} {out['device']['kind']} device(s)"]
    lines.append("NVLink islands: " + " ".join("[" + ",".join(map(str, i)) + "]" for i in out["islands"]))
    rails = [f"GPU{g['index']}->{g['nearest_nic']} ({g['nic_path']})" for g in out["gpus"] if g["nearest_nic"]]
    if rails:
        lines.append("nearest NICs: " + ", ".join(rails))
    for probe in out.get("probes", []):
        lines.append(f"probe {probe['name']}: {'ok' if probe['ok'] else 'unavailable'} - {probe['detail']}")
    plan = out["mesh_plan"]
    if plan is None:
        lines.append(f"mesh plan: none ({out['mesh_plan_error']})")
        return "\n".join(lines)
    lines.append("mesh plan: " + " x ".join(f"{a}={plan['axis_sizes'][a]}" for a in AXES))
    lines.append(plan["why"])
    for c in out.get("candidates", []):
        mark, problem = ("  ", "") if c["feasible"] else ("x ", f" [{c['problems'][0]}]")
        lines.append(f"  {mark}{c['summary']}{problem}")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = TrainConfig(model=MODELS[args.model]) if args.model else TrainConfig()
    cfg = override(cfg, args.set)
    topology, probes = load_topology(args)
    if args.save:
        topology.save(args.save)
    work = Workload(cfg.model, cfg.global_batch, cfg.model.max_len, cfg.microbatches,
                    grad_comm=(cfg.grad_comm.scheme,))
    out = report(topology, probes, work, EXPLAIN_TOP if args.explain else 0)
    print(json.dumps(out, indent=2) if args.json else render(out))


if __name__ == "__main__":
    sys.exit(main())
