"""Cluster detection on recorded scheduler environments, and `initialize()` in this process."""
from __future__ import annotations

import os

import jax
import pytest

from holo_jax.errors import HoloError
from holo_jax.runtime import ClusterEnv, detect_cluster, distributed, expand_hostlist, resolve_cluster

# What `srun -N2 --ntasks-per-node=2` sets for task 3 (real variable names, made-up values).
SLURM_STEP = {
    "SLURM_JOB_ID": "81234",
    "SLURM_JOB_NODELIST": "gpu[01-04,07]",
    "SLURM_STEP_NODELIST": "gpu[03-04]",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURMD_NODENAME": "gpu04",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
}
SLURM_PORT = 61440 + 81234 % 4096  # JAX's convention, checked against JAX below
OMPI_URI = "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"
OMPI_RANK = {
    "OMPI_COMM_WORLD_SIZE": "8",
    "OMPI_COMM_WORLD_RANK": "5",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
}
HOLO = {"HOLO_COORDINATOR": "127.0.0.1:4321", "HOLO_NUM_PROCESSES": "2", "HOLO_PROCESS_ID": "1"}
# Variables any source reads; cleared wherever a test uses the real os.environ.
CLUSTER_VARIABLE_PREFIXES = ("HOLO_", "SLURM", "OMPI_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE_IDS",
                             "MASTER_", "WORLD_SIZE", "RANK", "LOCAL_", "JOB_COMPLETION_INDEX")


