"""A real one-node SLURM cluster on the test host, for the workflow's cluster test.

Installs Debian's slurm-wlm and munge when they are missing, writes a private munge key
socket and slurm.conf under a scratch directory, starts munged, slurmctld and slurmd as
root, and stops exactly the daemons it started (by pid). Clients (sbatch, squeue) find the
cluster through SLURM_CONF, which `env()` returns. Every failure raises SlurmUnavailable
with the reason: a CI run must fail, not skip, when the cluster cannot come up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "ci"
CLUSTER_NAME = "editpersist-ci"
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")


class SlurmUnavailable(RuntimeError):
    pass


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False  # no pid file, or an unfinished one: the daemon never came up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _left_by_a_dead_harness(link: Path) -> bool:
    """A default-config link is this harness's leftover when it dangles, or when it points at
    a config this harness wrote (its cluster name) whose controller is no longer running.
    Anything else, a real cluster's config above all, is left alone."""
    if not link.is_symlink():
        return False
    target = link.resolve()
    if not target.is_file():
        return True
    if not target.read_text().startswith(f"ClusterName={CLUSTER_NAME}\n"):
        return False
    return not _pid_alive(target.parent / "slurmctld.pid")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 600), **kw)


def ensure_installed() -> None:
    if all(shutil.which(d) or Path(f"/usr/sbin/{d}").exists() for d in DAEMONS):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{', '.join(PACKAGES)} are not installed and this user cannot install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        res = _run(cmd, env=env, timeout=900)
        if res.returncode != 0:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed: {res.stderr.strip()[-500:]}")


def _memory_mb() -> int:
    kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    return kb // 1024 - 1024  # leave the OS some room, as a real node would


def slurm_conf(root: Path, munge_socket: Path, cpus: int, memory_mb: int) -> str:
    host = socket.gethostname().split(".")[0]
    return "\n".join([
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd.log",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "ReturnToService=2",
        # Keep finished jobs visible to squeue long enough for the status checks.
        "MinJobAge=600",
        "SchedulerType=sched/backfill",
        f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """`with LocalSlurm(tmp) as cluster:` runs sbatch jobs on the test host."""

    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.pids: dict[str, int] = {}
        self.linked_conf = False

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> "LocalSlurm":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise SlurmUnavailable("the one-node cluster's daemons must run as root")
        ensure_installed()
        for sub in ("state", "spool", "munge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge_socket = self._start_munge()
        self.conf.write_text(slurm_conf(self.root, munge_socket, self.cpus, _memory_mb()))
        self._link_default_conf()
        self._start_daemon("slurmctld", ["/usr/sbin/slurmctld", "-i", "-f", str(self.conf)])
        self._start_daemon("slurmd", ["/usr/sbin/slurmd", "-f", str(self.conf)])
        self._wait_for_idle_node()

    def _link_default_conf(self) -> None:
        """Job steps (the `srun` inside each batch job) read the default config path, not
        SLURM_CONF: link it to ours when the machine has none, and remove the link on stop."""
        if _left_by_a_dead_harness(DEFAULT_CONF):
            DEFAULT_CONF.unlink()  # a killed run could not clean up; its scratch dir may outlive it
        if DEFAULT_CONF.exists():
            if DEFAULT_CONF.resolve() != self.conf.resolve():
                raise SlurmUnavailable(f"{DEFAULT_CONF} exists already; this harness will not replace a real "
                                       "cluster's config")
            return
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        self.linked_conf = True

    def _start_munge(self) -> Path:
        d = self.root / "munge"
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = d / "munge.socket"
        self._start_daemon("munged", ["/usr/sbin/munged", "--force", f"--key-file={key}", f"--socket={sock}",
                                      f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                                      f"--seed-file={d}/munged.seed"], pidfile=d / "munged.pid")
        return sock

    def _start_daemon(self, name: str, cmd: list[str], pidfile: Path | None = None) -> None:
        res = _run(cmd, timeout=60)
        if res.returncode != 0:
            raise SlurmUnavailable(f"{name} did not start: {(res.stderr or res.stdout).strip()[-500:]} "
                                   f"{self._log_tail(name)}")
        pidfile = pidfile or self.root / f"{name}.pid"
        deadline = time.monotonic() + 20
        while not pidfile.is_file() or not pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"{name} wrote no pid file {pidfile}: {self._log_tail(name)}")
            time.sleep(0.2)
        self.pids[name] = int(pidfile.read_text().strip())

    def _log_tail(self, name: str) -> str:
        log = self.root / ("munge/munged.log" if name == "munged" else f"{name}.log")
        return log.read_text()[-800:] if log.is_file() else "(no log)"

    def _wait_for_idle_node(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            res = _run(["sinfo", "-h", "-o", "%T"], env=self.env(), timeout=30)
            state = res.stdout.strip() or res.stderr.strip()
            if state.startswith("idle"):
                return
            time.sleep(1)
        raise SlurmUnavailable(f"the node never became idle (sinfo: {state!r}); "
                               f"slurmctld: {self._log_tail('slurmctld')} slurmd: {self._log_tail('slurmd')}")

    def stop(self) -> None:
        """Stop the daemons this object started, newest first, and only those."""
        if self.linked_conf:
            DEFAULT_CONF.unlink(missing_ok=True)
            self.linked_conf = False
        for name in reversed(list(self.pids)):
            pid = self.pids.pop(name)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
