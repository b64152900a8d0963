"""experiments.launch_local: real multi-process runs over loopback, and how the launcher stops."""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from experiments import launch_local

REPO = Path(__file__).resolve().parents[2]
JOBS = "tests.runtime._distributed_jobs"


def test_xla_flags_with_device_count() -> None:
    flags = "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8 --xla_bar"
    assert launch_local.xla_flags_with_device_count(flags, 4) == (
        "--xla_cpu_foo=1 --xla_bar --xla_force_host_platform_device_count=4")
    assert launch_local.xla_flags_with_device_count("", 2) == "--xla_force_host_platform_device_count=2"


def _launcher_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.launch_local", *args]


def _env() -> dict[str, str]:
    # Children find the repo's packages however pytest was started.
    return os.environ | {"PYTHONPATH": str(REPO)}


@pytest.mark.timeout(120)
def test_two_processes_sum_a_global_array() -> None:
    result = subprocess.run(
        _launcher_command("--processes", "2", "--devices-per-process", "4", "--timeout", "90",
                          "--", JOBS, "psum"),
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr[-3000:]
    # gloo prints "[Gloo] Rank ..." lines on stdout too; keep the JSON ones.
    reports = {}
    for line in result.stdout.splitlines():
        prefix, _, payload = line.partition(" ")
        if payload.startswith("{"):
            reports[prefix] = json.loads(payload)
    assert sorted(reports) == ["[p0]", "[p1]"]
    rows = 2 * 4 * 3  # processes x devices x _distributed_jobs.ROWS_PER_DEVICE
    expected = sum(range(rows * 2))  # the global array is arange(rows * 2)
    for index, prefix in enumerate(["[p0]", "[p1]"]):
        report = reports[prefix]
        assert report["process_index"] == index
        assert (report["process_count"], report["device_count"], report["local_device_count"]) == (2, 8, 4)
        assert report["cluster"] == "HOLO_* variables" and report["second_initialize_is_noop"]
        assert report["global_shape"] == [rows, 2]
        assert report["sum"] == report["psum"] == expected


@pytest.mark.timeout(60)
def test_failing_process_stops_the_launch(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    status = launch_local.launch(2, 1, JOBS, ["fail"], timeout=45, env=_env(), grace_s=5)
    assert status == 1  # process 1's status, while process 0 was still waiting for it
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert "[p1] RuntimeError: process 1 fails on purpose" in err
    assert re.search(r"^launch_local: process 1 \(pid \d+\) exited with status 1; stopping the other "
                     r"processes$", err, re.MULTILINE), err


@pytest.mark.timeout(60)
def test_busy_coordinator_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    # The coordinator binds [::]:port, so hold the port on the IPv6 wildcard address.
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as busy:
        busy.bind(("::", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status = launch_local.launch(2, 1, JOBS, ["psum"], timeout=45, env=_env(), port=port, grace_s=5)
    assert status == 1
    err = capsys.readouterr().err
    assert f"HoloError: process 0 cannot open the coordinator port {port}" in err


def _read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


@pytest.mark.timeout(60)
def test_sigterm_to_the_launcher_is_forwarded(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        _launcher_command("--processes", "2", "--devices-per-process", "1", "--grace", "10",
                          "--", JOBS, "wait-for-sigterm", str(tmp_path)),
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(launcher.stdout, lines), daemon=True).start()
        ready: set[str] = set()
        while ready != {"[p0] ready", "[p1] ready"}:
            ready.add(lines.get(timeout=30))
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # Both children ran their SIGTERM handler to the end, as a checkpoint save would.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.sigterm", "p1.sigterm"]


@pytest.mark.timeout(60)
def test_timeout_stops_the_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = launch_local.launch(2, 1, JOBS, ["wait-for-sigterm", str(tmp_path)], timeout=2,
                                 env=_env(), grace_s=10)
    assert status == launch_local.TIMEOUT_EXIT_STATUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p0.sigterm", "p1.sigterm"]
    assert "timed out after 2 s" in capsys.readouterr().err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how, sentence, status", [
    ("3", "exited with status 3", 3),
    ("SIGKILL", "was killed by SIGKILL", 128 + signal.SIGKILL),
    ("SIGSEGV", "was killed by SIGSEGV", 128 + signal.SIGSEGV),
])
def test_a_dying_process_is_named_with_its_pid_and_cause(how: str, sentence: str, status: int,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert launch_local.launch(2, 1, JOBS, ["die", how], timeout=45, env=_env(), grace_s=5) == status
    captured = capsys.readouterr()
    pid = re.search(r"^\[p1\] dying (\d+)$", captured.out, re.MULTILINE)
    assert pid, captured.out
    notes = [line for line in captured.err.splitlines() if line.startswith("launch_local:")]
    assert notes == [f"launch_local: process 1 (pid {pid.group(1)}) {sentence}; stopping the other processes"]


def _alive(pid: int) -> bool:
    """Whether `pid` is still running; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.timeout(60)
def test_children_die_with_a_sigkilled_launcher() -> None:
    launcher = subprocess.Popen(
        _launcher_command("--processes", "2", "--devices-per-process", "1", "--", JOBS, "sleep"),
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids: list[int] = []
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(launcher.stdout, lines), daemon=True).start()
        while len(pids) < 2:
            prefix, ready, pid = lines.get(timeout=30).split()
            assert ready == "ready", prefix
            pids.append(int(pid))
        assert all(_alive(pid) for pid in pids)
        # SIGKILL leaves the launcher no chance to stop them (and they ignore SIGTERM anyway).
        launcher.kill()
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in pids if _alive(pid)], "children outlived their launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in pids:  # do not leave sleepers behind if the assertion above failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("argv, message", [
    (["--processes", "0", "--devices-per-process", "4", "--", JOBS], "--processes must be at least 1"),
    (["--processes", "2", "--devices-per-process", "1", "--timeout", "-1", "--", JOBS], "--timeout must be"),
    (["--processes", "2", "--devices-per-process", "1", "--timeout", "nan", "--", JOBS], "--timeout must be"),
    (["--processes", "2", "--devices-per-process", "1", "--grace", "-5", "--", JOBS], "--grace must be"),
    (["--processes", "2", "--devices-per-process", "0", "--", JOBS], "--devices-per-process must be"),
    (["--processes", "2", "--devices-per-process", "4", JOBS], "put `--` between"),
    (["--processes", "2", "--devices-per-process", "4", "--"], "name the module"),
    (["--processes", "2", "--devices-per-process", "4", "--", "no_such.module"], "cannot find module"),
])
def test_launcher_user_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        launch_local.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