@pytest.fixture
def no_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(CLUSTER_VARIABLE_PREFIXES):
            monkeypatch.delenv(name)


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("spec, hosts", [
    ("node7", ["node7"]),
    ("a1,b2", ["a1", "b2"]),
    ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
    ("n[8-10],login", ["n8", "n9", "n10", "login"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("gpu[098-101]", ["gpu098", "gpu099", "gpu100", "gpu101"]),
])
def test_expand_hostlist(spec: str, hosts: list[str]) -> None:
    assert expand_hostlist(spec) == hosts


@pytest.mark.parametrize("spec", ["gpu[01-", "gpu]01[", "gpu[a-b]", "gpu[4-2]", "gpu[[1]]", ""])
def test_expand_hostlist_rejects_garbage(spec: str) -> None:
    with pytest.raises(HoloError, match="Slurm host list"):
        expand_hostlist(spec)


def test_slurm_srun_step() -> None:
    assert detect_cluster(SLURM_STEP) == ClusterEnv(
        coordinator_address=f"gpu03:{SLURM_PORT}", num_processes=4, process_id=3,
        local_device_ids=(1,), source="slurm")


@pytest.mark.parametrize("extra, local_device_ids", [
    ({}, (1,)),  # two tasks on this node: one device per local rank, as JAX does
    ({"SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_LOCALID": "0"}, None),  # one task per node: all devices
    ({"SLURM_GPUS_PER_TASK": "1"}, None),  # Slurm already bound one GPU to each task
    ({"JAX_LOCAL_DEVICE_IDS": "2,3"}, (2, 3)),  # JAX's own override wins, as in JAX
])
def test_slurm_local_device_ids(extra: dict[str, str], local_device_ids: tuple[int, ...] | None) -> None:
    cluster = detect_cluster(SLURM_STEP | extra)
    assert cluster is not None and cluster.local_device_ids == local_device_ids


def test_slurm_batch_script_is_a_single_process(caplog: pytest.LogCaptureFixture) -> None:
    # The batch script sees the job's task count but runs alone: joining would wait forever.
    batch = {k: v for k, v in SLURM_STEP.items() if not k.startswith("SLURM_STEP")}
    assert detect_cluster(batch | {"SLURM_PROCID": "0", "SLURM_LOCALID": "0"}) is None
    assert "srun" in caplog.text  # and the user hears why


@pytest.mark.parametrize("environ, jax_cluster", [
    (SLURM_STEP, "SlurmCluster"),
    ({**OMPI_RANK, "OMPI_MCA_orte_hnp_uri": OMPI_URI}, "OmpiCluster"),
])
def test_agrees_with_jax_detection(monkeypatch: pytest.MonkeyPatch, no_cluster_env: None,
                                   environ: dict[str, str], jax_cluster: str) -> None:
    from jax._src import clusters  # JAX's detectors read os.environ, so set it for them

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    theirs = getattr(clusters, jax_cluster)
    assert theirs.is_env_present()
    ours = detect_cluster(os.environ)
    assert ours is not None
    assert ours.coordinator_address == theirs.get_coordinator_address(None, None)
    assert (ours.num_processes, ours.process_id) == (theirs.get_process_count(), theirs.get_process_id())


def test_open_mpi() -> None:
    assert detect_cluster({**OMPI_RANK, "OMPI_MCA_orte_hnp_uri": OMPI_URI}) == ClusterEnv(
        f"10.96.0.1:{61440 + (1531576320 // 4096) % 4096}", 8, 5, (1,), "open-mpi")
    # Open MPI 5 has no hnp URI: rank 0's host comes from MASTER_ADDR.
    cluster = detect_cluster({**OMPI_RANK, "MASTER_ADDR": "node0", "MASTER_PORT": "2345"})
    assert cluster is not None and cluster.coordinator_address == "node0:2345"
    with pytest.raises(HoloError, match="HOLO_COORDINATOR"):
        detect_cluster(OMPI_RANK)


def test_torch_style_variables() -> None:
    environ = {"MASTER_ADDR": "trainer-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "4", "RANK": "2"}
    assert detect_cluster(environ) == ClusterEnv("trainer-master-0:23456", 4, 2, None,
                                                 "MASTER_ADDR/WORLD_SIZE/RANK")


def test_k8s_indexed_job() -> None:
    pod = {"JOB_COMPLETION_INDEX": "2", "HOSTNAME": "train-2", "HOLO_K8S_SUBDOMAIN": "jax-svc"}
    assert detect_cluster(pod | {"WORLD_SIZE": "4"}) == ClusterEnv(
        "train-0.jax-svc:55527", 4, 2, None, "k8s-indexed-job")
    with pytest.raises(HoloError, match="HOLO_NUM_PROCESSES"):
        detect_cluster(pod)
    # The process count is static, so the pod spec can state it once for every pod.
    cluster = detect_cluster(pod | {"HOLO_NUM_PROCESSES": "4"})
    assert cluster is not None
    assert (cluster.num_processes, cluster.process_id) == (4, 2)
    assert cluster.source == "k8s-indexed-job + HOLO_* variables"


def test_precedence() -> None:
    # launch_local inside an srun step: its HOLO_* variables describe the processes.
    assert detect_cluster(SLURM_STEP | HOLO) == ClusterEnv("127.0.0.1:4321", 2, 1, None, "HOLO_* variables")
    # mpirun inside a Slurm allocation started the processes, not srun.
    cluster = detect_cluster(SLURM_STEP | OMPI_RANK | {"OMPI_MCA_orte_hnp_uri": OMPI_URI})
    assert cluster is not None and cluster.source == "open-mpi"
    # JAX_COORDINATOR_ADDRESS beats a scheduler's address (as in JAX), but not ours.
    cluster = detect_cluster(SLURM_STEP | {"JAX_COORDINATOR_ADDRESS": "head:999"})
    assert cluster is not None and cluster.coordinator_address == "head:999"
    cluster = detect_cluster(HOLO | {"JAX_COORDINATOR_ADDRESS": "head:999"})
    assert cluster is not None and cluster.coordinator_address == "127.0.0.1:4321"
    # Explicit arguments beat everything, field by field.
    cluster = resolve_cluster(process_id=0, environ=SLURM_STEP)
    assert cluster is not None
    assert (cluster.process_id, cluster.num_processes, cluster.source) == (0, 4, "slurm + arguments")
    # With all three given, the environment is not read, so a broken variable cannot matter.
    assert resolve_cluster("h:1", 2, 0, environ={"HOLO_NUM_PROCESSES": "two"}) == ClusterEnv(
        "h:1", 2, 0, None, "arguments")


def test_no_cluster_is_a_single_process() -> None:
    assert detect_cluster({"HOME": "/root", "PATH": "/bin"}) is None
    assert resolve_cluster(environ={}) is None


@pytest.mark.parametrize("environ, message", [
    (HOLO | {"HOLO_PROCESS_ID": "2"}, "process id 2 .* is outside 0..1"),
    (HOLO | {"HOLO_PROCESS_ID": "-1"}, "process id -1"),
    (HOLO | {"HOLO_NUM_PROCESSES": "0"}, "at least 1"),
    (HOLO | {"HOLO_NUM_PROCESSES": "two"}, "HOLO_NUM_PROCESSES='two' is not an integer"),
    (HOLO | {"HOLO_COORDINATOR": "localhost"}, "not host:port"),
    (HOLO | {"HOLO_COORDINATOR": "127.0.0.1:70000"}, "not host:port"),
    ({"HOLO_COORDINATOR": "127.0.0.1:4321"}, "set all of HOLO_COORDINATOR"),
    (SLURM_STEP | {"SLURM_STEP_TASKS_PER_NODE": "2(x"}, "tasks-per-node"),
    (SLURM_STEP | {"JAX_LOCAL_DEVICE_IDS": "0;1"}, "JAX_LOCAL_DEVICE_IDS"),
])
def test_bad_values_raise_one_sentence(environ: dict[str, str], message: str) -> None:
    with pytest.raises(HoloError, match=message) as caught:
        detect_cluster(environ)
    assert "\n" not in str(caught.value)


def test_partial_arguments_without_a_cluster_raise() -> None:
    with pytest.raises(HoloError, match="pass all three"):
        resolve_cluster(num_processes=2, environ={})


def test_initialize_single_process_is_a_no_op(no_cluster_env: None) -> None:
    assert distributed.initialize() is None
    assert not jax.distributed.is_initialized()
    summary = distributed.describe()
    assert summary["process_count"] == 1 and summary["cluster"] == "single process"
    assert summary["device_count"] == jax.device_count()


def test_initialize_after_devices_exist_raises(no_cluster_env: None) -> None:
    jax.devices()  # this pytest process has long created its devices; make sure
    with pytest.raises(HoloError, match="first thing in main"):
        distributed.initialize("127.0.0.1:1", 2, 0)
    assert not jax.distributed.is_initialized()
