"""The PyTorch side of the peer benchmark: nanoGPT's training loop on the shared batches.

    python -m experiments.peers.torch_worker --workdir DIR --control HOST:PORT --system NAME --mode eager
    python -m torch.distributed.run --standalone --nproc-per-node 2 -m experiments.peers.torch_worker \\
        --workdir DIR --control HOST:PORT --system NAME --mode ddp

Modes: `eager` (the plain loop), `compile` (`torch.compile(model)`, Inductor), `ddp`
(`DistributedDataParallel` over gloo), `fsdp2` (`torch.distributed.fsdp.fully_shard` per block and
at the root, ZeRO-3 style), `fairscale` (FairScale's `FullyShardedDataParallel`) and
`deepspeed1`/`deepspeed2`/`deepspeed3` (DeepSpeed ZeRO stage 1-3). The step is nanoGPT's: set the
learning rate, forward, backward, `clip_grad_norm_`, `AdamW.step()`, `zero_grad(set_to_none=True)`.
AdamW is `torch.optim.AdamW` with its default (foreach) implementation; the rates, betas, eps,
decay and clipping come from the spec, the initial weights from `init.npz`.

A mode that cannot be set up here (a missing package, a backend that needs a GPU) reports the
exception to the orchestrator as `{"unavailable": "..."}` instead of a hello, and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

MODES = ("eager", "compile", "ddp", "fsdp2", "fairscale", "deepspeed1", "deepspeed2", "deepspeed3")
DISTRIBUTED = frozenset(MODES) - {"eager", "compile"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.peers.torch_worker")
    p.add_argument("--workdir", required=True)
    p.add_argument("--control", required=True)
    p.add_argument("--system", required=True)
    p.add_argument("--mode", choices=MODES, required=True)
    args = p.parse_args(argv)

    from experiments.peers.common import connect

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        loop = TorchLoop(args.workdir, args.mode, rank, world)
    except Exception as e:  # noqa: BLE001 - reported to the orchestrator, one line per system
        channel = connect(args.control, {"system": args.system, "rank": rank, "world": world,
                                         "unavailable": f"{type(e).__name__}: {_first_line(e)}",
                                         "traceback": traceback.format_exc(limit=6)})
        channel.recv()
        channel.close()
        return 0
    from experiments.peers.common import serve

    channel = connect(args.control, {"system": args.system, "rank": rank, "world": world})
    serve(loop, channel)
    loop.close()
    return 0


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:400] if text else ""


class TorchLoop:
    def __init__(self, workdir: str, mode: str, rank: int, world: int):
        import numpy as np
        import torch

        from experiments.peers.common import INIT_FILE, TOKENS_FILE, load_spec, rank_rows
        from experiments.peers.torch_gpt import GPT, load_holo_init, optimizer_groups

        self.torch, self.mode, self.rank, self.world = torch, mode, rank, world
        self.spec = spec = load_spec(workdir)
        torch.manual_seed(spec.seed)
        self.tokens = np.load(os.path.join(workdir, TOKENS_FILE), mmap_mode="r")
        self.rows = rank_rows(spec.global_batch, rank, world)
        model = GPT(spec)
        with np.load(os.path.join(workdir, INIT_FILE)) as init:
            load_holo_init(model, dict(init))
        self.params_for_clip = None
        self.engine = None
        if mode in DISTRIBUTED:
            import torch.distributed as dist

            if mode.startswith("deepspeed"):
                import deepspeed

                deepspeed.init_distributed(dist_backend="gloo")
            else:
                dist.init_process_group("gloo")
        if mode == "compile":
            model = torch.compile(model)
        elif mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model)
        elif mode == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (world,))
            for block in model.h:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        elif mode == "fairscale":
            from fairscale.nn.data_parallel import FullyShardedDataParallel

            # Unflattened, so the decay groups can still be told apart by parameter name.
            model = FullyShardedDataParallel(model, compute_device=torch.device("cpu"), flatten_parameters=False)
        if mode.startswith("deepspeed"):
            import deepspeed

            config = {
                "train_micro_batch_size_per_gpu": spec.global_batch // world,
                "gradient_accumulation_steps": 1,
                "gradient_clipping": spec.grad_clip_norm,
                "zero_optimization": {"stage": int(mode[-1])},
                "optimizer": {"type": "AdamW", "params": {"lr": spec.learning_rates[0], "betas": [spec.b1, spec.b2],
                                                          "eps": spec.eps, "weight_decay": spec.weight_decay}},
            }
            groups = optimizer_groups(model, spec.weight_decay, spec.undecayed)
            self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=groups,
                                                                     config=config)
            self.model = self.engine
        else:
            self.model = model
            self.optimizer = torch.optim.AdamW(optimizer_groups(model, spec.weight_decay, spec.undecayed,
                                                                check_dims=mode != "fairscale"),
                                               lr=spec.learning_rates[0], betas=(spec.b1, spec.b2), eps=spec.eps)
        self.done = 0

    def run(self, k: int) -> list[float]:
        torch, spec = self.torch, self.spec
        losses = []
        for _ in range(k):
            rows = self.tokens[self.done, self.rows]
            x = torch.from_numpy(rows[:, :-1].astype("int64"))
            y = torch.from_numpy(rows[:, 1:].astype("int64"))
            lr = spec.learning_rates[self.done]
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = self.model(x, y)
            if self.engine is not None:
                self.engine.backward(loss)
                self.engine.step()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            self.done += 1
        return [float(v) for v in losses]

    def report(self) -> dict:
        torch = self.torch
        figures: dict = {"cpu_caching_allocator": "none: PyTorch's CPU allocator keeps no statistics "
                                                  "(torch.cuda.memory_stats is CUDA-only)"}
        versions = f"torch {torch.__version__}"
        if self.mode.startswith("deepspeed"):
            import deepspeed

            versions += f", deepspeed {deepspeed.__version__}"
        if self.mode == "fairscale":
            import fairscale

            versions += f", fairscale {fairscale.__version__}"
        optimizer = self.optimizer
        inner = getattr(optimizer, "optimizer", None)  # DeepSpeed's ZeRO optimizers wrap the base one
        return {"allocator": figures, "framework": versions, "threads": torch.get_num_threads(),
                "processes": self.world, "optimizer": type(optimizer).__module__ + "." + type(optimizer).__name__
                + (f" over {type(inner).__module__}.{type(inner).__name__}" if inner is not None else "")}

    def close(self) -> None:
        if self.mode in DISTRIBUTED:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
