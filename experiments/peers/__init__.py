"""The programs `experiments.bench_peers` runs side by side: holo_jax and the PyTorch-side peers.

    common.py       what every program shares and none of them needs JAX or torch for: the benchmark
                    spec (one GPT, one optimizer, one schedule), the shared token stream and the
                    shared initial weights on disk, the control channel to the orchestrator, RSS and
                    CPU-time readings, the energy estimate
    holo_worker.py  holo_jax: one process, or one of P processes under `experiments.launch_local`
    torch_gpt.py    the same GPT written as users write it in PyTorch (nanoGPT style)
    torch_worker.py the PyTorch loops: eager, torch.compile, DDP, FSDP2 (fully_shard), FairScale
                    FSDP and DeepSpeed ZeRO where they import and run
    transparency.py what each system records about a run: from documentation for the peers, from
                    the files a real holo_jax run writes for holo_jax

torch is an optional extra (`pip install -e '.[peers]'`); nothing here imports it at module load.
"""
