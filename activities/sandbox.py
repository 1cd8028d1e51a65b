"""A bubblewrap sandbox around every executor and gate subprocess.

One central place: an activity opens a **scope** around the work that starts programs
(``run_phase`` around the executor, ``run_gate`` around the checks), and every
subprocess started inside it — ``process.run_process``, ``process.start_process`` and the
agent runner ``executors/stream.py`` — is launched through :func:`launch`, which reads the
scope from a context variable. Gate and executor modules need no sandbox code of their
own; code that adds a tree to the sandbox calls :func:`allow` (a gate's scratch directory)
or opens a :func:`widened` scope (building a task environment needs the index)::

    with policy.scope(writable=(checkout.dir, context_dir), network=True):
        await executor.execute(ctx)          # the agent: network on (its model API)
    with policy.scope(writable=(checkout.dir,), network=False):
        await run_checks(...)                # gates, the target's tests and service: off

``IMPLFLOW_SANDBOX`` chooses the mode once per worker (:meth:`SandboxPolicy.from_settings`
logs which): ``bwrap`` requires bubblewrap, ``off`` never uses it, ``auto`` (default) uses
it when a probe run of ``bwrap ... true`` with the options below works.

**bwrap.** Each program runs as ``bwrap <options> -- argv``:

- ``--ro-bind / /``: the whole filesystem read-only, ``--dev /dev`` (a minimal /dev with a
  private devpts), ``--proc /proc`` for its own PID namespace (``--unshare-pid``, plus IPC
  and UTS), so ``/proc/$PPID/environ`` and ``/proc/1/environ`` are bwrap's own (the
  scrubbed environment), never the worker's; ``--cap-drop ALL``: root inside cannot
  unmount what hides the worker's files;
- a private ``--tmpfs /tmp`` (``TMPDIR`` points into it unless the caller's lies in a
  writable tree); tmpfs over the worker's home, its data directory, the workspace root,
  the cassettes and ``/run`` (host sockets); the scope's trees bound back on top: the
  writable ones (``--bind``: the task's checkout and its scratch space) and the readable
  ones (``--ro-bind``: task environments and uv's cache, the interpreter and ``PATH``
  entries that live under a hidden tree). Deeper paths are mounted last, so they win;
- ``--die-with-parent``: bwrap dies with the worker, and with it the PID namespace and
  every process in it, so a ``kill -9`` of the worker leaves no agent behind;
- network: agents keep the host's (they need their model API). A network-off scope gets
  one private network namespace with only loopback, created when its first program
  starts (``unshare(CLONE_NEWNET)`` in a short-lived thread; needs ``CAP_SYS_ADMIN``) and
  entered by each of its programs before bwrap runs, so the gate's service, its load tool
  and the target's own multi-process tests reach each other on 127.0.0.1 and nothing
  else; :func:`in_scope_network` runs the probe's health check in a thread inside it.
  Where no namespace can be created, each program gets ``--unshare-net`` alone and the
  load probe cannot reach its service; the worker's start line says so.

Not used, and why: ``--new-session`` (against TIOCSTI): every program is started with
``start_new_session``, so bwrap leads a session without a controlling terminal, stdin is
/dev/null and no terminal is reachable inside; leaving bwrap's session in place keeps the
whole sandboxed tree in one process group, which ``process.stop_group`` reaches with one
``killpg``. ``--clearenv`` with ``--setenv``: the values would sit on bwrap's command
line, readable by anyone on the host through ``/proc/<pid>/cmdline``; instead bwrap
itself is started with the scrubbed environment only, which is all the sandbox inherits.

**off.** Today's confinement (argv lists, scrubbed environment, own process group) plus
``PR_SET_PDEATHSIG`` = SIGKILL for the started program, so a ``kill -9`` of the worker
kills it too (its own children are not covered: the checkout lock in ``process.py`` ends
their group when a worker next takes the checkout). ``/proc`` is the host's in this mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from implflow.errors import ImplflowError
from implflow.settings import Settings

__all__ = [
    "Launch",
    "SandboxPolicy",
    "SandboxScope",
    "SandboxUnavailableError",
    "allow",
    "current_scope",
    "in_scope_network",
    "launch",
    "sandbox_scope",
    "widened",
]

log = structlog.stdlib.get_logger("implflow.sandbox")

Mode = Literal["bwrap", "off"]
T = TypeVar("T")

BWRAP = "bwrap"
BWRAP_INSTALL = "apt-get install -y bubblewrap"
SANDBOX_TMP = Path("/tmp")  # noqa: S108 - the sandbox's own private tmpfs, not the worker's
HIDDEN_ALWAYS = (Path("/run"),)
"""Hidden in every sandbox: host sockets (docker, dbus, databases) live under ``/run``; a
unix socket stays connectable through a read-only mount."""

_PROBE_TIMEOUT_S = 15.0
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_LIBC = ctypes.CDLL(None, use_errno=True)


class SandboxUnavailableError(ImplflowError):
    """``IMPLFLOW_SANDBOX=bwrap`` but bubblewrap does not work on this worker."""


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class SandboxPolicy:
    """The worker's choice, made once at start: the mode and what no sandbox may see."""

    mode: Mode
    reason: str
    """Why this mode, for the worker's start line."""
    bwrap: str | None = None
    hidden: tuple[Path, ...] = ()
    """Trees covered with an empty tmpfs (the worker's home, data dir, workspace root, …)."""
    shared_reads: tuple[Path, ...] = ()
    """Read-only in every scope: task environments and uv's cache (hidden by the data dir)."""
    private_network: bool = False
    """A network-off scope can have its own loopback-only namespace (else ``--unshare-net``)."""

    @classmethod
    def resolve(
        cls,
        requested: Literal["auto", "bwrap", "off"],
        *,
        hidden: Iterable[Path] = (),
        shared_reads: Iterable[Path] = (),
    ) -> SandboxPolicy:
        """The policy for ``requested``; ``bwrap`` that cannot work raises at once."""
        if requested == "off":
            return cls("off", "IMPLFLOW_SANDBOX=off")
        binary = shutil.which(BWRAP)
        problem = _probe_bwrap(binary) if binary else f"{BWRAP} is not installed"
        if problem is not None or binary is None:
            if requested == "bwrap":
                raise SandboxUnavailableError(
                    f"IMPLFLOW_SANDBOX=bwrap but bubblewrap cannot run here: {problem} "
                    f"(install: {BWRAP_INSTALL}; or set IMPLFLOW_SANDBOX=auto or off)"
                )
            return cls("off", f"auto: {problem}")
        return cls(
            "bwrap",
            f"{requested}: {binary} works",
            bwrap=binary,
            hidden=tuple(_unique([*HIDDEN_ALWAYS, *hidden])),
            shared_reads=tuple(_unique(shared_reads)),
            private_network=_can_make_netns(),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxPolicy:
        """Resolve ``settings.sandbox`` and say in one log line what the worker will do."""
        policy = cls.resolve(
            settings.sandbox,
            hidden=[
                Path.home(),
                settings.data_dir,
                settings.folder("workspaces"),
                settings.folder("cassettes"),
                settings.folder("envs"),
                settings.folder("uv-cache"),
            ],
            shared_reads=[settings.folder("envs"), settings.folder("uv-cache")],
        )
        if policy.mode == "bwrap":
            log.info(
                "sandbox: bwrap",
                reason=policy.reason,
                gate_network=(
                    "private loopback namespace"
                    if policy.private_network
                    else "--unshare-net per program (no CAP_SYS_ADMIN: the load probe "
                    "cannot reach its service)"
                ),
            )
        else:
            log.warning("sandbox: off", reason=policy.reason)
        return policy

    def scope(
        self,
        *,
        writable: Iterable[Path] = (),
        readable: Iterable[Path] = (),
        network: bool,
    ) -> contextlib.AbstractContextManager[SandboxScope]:
        """``with policy.scope(...)``: programs started inside run in this sandbox."""
        return sandbox_scope(
            self, writable=writable, readable=[*self.shared_reads, *readable], network=network
        )


_ROOT_MOUNTS = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc")
"""Every sandbox: the root read-only, a private /dev and this PID namespace's /proc."""


@functools.cache
def _probe_bwrap(binary: str) -> str | None:
    """``None`` when bwrap runs ``true`` with every option the sandbox uses; else why not."""
    argv = [
        binary,
        *_BASE_OPTIONS,
        "--unshare-net",
        *_ROOT_MOUNTS,
        "--tmpfs",
        str(SANDBOX_TMP),
        "--",
        "true",
    ]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{binary} probe failed: {err}"
    if proc.returncode != 0:
        return f"{binary} probe exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return None


@functools.cache
def _can_make_netns() -> bool:
    try:
        os.close(_new_loopback_netns())
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- scopes


@dataclass
class SandboxScope:
    """What the programs of one activity may see; :func:`allow` adds trees while it is open."""

    policy: SandboxPolicy
    writable: list[Path] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)
    network: bool = True
    parent: SandboxScope | None = None
    _netns: int | None = None
    _netns_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def confines(self) -> bool:
        """Programs started in this scope run inside bwrap."""
        return self.policy.mode == "bwrap"

    def allow(self, *, write: Iterable[Path] = (), read: Iterable[Path] = ()) -> None:
        """Add trees for the programs started from now on (missing ones are skipped then)."""
        self.writable.extend(Path(p) for p in write)
        self.readable.extend(Path(p) for p in read)

    def network_fd(self) -> int | None:
        """The scope's private network namespace, created on first use; ``None`` when the
        scope has the host's network, or no namespace can be made (``--unshare-net``)."""
        if self.network or not self.confines or not self.policy.private_network:
            return None
        if self.parent is not None and not self.parent.network:
            return self.parent.network_fd()  # a nested network-off scope shares its parent's
        with self._netns_lock:
            if self._netns is None:
                self._netns = _new_loopback_netns()
            return self._netns

    def close(self) -> None:
        """Release the network namespace (it ends with its last process)."""
        with self._netns_lock:
            if self._netns is not None:
                os.close(self._netns)
                self._netns = None


