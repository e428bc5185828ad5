"""Processes of the local stack: start them so they can be found and stopped again from any Python process.

A :class:`ProcessRecord` names a process by PID *and* kernel start time, so a recycled PID is never mistaken for
it; :func:`stop_processes` stops records with all their descendants; :func:`spawn` starts a child in its own
session with its output appended to a log. Plus the small helpers every starter needs: free ports, log tails.
Linux only (``/proc``, ``prctl``).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


_PR_SET_PDEATHSIG = 1
# Resolved at import time: dlopen() inside a forked child of a multi-threaded parent can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM the calling process when its parent dies; use as ``Popen(preexec_fn=...)``.

    Linux only (no-op elsewhere). The signal fires when the *thread* that forked the child exits, so start children
    from a long-lived thread (the main thread in pytest).
    """
    if _LIBC is None:
        return
    if _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    # The parent may have died between fork() and prctl(); then we have already been re-parented.
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


# spawn's own parameter is also called die_with_parent; this alias keeps the function reachable there.
_die_with_parent_hook = die_with_parent


@dataclass(frozen=True)
class ProcessRecord:
    """A process started by LocalCluster: enough to find it again (and not a recycled PID) from another process."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str
    control_plane: bool = False

    def alive(self) -> bool:
        """True while the recorded process (same PID *and* start time) runs and is not a zombie."""
        stat = proc_stat(self.pid)
        return stat is not None and stat[2] != "Z" and stat[3] == self.start_ticks


def proc_stat(pid: int) -> tuple[int, int, str, int] | None:
    """(pid, ppid, state, start_ticks) from /proc/<pid>/stat, or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return parse_proc_stat(raw)


def parse_proc_stat(raw: str) -> tuple[int, int, str, int]:
    """Parse /proc/<pid>/stat; the command name may itself contain spaces and parentheses, hence rpartition."""
    head, _, tail = raw.rpartition(")")
    fields = tail.split()
    return int(head.split("(", 1)[0]), int(fields[1]), fields[0], int(fields[19])


def _children_map() -> dict[int, list[int]]:
    """ppid -> [pid] for all live processes (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[1], []).append(stat[0])
    return children


def descendants(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    """All transitive children of ``pid`` in ``children`` (ppid -> pids), depth first."""
    out: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, []))
    return out


def descendant_pids(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (children, grandchildren, ...)."""
    return descendants(pid, _children_map())


def _pid_running(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[2] != "Z"


def stop_processes(records: Sequence[ProcessRecord], grace: float = 10.0) -> list[str]:
    """Stop the recorded processes in reverse start order, each with all its descendants.

    One at a time, because a process often needs the ones started before it to shut down cleanly (the API server
    stalls for seconds when etcd is already gone). SIGTERM first, SIGKILL after ``grace`` seconds.
    Returns the names of the recorded processes that were running.
    """
    live = [r for r in records if r.alive()]
    for rec in reversed(live):
        _stop_tree(rec, grace)
    return [r.name for r in live]


def _stop_tree(rec: ProcessRecord, grace: float) -> None:
    targets = {rec.pid, *descendants(rec.pid, _children_map())}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(rec.pid) == rec.pid:  # started with start_new_session: it leads its own process group
            os.killpg(rec.pid, signal.SIGTERM)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in targets:
            if _pid_running(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_pid_running(p) for p in targets):
            reap_children()
            time.sleep(0.05)
        if not any(_pid_running(p) for p in targets):
            break
    reap_children()


# Popen objects of every process spawn() launched from this Python process, by PID (private to this module):
# polling them reaps zombies without os.waitpid(-1), which would steal exit statuses from other code's subprocesses.
_OUR_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def reap_children() -> None:
    """Reap our own dead children (poll() records their exit status), so they do not linger as zombies."""
    for pid, proc in list(_OUR_CHILDREN.items()):
        if proc.poll() is not None:
            del _OUR_CHILDREN[pid]


def spawn(name: str, argv: Sequence[str | os.PathLike[str]], log: Path, env: Mapping[str, str] | None = None, *,
          die_with_parent: bool, cwd: Path | str | None = None,
          control_plane: bool = False) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` in its own session (so its whole group can be signalled), stdout+stderr appended to ``log``.

    ``env`` is merged over ``os.environ``. ``die_with_parent`` makes the kernel SIGTERM it when this process exits.
    Returns the Popen and the record that finds the process again; raises OSError when it cannot start.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [str(a) for a in argv]
    with open(log, "ab") as fh:
        fh.write(f"==== {dt.datetime.now().isoformat(timespec='seconds')} starting: {' '.join(args)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True, close_fds=True,
                                preexec_fn=_die_with_parent_hook if die_with_parent else None)
    _OUR_CHILDREN[proc.pid] = proc
    stat = proc_stat(proc.pid)
    record = ProcessRecord(name=name, pid=proc.pid, start_ticks=stat[3] if stat else 0, argv=args, log=str(log),
                           control_plane=control_plane)
    return proc, record


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """Stop one child we started: SIGTERM (a clean shutdown), then SIGKILL after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path | str, lines: int = 25) -> str:
    """The last ``lines`` lines of a (log) file, or a note that it does not exist."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log file {path})"
    return "\n".join(text.splitlines()[-lines:])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so the kernel cannot repeat one)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
