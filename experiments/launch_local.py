"""Run one experiment as P local JAX processes with D simulated CPU devices each.

    python -m experiments.launch_local --processes 2 --devices-per-process 4 \\
        -- experiments.pretrain --workdir /tmp/run --steps 20

starts `python -m experiments.pretrain --workdir /tmp/run --steps 20` P times with

    HOLO_COORDINATOR=127.0.0.1:<free port>  HOLO_NUM_PROCESSES=P  HOLO_PROCESS_ID=i
    JAX_PLATFORMS=cpu  XLA_FLAGS=... --xla_force_host_platform_device_count=D

The launched module must call `holo_jax.runtime.initialize()` before it touches JAX; that
call reads the variables above and joins the P processes over loopback with gloo CPU
collectives. Output lines are prefixed with `[p<i>]` (stdout to stdout, stderr to stderr).

Stopping:

- a process that exits non-zero or is killed by a signal is named in one line on stderr
  (`process 1 (pid 4242) was killed by SIGKILL; ...`); the others get SIGTERM (SIGKILL after
  the grace period) and the launcher exits with the failed process's status (128 + N for
  signal N, as a shell reports it);
- SIGINT or SIGTERM to the launcher is forwarded as SIGTERM, the processes get the grace
  period to finish (e.g. a checkpoint), and the launcher exits with 128 + the signal number;
- `--timeout` (default 2 hours, so a hung collective cannot hold a machine forever; 0 means
  no limit) does the same and exits with 124;
- if the launcher itself dies without a chance to clean up (SIGKILL, the OOM killer), the
  kernel kills the processes too: each one asks for SIGKILL on its parent's death
  (`prctl(PR_SET_PDEATHSIG)`). That is Linux-only; elsewhere (macOS) a SIGKILLed launcher
  leaves its processes running, and since each leads its own process group they are stopped
  with `kill -- -<pid>` of each.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib.util
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import IO

from holo_jax.errors import HoloError, exit_on_user_error
from holo_jax.runtime.scheduler_env import HOLO_COORDINATOR, HOLO_NUM_PROCESSES, HOLO_PROCESS_ID

DEFAULT_GRACE_S = 30.0
DEFAULT_TIMEOUT_S = 2 * 3600.0  # longer than any local run we make, short enough to free a hung box
TIMEOUT_EXIT_STATUS = 124  # as coreutils `timeout`
_POLL_S = 0.05
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def xla_flags_with_device_count(flags: str, devices: int) -> str:
    """`flags` with any device-count flag replaced by one for `devices`; other flags kept."""
    kept = [f for f in flags.split() if not re.fullmatch(rf"{_DEVICE_COUNT_FLAG}(=\S*)?", f)]
    return " ".join([*kept, f"{_DEVICE_COUNT_FLAG}={devices}"])


def _free_port() -> int:
    # The port is released before the coordinator binds it; another program could take it
    # in between, but on a dev machine that race is rare and reported clearly by initialize().
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exit_status(returncode: int) -> int:
    """Popen's -N (killed by signal N) as the shell reports it, 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _how_it_ended(returncode: int) -> str:
    """`exited with status 3` or `was killed by SIGKILL`, from Popen's returncode."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:  # a real-time signal has no name
        name = f"signal {-returncode}"
    return f"was killed by {name}"


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGKILL when the launcher dies; None off Linux.

    The libc lookup happens here, before fork: between fork and exec the child should do as
    little as possible, since a `dlopen` there could deadlock on a lock that another thread of
    the launcher held at fork time; calling the already-resolved `prctl` is a plain syscall.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    launcher = os.getpid()

    def die_with_parent() -> None:
        # The kernel sends the signal when the thread that forked us exits. That is the
        # thread running launch(), which outlives the children (it waits for them).
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            # Without the guarantee the child could outlive us as an orphan: do not start it.
            # (A raise here would surface as an opaque SubprocessError in the launcher.)
            os.write(2, b"prctl(PR_SET_PDEATHSIG) failed, so the process was not started\n")
            os._exit(127)
        if os.getppid() != launcher:
            os._exit(127)  # the launcher died before prctl took effect: nobody will stop us

    return die_with_parent


@dataclasses.dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    pumps: list[threading.Thread]

    def signal(self, signum: int) -> None:
        # Each child leads its own process group (start_new_session), so this reaches any
        # helpers it started too, and a Ctrl-C in the terminal reaches only the launcher.
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass  # already gone


def _pump(source: IO[bytes], sink: IO[str], prefix: str, lock: threading.Lock) -> None:
    """Copy `source` to `sink` line by line with `prefix`, as the lines arrive."""
    for raw in iter(source.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        with lock:
            sink.write(prefix + (line if line.endswith("\n") else line + "\n"))
            sink.flush()
    source.close()


def _start(module: str, args: Sequence[str], env: dict[str, str],
           preexec_fn: Callable[[], None] | None) -> _Child:
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=env,
        stdin=subprocess.DEVNULL,  # P processes reading one terminal would steal each other's input
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # runs before preexec_fn, so the death signal survives it
        preexec_fn=preexec_fn,
    )
    return _Child(proc, [])


def _start_pumps(index: int, child: _Child, out: IO[str], err: IO[str], lock: threading.Lock) -> None:
    assert child.proc.stdout is not None and child.proc.stderr is not None
    child.pumps = [
        threading.Thread(target=_pump, args=(stream, sink, f"[p{index}] ", lock), daemon=True)
        for stream, sink in ((child.proc.stdout, out), (child.proc.stderr, err))
    ]
    for pump in child.pumps:
        pump.start()


def _stop(children: Sequence[_Child], grace_s: float) -> None:
    """SIGTERM the running children, wait up to `grace_s`, then SIGKILL what is left."""
    running = [c for c in children if c.proc.poll() is None]
    for child in running:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(c.proc.poll() is None for c in running) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    for child in running:
        if child.proc.poll() is None:
            child.signal(signal.SIGKILL)
            child.proc.wait()


def launch(
    processes: int,
    devices_per_process: int,
    module: str,
    args: Sequence[str] = (),
    *,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> int:
    """Run `python -m module *args` as `processes` joined JAX processes; return the exit status.

    `env` replaces the inherited environment (the launcher's variables are added to it);
    `timeout` bounds the whole run in seconds (None or 0: no limit). See the module docstring
    for the behaviour.
    """
    if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
        raise HoloError(f"--timeout must be a number of seconds >= 0 (0 means no limit), got {timeout}")
    if not (math.isfinite(grace_s) and grace_s >= 0):
        raise HoloError(f"--grace must be a number of seconds >= 0, got {grace_s}")
    if processes < 1:
        raise HoloError(f"--processes must be at least 1, got {processes}")
    if devices_per_process < 1:
        raise HoloError(f"--devices-per-process must be at least 1, got {devices_per_process}")
    if port is not None and not 0 < port < 65536:
        raise HoloError(f"--port must be in 1..65535, got {port}")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package is missing, or the name is malformed
        found = None
    if found is None:
        raise HoloError(f"cannot find module {module!r}; give a dotted module name importable from the "
                        f"current directory, e.g. experiments.pretrain")

    base = dict(os.environ if env is None else env)
    coordinator = f"127.0.0.1:{port or _free_port()}"
    out, err, lock = sys.stdout, sys.stderr, threading.Lock()

    def child_env(index: int) -> dict[str, str]:
        return base | {
            HOLO_COORDINATOR: coordinator,
            HOLO_NUM_PROCESSES: str(processes),
            HOLO_PROCESS_ID: str(index),
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": xla_flags_with_device_count(base.get("XLA_FLAGS", ""), devices_per_process),
            "PYTHONUNBUFFERED": "1",  # so output streams live instead of at exit
        }

    def note(message: str) -> None:
        with lock:
            err.write(f"launch_local: {message}\n")
            err.flush()

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    # Signal handlers can only be installed from the main thread; called from another thread
    # the launcher still stops its children on failure and timeout.
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    children: list[_Child] = []
    die_with_parent = _die_with_parent_hook()
    try:
        for index in range(processes):  # appended one by one so `finally` stops the ones started
            children.append(_start(module, args, child_env(index), die_with_parent))
        # Output threads start only once every child is forked, so no fork happens while one of
        # our threads might hold a lock (the children still run die_with_parent between fork
        # and exec). Until then their output waits in the pipe buffers.
        for index, child in enumerate(children):
            _start_pumps(index, child, out, err, lock)
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            codes = [c.proc.poll() for c in children]
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None:
                code = codes[failed]
                assert code is not None
                note(f"process {failed} (pid {children[failed].proc.pid}) {_how_it_ended(code)}; "
                     f"stopping the other processes")
                _stop(children, grace_s)
                return _exit_status(code)
            if all(code == 0 for code in codes):
                return 0
            if received:
                note(f"got {signal.Signals(received[0]).name}; forwarding SIGTERM to the processes")
                _stop(children, grace_s)
                return 128 + received[0]
            if deadline is not None and time.monotonic() > deadline:
                note(f"timed out after {timeout:g} s; stopping the processes")
                _stop(children, grace_s)
                return TIMEOUT_EXIT_STATUS
            time.sleep(_POLL_S)
    finally:
        _stop(children, 0.0)  # only does something if we got here through an exception
        for child in children:
            for pump in child.pumps:
                # A grandchild that inherited the pipe could keep it open forever; the pumps
                # are daemon threads, so do not wait long for them.
                pump.join(timeout=5.0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.launch_local",
        usage="%(prog)s --processes P --devices-per-process D [options] -- MODULE [ARGS...]",
        description="Run MODULE as P local JAX processes joined by jax.distributed (gloo CPU "
                    "collectives). MODULE must call holo_jax.runtime.initialize().",
    )
    parser.add_argument("--processes", type=int, required=True, help="number of processes (P)")
    parser.add_argument("--devices-per-process", type=int, required=True,
                        help="simulated CPU devices per process (D)")
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="stop everything after this many seconds and exit with 124; 0 means "
                             "no limit (default: %(default)g, 2 hours)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                        help="seconds the processes get after SIGTERM before SIGKILL "
                             "(default: %(default)s)")
    return parser


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if "--" not in argv:
        if any(a in ("-h", "--help") for a in argv):
            parser.print_help()
            return 0
        raise HoloError("put `--` between the launcher options and the module to run, e.g. "
                        "--processes 2 --devices-per-process 4 -- experiments.pretrain --workdir /tmp/run")
    split = argv.index("--")
    options = parser.parse_args(argv[:split])
    if split + 1 == len(argv):
        raise HoloError("name the module to run after `--`, e.g. -- experiments.pretrain --workdir /tmp/run")
    module, *args = argv[split + 1:]
    return launch(options.processes, options.devices_per_process, module, args,
                  timeout=options.timeout, port=options.port, grace_s=options.grace)


if __name__ == "__main__":
    raise SystemExit(main())