_SCOPE: contextvars.ContextVar[SandboxScope | None] = contextvars.ContextVar(
    "implflow_sandbox_scope", default=None
)


def current_scope() -> SandboxScope | None:
    """The scope programs started now run in; ``None`` outside any (then: off + PDEATHSIG)."""
    return _SCOPE.get()


@contextlib.contextmanager
def sandbox_scope(
    policy: SandboxPolicy,
    *,
    writable: Iterable[Path] = (),
    readable: Iterable[Path] = (),
    network: bool,
) -> Iterator[SandboxScope]:
    """Open a scope: until it closes, started programs run sandboxed as ``policy`` says."""
    with _entered(SandboxScope(policy, list(writable), list(readable), network)) as scope:
        yield scope


@contextlib.contextmanager
def _entered(scope: SandboxScope) -> Iterator[SandboxScope]:
    """``scope`` is the current one until the block ends; then it is closed."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
        scope.close()


@contextlib.contextmanager
def widened(
    *,
    write: Iterable[Path] = (),
    read: Iterable[Path] = (),
    network: bool | None = None,
) -> Iterator[SandboxScope | None]:
    """A nested scope: the current one plus ``write``/``read``, ``network`` if given.

    For work inside a gate that needs more than the gate's checks (building the task
    environment writes the environment store and reaches the package index). Outside
    any scope it does nothing.
    """
    outer = current_scope()
    if outer is None:
        yield None
        return
    inner = SandboxScope(
        outer.policy,
        [*outer.writable, *write],
        [*outer.readable, *read],
        outer.network if network is None else network,
        parent=outer,
    )
    with _entered(inner) as scope:
        yield scope


def allow(*, write: Iterable[Path] = (), read: Iterable[Path] = ()) -> None:
    """Add trees to the current scope (a gate's scratch dir, a tool cache); none: no-op."""
    scope = current_scope()
    if scope is not None:
        scope.allow(write=write, read=read)


async def in_scope_network(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a thread, inside the scope's private network namespace if it has one.

    For the worker's own requests to a sandboxed service (the load probe's health check):
    127.0.0.1 there is the sandbox's loopback. A fresh thread each time, since entering a
    namespace changes the calling thread for good. Without one: ``asyncio.to_thread``.
    """
    scope = current_scope()
    fd = scope.network_fd() if scope is not None else None
    if fd is None:
        return await asyncio.to_thread(fn, *args)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def succeed(result: T) -> None:
        if not done.done():  # the caller may have been cancelled meanwhile
            done.set_result(result)

    def fail(error: BaseException) -> None:
        if not done.done():
            done.set_exception(error)

    def run() -> None:
        try:
            _setns(fd)
            result = fn(*args)
        except BaseException as err:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(fail, err)
        else:
            loop.call_soon_threadsafe(succeed, result)

    threading.Thread(target=run, name="implflow-sandbox-net", daemon=True).start()
    return await done


# --------------------------------------------------------------------------- launching


@dataclass(frozen=True)
class Launch:
    """How to start one program: the argv and environment to exec, and the child's setup."""

    argv: list[str]
    env: dict[str, str]
    preexec: Callable[[], None]
    """Runs in the child between fork and exec (PDEATHSIG, or entering the network)."""
    sandboxed: bool


def launch(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Launch:
    """How to start ``argv`` in the current scope: inside bwrap, or plain with PDEATHSIG.

    Inside bwrap a missing program still raises ``FileNotFoundError`` (and one that cannot
    be executed ``PermissionError``), as a plain start would, instead of a bwrap message.
    """
    scope = current_scope()
    if scope is None or not scope.confines or scope.policy.bwrap is None:
        return Launch(list(argv), dict(env), _die_with_worker(), sandboxed=False)
    _check_program(argv[0], cwd, env)
    box_env = dict(env)
    writable = _existing(scope.writable)
    tmpdir = box_env.get("TMPDIR")
    if not tmpdir or not any(_inside(Path(tmpdir), w) for w in writable):
        box_env["TMPDIR"] = str(SANDBOX_TMP)
    fd = scope.network_fd()
    command = bwrap_argv(
        scope.policy,
        argv,
        cwd=cwd,
        writable=writable,
        readable=_existing(scope.readable),
        unshare_net=not scope.network and fd is None,
        path=box_env.get("PATH", ""),
    )
    return Launch(command, box_env, _enter_network(fd), sandboxed=True)


_BASE_OPTIONS = (
    "--die-with-parent",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--cap-drop",
    "ALL",
)


def bwrap_argv(
    policy: SandboxPolicy,
    argv: Sequence[str],
    *,
    cwd: Path,
    writable: Sequence[Path],
    readable: Sequence[Path],
    unshare_net: bool,
    path: str = "",
) -> list[str]:
    """The bwrap command line that runs ``argv`` in ``cwd`` with these trees."""
    hidden = [SANDBOX_TMP, *(_real(p) for p in policy.hidden)]
    hidden = [h for h in _existing(hidden) if h != Path("/") and h.is_dir()]
    reads = [*readable, *_tools_under(hidden, path), *_resolv_conf(hidden)]
    cwd = _real(cwd)
    if not any(_inside(cwd, tree) for tree in [*writable, *reads]) and any(
        _inside(cwd, h) for h in hidden
    ):
        reads.append(cwd)  # the directory a program runs in is always visible to it
    # (depth, order, options): parents before children, so a deeper mount lands on top;
    # at one path a bind comes after the tmpfs it punches through.
    mounts: list[tuple[int, int, list[str]]] = []
    for tree in hidden:
        if not any(tree != h and _inside(tree, h) for h in hidden):  # covered already
            mounts.append((len(tree.parts), 0, ["--tmpfs", str(tree)]))
    for tree in _unique(reads):
        mounts.append((len(tree.parts), 1, ["--ro-bind", str(tree), str(tree)]))
    for tree in _unique(writable):
        mounts.append((len(tree.parts), 2, ["--bind", str(tree), str(tree)]))
    mounts.sort(key=lambda m: (m[0], m[1]))
    return [
        str(policy.bwrap),
        *_BASE_OPTIONS,
        *(["--unshare-net"] if unshare_net else []),
        *_ROOT_MOUNTS,
        *(option for _, _, options in mounts for option in options),
        "--chdir",
        str(cwd),
        "--",
        *argv,
    ]


def _resolv_conf(hidden: Sequence[Path]) -> list[Path]:
    """Name resolution keeps working when ``/etc/resolv.conf`` links into a hidden tree
    (systemd-resolved's file under ``/run``)."""
    target = _real(Path("/etc/resolv.conf"))
    return [target] if target.is_file() and any(_inside(target, h) for h in hidden) else []


def _tools_under(hidden: Sequence[Path], path: str) -> list[Path]:
    """The interpreter and ``PATH`` entries that live under a hidden tree (read-only).

    Programs there are usually links or shims into the tree around them, so an entry
    brings the top directory under the hidden tree it sits in (``~/.pyenv`` for
    ``~/.pyenv/shims``, ``~/.nvm`` for a node version's ``bin``), except where that
    directory also keeps credentials (``KEEP_HIDDEN``): then only the entry itself
    (``~/.local/bin``, ``~/.cargo/bin``). Never a hidden tree itself.
    """
    wanted = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    wanted += [Path(entry) for entry in path.split(os.pathsep) if os.path.isabs(entry)]
    found: list[Path] = []
    for tree in _existing(wanted):
        covering = [h for h in hidden if _inside(tree, h)]
        if not covering or any(tree == h for h in covering):
            continue
        root = max(covering, key=lambda h: len(h.parts))  # the innermost hidden tree
        top = root / tree.relative_to(root).parts[0]
        found.append(tree if top.name in KEEP_HIDDEN else top)
    return found


KEEP_HIDDEN = frozenset(
    {
        ".ssh",
        ".gnupg",
        ".aws",
        ".azure",
        ".config",
        ".local",
        ".docker",
        ".kube",
        ".cargo",
        ".m2",
        ".gradle",
    }
)
"""Top directories of a home that keep secrets (keys, tokens, registry credentials):
a ``PATH`` entry inside one is exposed alone, never the whole directory."""


def _check_program(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Raise as ``exec`` would when ``program`` is missing or not executable."""
    if "/" in program:
        candidate: str | None = str(cwd / program) if not os.path.isabs(program) else program
    else:
        candidate = shutil.which(program, path=env.get("PATH", os.defpath))
    if candidate is None or not os.path.exists(candidate):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)


# --------------------------------------------------------------------------- the child


def _die_with_worker() -> Callable[[], None]:
    """Child setup for an unsandboxed program: SIGKILL when the worker dies."""
    worker = os.getpid()
    prctl = _LIBC.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != worker:  # the worker died before the line above took effect
            os._exit(1)

    return preexec


def _enter_network(fd: int | None) -> Callable[[], None]:
    """Child setup for a sandboxed program: join the scope's network namespace, if any.

    bwrap's own ``--die-with-parent`` ties it to the worker.
    """
    if fd is None:
        return _nothing
    setns = _LIBC.setns

    def preexec() -> None:
        if setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET) failed")

    return preexec


def _nothing() -> None:
    return None


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def _new_loopback_netns() -> int:
    """A new network namespace with ``lo`` up, as an open fd (the namespace lives while
    the fd or a process in it does). Made in a throwaway thread: ``unshare`` changes the
    calling thread only, and that thread ends right after."""
    result: list[int | BaseException] = []

    def make() -> None:
        try:
            if _LIBC.unshare(_CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                request = struct.pack("16sH22x", b"lo", 0)
                flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
                fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))
            result.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        except BaseException as err:  # reported to the caller below
            result.append(err)

    thread = threading.Thread(target=make, name="implflow-netns", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome if isinstance(outcome, OSError) else OSError(str(outcome))
    return outcome


# --------------------------------------------------------------------------- paths


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, tree: Path) -> bool:
    return path == tree or path.is_relative_to(tree)


def _existing(paths: Iterable[Path]) -> list[Path]:
    return [p for p in _unique(_real(Path(p)) for p in paths) if p.exists()]


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(_real(Path(path)), None)
    return list(seen)
