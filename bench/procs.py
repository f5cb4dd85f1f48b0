"""Child processes of a bench run: start on loopback, wait until ready, measure, always tear down."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
STOP_GRACE_S = 15.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A component did not start or behave; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # if the bench itself is killed with SIGKILL, no child is left running
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine (all cores) spent running processes, from /proc/stat.

    Interrupt and softirq time are left out: loopback TCP is processed there, and most of it is the
    bench's own traffic, which per-process times do not include.
    """
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = values
    return (user + nice + system + steal) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from the ppid in /proc/<n>/stat."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a live process, in KiB."""
    out = {"rss_kb": 0, "hwm_kb": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kb"] = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                out["hwm_kb"] = int(line.split()[1])
    except OSError:
        pass
    return out


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    # the process and every process it started count as one (relay serve --processes N)
    tree: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with code {self.popen.returncode}; see {self.log}\n" + self.tail())

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return [self.pid, *descendants(self.pid)] if self.tree else [self.pid]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def memory(self) -> dict[str, int]:
        out = {"rss_kb": 0, "hwm_kb": 0}
        for pid in self.pids():
            for key, kb in memory_kb(pid).items():
                out[key] += kb
        return out

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        if self.tree:
            # whatever the process started and left behind: its session's process group is its own
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass
class Cluster:
    """Owns every process the bench starts and its temporary directory."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relay-bench-")))
    children: list[Child] = field(default_factory=list)
    keep: bool = False

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdout: int | IO[bytes] | None = None,
        tree: bool = False,
    ) -> Child:
        log = self.root / f"{name}.log"
        with log.open("ab") as err:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=os.getcwd(),
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else err,
                stderr=err,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, popen, log, tree)
        self.children.append(child)
        return child

    def python(
        self,
        name: str,
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdout: int | None = None,
        tree: bool = False,
    ) -> Child:
        return self.start(name, [sys.executable, "-m", module, *args], env, stdout, tree)

    def stop(self, child: Child, grace: float = STOP_GRACE_S) -> None:
        child.stop(grace)
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        # SIGTERM everything first so slow shutdowns overlap, then wait for each
        for child in reversed(self.children):
            if child.alive():
                child.popen.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_until(what: str, predicate: Any, timeout: float, child: Child | None = None, interval: float = 0.05) -> Any:
    """Poll ``predicate()`` until truthy; BenchError after ``timeout`` s or if ``child`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if child is not None:
            child.check()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{what}: not ready within {timeout:g} s" + (f"; see {child.log}\n{child.tail()}" if child else "")
            )
        time.sleep(interval)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def http_post_json(url: str, doc: object, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_get_json(url: str, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_http(url: str, child: Child, timeout: float = 30.0) -> None:
    wait_until(f"{child.name} at {url}", lambda: http_get(url)[0] == 200, timeout, child)


def start_redis(cluster: Cluster) -> tuple[Child, int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise BenchError("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    data = cluster.root / "redis"
    data.mkdir()
    child = cluster.start(
        "redis",
        [
            exe,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
    )
    wait_until("redis-server", lambda: redis_ping(port), 10, child)
    return child, port


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
