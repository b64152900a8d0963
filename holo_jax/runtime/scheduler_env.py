"""Where this process sits in a multi-process job, read from the scheduler's environment.

Pure functions of an environment mapping (no JAX import, no network), so they can be tested
on recorded environments and used by the launcher and the topology planner without joining
anything. `holo_jax.runtime.distributed.initialize()` joins the job these functions describe.

Values are resolved in this order, field by field:

1. explicit arguments (`resolve_cluster`);
2. `HOLO_COORDINATOR` / `HOLO_NUM_PROCESSES` / `HOLO_PROCESS_ID` (set by
   `python -m experiments.launch_local`, or by hand in a pod spec);
3. the scheduler's own variables: Open MPI (`mpirun`), PyTorch-style
   `MASTER_ADDR`/`WORLD_SIZE`/`RANK` (Kubeflow PyTorchJob, torchrun), Slurm (`srun`),
   Kubernetes indexed Jobs / JobSets;
4. nothing found: a single process.

We keep JAX's conventions (`jax._src.clusters`) so both agree on the same job: the Slurm and
Open MPI coordinator ports derived from the job id, JAX's Kubernetes port, and JAX's overrides
`JAX_COORDINATOR_ADDRESS`, `JAX_COORDINATOR_PORT` and `JAX_LOCAL_DEVICE_IDS`; the tests check
our Slurm and Open MPI answers against JAX's `SlurmCluster` and `OmpiCluster`. We add what JAX
lacks: full Slurm hostlist expansion, Open MPI 5 (no `OMPI_MCA_orte_hnp_uri`) via
`MASTER_ADDR`, Kubernetes without API access or the `kubernetes` package, PyTorch-style
variables, and a device policy that does not pin a one-process-per-node job to its first GPU
(JAX pins every Slurm/Open MPI process to device `local rank`: jax-ml/jax#16788).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence

from holo_jax.errors import HoloError

logger = logging.getLogger(__name__)

HOLO_COORDINATOR = "HOLO_COORDINATOR"
HOLO_NUM_PROCESSES = "HOLO_NUM_PROCESSES"
HOLO_PROCESS_ID = "HOLO_PROCESS_ID"
# Name of the headless Service used as the pod subdomain of a Kubernetes indexed Job.
# The downward API cannot expose `spec.subdomain`, so the pod spec has to repeat it.
HOLO_K8S_SUBDOMAIN = "HOLO_K8S_SUBDOMAIN"

# JAX's ports, reused so a job's coordinator address is the one `jax.distributed` would
# pick: Slurm and Open MPI map the job id into the top 4096 ports of the ephemeral range,
# Kubernetes uses a fixed port (the one a pod spec declares for JAX). We also use that fixed
# port when MASTER_ADDR comes without MASTER_PORT.
_EPHEMERAL_TOP_PORTS = (65535 - 2**12 + 1, 2**12)
_FIXED_DEFAULT_PORT = 55527


@dataclasses.dataclass(frozen=True)
class ClusterEnv:
    """Where this process sits in a multi-process job.

    `local_device_ids=None` means the process drives every device it can see.
    `source` names where the values came from (for logs), e.g. `"slurm"` or
    `"k8s-indexed-job + HOLO_* variables"`.
    """

    coordinator_address: str
    num_processes: int
    process_id: int
    local_device_ids: tuple[int, ...] | None
    source: str

    def __post_init__(self) -> None:
        # Validate on construction so that no invalid ClusterEnv can exist.
        split_address(self.coordinator_address, self.source)
        if self.num_processes < 1:
            raise HoloError(f"process count {self.num_processes} (from {self.source}) must be at least 1")
        if not 0 <= self.process_id < self.num_processes:
            raise HoloError(
                f"process id {self.process_id} (from {self.source}) is outside 0..{self.num_processes - 1}; "
                f"give each of the {self.num_processes} processes a distinct id below the process count"
            )
        if self.local_device_ids is not None and any(i < 0 for i in self.local_device_ids):
            raise HoloError(f"local device ids {list(self.local_device_ids)} (from {self.source}) "
                            f"must not be negative")


@dataclasses.dataclass(frozen=True)
class _Fields:
    """Cluster values as far as one source knows them; None means "this source does not say"."""

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def _missing(self) -> list[str]:
        return [
            name
            for name in ("coordinator_address", "num_processes", "process_id")
            if getattr(self, name) is None
        ]

    def any_set(self) -> bool:
        return len(self._missing()) < 3

    def is_complete(self) -> bool:
        return not self._missing()

    def over(self, lower: _Fields) -> _Fields:
        """These values where they are set, `lower`'s elsewhere."""
        if not (self.any_set() or self.local_device_ids is not None):
            return lower
        values = {}
        for field in dataclasses.fields(self):
            if field.name != "source":
                mine = getattr(self, field.name)
                values[field.name] = getattr(lower, field.name) if mine is None else mine
        return _Fields(source=f"{lower.source} + {self.source}", **values)

    def finish(self) -> ClusterEnv:
        missing = self._missing()
        if missing:
            words = {"coordinator_address": "coordinator address", "num_processes": "process count",
                     "process_id": "process id"}
            variables = {"coordinator_address": HOLO_COORDINATOR, "num_processes": HOLO_NUM_PROCESSES,
                         "process_id": HOLO_PROCESS_ID}
            raise HoloError(
                f"{self.source} does not give the {' or '.join(words[n] for n in missing)}: "
                f"set {', '.join(variables[n] for n in missing)} or pass {', '.join(missing)} to initialize()"
            )
        assert self.coordinator_address is not None and self.num_processes is not None
        assert self.process_id is not None
        return ClusterEnv(self.coordinator_address, self.num_processes, self.process_id,
                          self.local_device_ids, self.source)


