"""2 processes: each keeps its own audit log, both verify, and process 0's log holds process 1's
signed heads at every checkpoint, each matching process 1's log."""
import json

import pytest

from experiments.launch_local import launch
from holo_jax.governance.verify import verify_run


@pytest.mark.slow
def test_each_process_log_verifies_and_process_0_records_the_others(tmp_path):
    args = ["--workdir", str(tmp_path / "run"), "--config", "tiny", "--steps", "4", "--set", "checkpoint.every_steps=2",
            "--set", "log.eval_every_steps=0", "--set", "log.progress_bar=false", "--set", "log.plot=false",
            "--set", "log.tensorboard=false"]
    assert launch(2, 4, "experiments.pretrain", args, timeout=300) == 0
    result = verify_run(tmp_path / "run", strict=True)
    assert result.ok, result.summary()
    assert [c.process for c in result.logs] == [0, 1]
    primary, other = result.logs
    assert primary.keys.keys().isdisjoint(other.keys.keys())  # each process signs with its own (ephemeral) key
    peer = [r for r in primary.entries if r["type"] == "peer_heads"]
    assert [r["step"] for r in peer] == [2, 4] and primary.peer_heads_verified == 2
    # Each recorded head covers what process 1 logged up to that checkpoint's save, at least.
    p1 = [r for r in other.entries]
    for r in peer:
        size = r["heads"]["1"]["size"]
        synced = [i for i, e in enumerate(p1) if e.get("type") == "event" and e["event"]["kind"] == "checkpoint_started"
                  and e["event"]["step"] == r["step"]]
        assert synced and size >= synced[0], (size, synced)
    kinds = [e["event"]["kind"] for e in p1 if e.get("type") == "event"]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and kinds.count("checkpoint_saved") == 2
    assert not any(e["type"] == "checkpoint_provenance" for e in p1)  # digested once, by process 0
    assert json.loads((tmp_path / "run" / "audit" / "process-1" / "head.json").read_text())["size"] == other.records