# ---------------------------------------------------------------------------------------
# Parsing helpers


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise HoloError(f"{name}={raw!r} is not an integer; fix or unset it") from None


def split_address(address: str, source: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port` -> (host, port), or a HoloError naming `source`."""
    match = re.fullmatch(r"(\[[^\]\s]+\]|[^\s:\[\]]+):(\d+)", address.strip())
    port = int(match.group(2)) if match else 0
    if not match or not 0 < port < 65536:
        raise HoloError(f"coordinator address {address!r} (from {source}) is not host:port "
                        f"with a port in 1..65535, e.g. 10.0.0.1:1234")
    return match.group(1), port


def _join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _coordinator_port(environ: Mapping[str, str], default: int) -> int:
    """JAX_COORDINATOR_PORT overrides every scheduler's default port, as it does in JAX."""
    port = _env_int(environ, "JAX_COORDINATOR_PORT")
    return default if port is None else port


def _master_port(environ: Mapping[str, str]) -> int:
    return _coordinator_port(environ, _env_int(environ, "MASTER_PORT") or _FIXED_DEFAULT_PORT)


def _split_top_level(spec: str) -> list[str]:
    """Split a Slurm hostlist at the commas that are not inside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise HoloError(f"Slurm host list {spec!r} has unbalanced brackets")
        if ch == "," and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    if depth:
        raise HoloError(f"Slurm host list {spec!r} has unbalanced brackets")
    items.append(spec[start:])
    return [item for item in items if item]


def _expand_ranges(body: str, spec: str) -> list[str]:
    """`01-03,07` -> ['01', '02', '03', '07'], keeping the zero padding of each range start."""
    out = []
    for part in body.split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise HoloError(f"Slurm host list {spec!r} has a bad range {part!r} (expected N or N-M)")
        if not dash:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise HoloError(f"Slurm host list {spec!r} has a descending range {part!r}")
        out.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1))
    return out


def _expand_item(item: str, spec: str) -> list[str]:
    bracket = item.find("[")
    if bracket < 0:
        return [item]
    close = item.index("]", bracket)  # balanced: checked by _split_top_level
    tails = _expand_item(item[close + 1:], spec)
    numbers = _expand_ranges(item[bracket + 1:close], spec)
    return [item[:bracket] + number + tail for number in numbers for tail in tails]


def expand_hostlist(spec: str) -> list[str]:
    """Expand a Slurm hostlist such as `gpu[01-04,07],login1` or `r[1-2]n[1-2]` into host names.

    JAX's Slurm detection only extracts the first host; the topology planner needs them all.
    """
    hosts = [host for item in _split_top_level(spec.strip()) for host in _expand_item(item, spec)]
    if not hosts:
        raise HoloError(f"Slurm host list {spec!r} names no hosts")
    return hosts


def _expand_tasks_per_node(spec: str) -> list[int]:
    """Slurm's `2(x3),1` -> [2, 2, 2, 1]."""
    counts = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            raise HoloError(f"Slurm tasks-per-node value {spec!r} is not like 2(x3),1")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def _one_device_per_local_rank(
    local_rank: int | None, processes_on_node: int | None
) -> tuple[int, ...] | None:
    """Several processes on a node: process k drives local device k (JAX's convention).

    With one process per node the process drives every device it sees; JAX would pin it to
    device 0 instead (jax-ml/jax#16788).
    """
    if local_rank is None or processes_on_node is None or processes_on_node <= 1:
        return None
    return (local_rank,)


# ---------------------------------------------------------------------------------------
# Sources, in the order they are consulted (innermost launcher first: `mpirun` or torchrun
# inside a Slurm allocation start the processes, so their variables describe them).


def _from_holo_variables(environ: Mapping[str, str]) -> _Fields:
    coordinator = environ.get(HOLO_COORDINATOR, "").strip() or None
    return _Fields(
        source="HOLO_* variables",
        coordinator_address=coordinator,
        num_processes=_env_int(environ, HOLO_NUM_PROCESSES),
        process_id=_env_int(environ, HOLO_PROCESS_ID),
    )


def _from_open_mpi(environ: Mapping[str, str]) -> _Fields | None:
    if "OMPI_COMM_WORLD_SIZE" not in environ:
        return None
    coordinator = None
    master = environ.get("MASTER_ADDR", "").strip()
    hnp_uri = environ.get("OMPI_MCA_orte_hnp_uri", "")  # set by mpirun of Open MPI <= 4
    if master:
        coordinator = _join_address(master, _master_port(environ))
    elif hnp_uri:
        # e.g. "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911": the job id, then mpirun's
        # addresses. Like JAX, coordinate on mpirun's first address, port from the job id.
        host = re.search(r"tcp://([^,:]+)|tcp6://\[([^,\]]+)", hnp_uri)
        job_id = re.match(r"(\d+)\.", hnp_uri)
        if not host or not job_id:
            raise HoloError(f"OMPI_MCA_orte_hnp_uri={hnp_uri!r} has no job id and tcp address; "
                            f"export MASTER_ADDR=<host of rank 0> instead")
        base, span = _EPHEMERAL_TOP_PORTS
        port = _coordinator_port(environ, base + (int(job_id.group(1)) // span) % span)
        coordinator = _join_address(host.group(1) or host.group(2), port)
    return _Fields(
        source="open-mpi",
        coordinator_address=coordinator,
        num_processes=_env_int(environ, "OMPI_COMM_WORLD_SIZE"),
        process_id=_env_int(environ, "OMPI_COMM_WORLD_RANK"),
        local_device_ids=_one_device_per_local_rank(_env_int(environ, "OMPI_COMM_WORLD_LOCAL_RANK"),
                                                    _env_int(environ, "OMPI_COMM_WORLD_LOCAL_SIZE")),
    )


def _from_torch_style(environ: Mapping[str, str]) -> _Fields | None:
    """MASTER_ADDR/WORLD_SIZE/RANK, as Kubeflow's PyTorchJob and torchrun set them."""
    if not all(environ.get(name, "").strip() for name in ("MASTER_ADDR", "WORLD_SIZE", "RANK")):
        return None
    port = _master_port(environ)
    return _Fields(
        source="MASTER_ADDR/WORLD_SIZE/RANK",
        coordinator_address=_join_address(environ["MASTER_ADDR"].strip(), port),
        num_processes=_env_int(environ, "WORLD_SIZE"),
        process_id=_env_int(environ, "RANK"),
        local_device_ids=_one_device_per_local_rank(_env_int(environ, "LOCAL_RANK"),
                                                    _env_int(environ, "LOCAL_WORLD_SIZE")),
    )


def _from_slurm(environ: Mapping[str, str]) -> _Fields | None:
    # Only an `srun` step counts (SLURM_STEP_NODELIST, JAX's criterion too). In the batch
    # script itself SLURM_NTASKS counts the tasks the job *may* start while exactly one
    # process runs; trusting it would make process 0 wait for peers that never come.
    if "SLURM_STEP_NODELIST" not in environ:
        if _env_int(environ, "SLURM_NTASKS") not in (None, 1) and "SLURM_JOB_NODELIST" in environ:
            logger.warning("Slurm batch script with several tasks but no srun step: running as a "
                           "single process (start the job with `srun python -m ...`)")
        return None
    hosts = expand_hostlist(environ["SLURM_STEP_NODELIST"])
    num_processes = _env_int(environ, "SLURM_STEP_NUM_TASKS") or _env_int(environ, "SLURM_NTASKS")
    job_id = _env_int(environ, "SLURM_JOB_ID") or 0
    base, span = _EPHEMERAL_TOP_PORTS
    coordinator = _join_address(hosts[0], _coordinator_port(environ, base + job_id % span))

    processes_on_node = _env_int(environ, "SLURM_NTASKS_PER_NODE")
    per_node_spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    node = environ.get("SLURMD_NODENAME")
    if per_node_spec and node in hosts:
        counts = _expand_tasks_per_node(per_node_spec)
        if len(counts) == len(hosts):
            processes_on_node = counts[hosts.index(node)]
    # With --gpus-per-task Slurm has already narrowed each task's visible devices.
    bound = bool(environ.get("SLURM_GPUS_PER_TASK"))
    return _Fields(
        source="slurm",
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=_env_int(environ, "SLURM_PROCID"),
        local_device_ids=None if bound else _one_device_per_local_rank(
            _env_int(environ, "SLURM_LOCALID"), processes_on_node),
    )


def _from_k8s_indexed_job(environ: Mapping[str, str]) -> _Fields | None:
    """An indexed Job (or a JobSet of one Job): the pod index is the process id.

    Kubernetes names the pods `<job>-<index>`, reachable as `<job>-<index>.<subdomain>`
    through the headless Service named in the pod's `subdomain`, so process 0 is
    `<job>-0.<subdomain>`. The process count (`parallelism`) is not in the environment:
    WORLD_SIZE or HOLO_NUM_PROCESSES must say it (JAX asks the API server instead, which
    needs the `kubernetes` package and RBAC to read pods).
    """
    index = _env_int(environ, "JOB_COMPLETION_INDEX")
    if index is None:
        return None
    port = _master_port(environ)
    coordinator = None
    hostname = environ.get("HOSTNAME", "")
    subdomain = environ.get(HOLO_K8S_SUBDOMAIN, "").strip()
    if environ.get("MASTER_ADDR", "").strip():
        coordinator = _join_address(environ["MASTER_ADDR"].strip(), port)
    elif subdomain and hostname.endswith(f"-{index}"):
        job_name = hostname[: -len(f"-{index}")]
        coordinator = _join_address(f"{job_name}-0.{subdomain}", port)
    return _Fields(
        source="k8s-indexed-job",
        coordinator_address=coordinator,
        num_processes=_env_int(environ, "WORLD_SIZE"),
        process_id=index,
    )


_SCHEDULERS: tuple[Callable[[Mapping[str, str]], _Fields | None], ...] = (
    _from_open_mpi,
    _from_torch_style,
    _from_slurm,
    _from_k8s_indexed_job,
)


def _detect_fields(environ: Mapping[str, str]) -> _Fields | None:
    holo = _from_holo_variables(environ)
    if holo.is_complete():
        # launch_local set everything: ignore the scheduler around it (e.g. an salloc shell).
        fields = holo
    else:
        found = next((f for f in (detect(environ) for detect in _SCHEDULERS) if f is not None), None)
        if found is None:
            if holo.any_set():
                names = (HOLO_COORDINATOR, HOLO_NUM_PROCESSES, HOLO_PROCESS_ID)
                given = ", ".join(n for n in names if environ.get(n))
                raise HoloError(f"{given} set but no scheduler was detected to supply the rest: "
                                f"set all of {', '.join(names)} or none")
            return None
        jax_address = environ.get("JAX_COORDINATOR_ADDRESS", "").strip()
        if jax_address:  # JAX lets this beat its scheduler detection; so do we
            found = dataclasses.replace(found, coordinator_address=jax_address)
        fields = holo.over(found)
    jax_ids = environ.get("JAX_LOCAL_DEVICE_IDS", "").strip()
    if jax_ids:
        try:
            ids = tuple(int(i) for i in jax_ids.split(","))
        except ValueError:
            raise HoloError(f"JAX_LOCAL_DEVICE_IDS={jax_ids!r} is not a comma-separated list of "
                            f"integers") from None
        fields = dataclasses.replace(fields, local_device_ids=ids)
    return fields


def detect_cluster(environ: Mapping[str, str] = os.environ) -> ClusterEnv | None:
    """The multi-process job described by `environ`, or None for a single process.

    HOLO_* variables win over scheduler variables, field by field; a scheduler environment
    that leaves a value unknown (and no HOLO_* variable supplies it) raises HoloError.
    """
    fields = _detect_fields(environ)
    return None if fields is None else fields.finish()


def resolve_cluster(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ClusterEnv | None:
    """Explicit values over `detect_cluster(environ)`, field by field; None for a single process."""
    explicit = _Fields(
        source="arguments",
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=None if local_device_ids is None else tuple(local_device_ids),
    )
    if explicit.is_complete():
        return explicit.finish()  # the environment is not read: a broken variable cannot matter
    detected = _detect_fields(environ)
    if detected is None:
        if explicit.any_set():
            raise HoloError("initialize() got only some of coordinator_address, num_processes, process_id "
                            "and no cluster was detected to supply the rest: pass all three")
        return None
    return explicit.over(detected).finish()
