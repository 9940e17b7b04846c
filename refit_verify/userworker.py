"""Run a user's quantizer in a child process, so that exiting, crashing or hanging is one case's error.

In-process guards catch SystemExit and KeyboardInterrupt, but not `os._exit`, a segfault or a call
that never returns. The child (`python -m refit_verify.userworker FD SPEC KWARGS`) loads the callable
once and answers one request per case over a socket; its stdout/stderr (file descriptors 1 and 2,
so prints from C code too) go to a file the parent reads per case. A case that outlives its time
limit kills the child; the next case starts a fresh one.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection

from refit_verify.usercode import UserCodeError, UserExit, describe_user_exception

DEFAULT_TIMEOUT_S = 60.0
STARTUP_ALLOWANCE_S = 120.0  # importing torch and the user's module in the child, on a loaded machine


class IsolatedUserError(Exception):
    """The user's code raised in the child; `description` was written there, with the traceback at hand."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class IsolatedUserExit(UserExit):
    """The user's code exited, crashed the child or ran past its time limit."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


_EOF = ("eof",)  # the child closed the connection: it exited or crashed


# Tensors cross as (dtype, shape, raw bytes), the rest as plain pickle: Connection.send would use the
# reductions torch registers for multiprocessing (storage passed as file descriptors through a resource
# sharer a process not started by multiprocessing can't reach), and torch's own pickling of float8
# storages does not load back in every version.
class _Tensor:
    def __init__(self, t):
        self.dtype, self.shape = str(t.dtype).removeprefix("torch."), tuple(t.shape)
        self.meta = t.device.type == "meta"
        self.raw = b"" if self.meta else t.detach().cpu().contiguous().reshape(-1).view(torch_uint8()).numpy().tobytes()

    def tensor(self):
        import torch

        dtype = getattr(torch, self.dtype)
        if self.meta:
            return torch.empty(self.shape, dtype=dtype, device="meta")
        flat = torch.frombuffer(bytearray(self.raw), dtype=torch.uint8) if self.raw else torch.empty(0, dtype=torch.uint8)
        return flat.view(dtype).reshape(self.shape)


def torch_uint8():
    import torch

    return torch.uint8


def _encode(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return _Tensor(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_encode(o) for o in obj)
    return obj


def _decode(obj):
    if isinstance(obj, _Tensor):
        return obj.tensor()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_decode(o) for o in obj)
    return obj


def _send(conn: Connection, obj) -> None:
    conn.send_bytes(pickle.dumps(_encode(obj)))


def _recv(conn: Connection):
    return _decode(pickle.loads(conn.recv_bytes()))


def _died(proc: subprocess.Popen) -> str:
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # closed its end but lingers
        proc.kill()
        code = proc.wait()
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the quantizer's process was killed by {name} (a crash in native code?)"
    return f"the quantizer's process exited with code {code} (os._exit or sys.exit outside the call?)"


class IsolatedQuantizer:
    """`run(impl, x)` for check_case: calls the user's SPEC in a child process, one case at a time."""

    def __init__(self, spec: str, kwargs_json: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.spec, self.kwargs_json, self.timeout_s = spec, kwargs_json, float(timeout_s)
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="refit-verify-user-", suffix=".log", delete=False)

    # -- child lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the child and wait until it has loaded SPEC; UserCodeError (exit 2) when it can't."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if isinstance(p, str) and p))
        start = self._log_size()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "refit_verify.userworker", str(theirs.fileno()), self.spec, self.kwargs_json or "",
             self.log.name], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.conn = Connection(ours.detach())
        msg = self._receive(STARTUP_ALLOWANCE_S + self.timeout_s)
        if msg is None or msg[0] != "ready":
            why = (self._stop_for_timeout("loading", STARTUP_ALLOWANCE_S + self.timeout_s) if msg is None else _died(self.proc) if msg is _EOF
                   else msg[1])
            printed = self._log_since(start).strip()
            self.close()
            raise UserCodeError(f"{self.spec}: loading it failed: {why}" + (f"\n{printed}" if printed else ""))

    def _receive(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.conn.poll(min(0.5, max(0.0, deadline - time.monotonic()))):
                try:
                    return _recv(self.conn)
                except (EOFError, OSError):
                    return _EOF
            if self.proc.poll() is not None and not self.conn.poll(0):
                return _EOF
        return None  # timed out

    def _stop_for_timeout(self, what: str, limit: float | None = None) -> str:
        self.proc.kill()
        self.proc.wait()
        return f"{what} ran past the time limit of {limit or self.timeout_s:g} s (the child was killed)"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                _send(self.conn, ("quit",))
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def __del__(self):
        try:
            self.close()
            os.unlink(self.log.name)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- one case --------------------------------------------------------------------------------
    def __call__(self, impl, x):
        """(return value or an exception, what the user's code printed), like check.run_user."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        start = self._log_size()
        try:
            _send(self.conn, ("call", x))
        except (OSError, BrokenPipeError):
            return IsolatedUserExit(_died(self.proc)), self._log_since(start)
        msg = self._receive(self.timeout_s)
        if msg is None or msg is _EOF:
            why = self._stop_for_timeout("the call") if msg is None else _died(self.proc)
            self.close()
            return IsolatedUserExit(why), self._log_since(start)
        kind, payload = msg
        out = {"ok": lambda: payload, "raised": lambda: IsolatedUserError(payload),
               "exited": lambda: IsolatedUserExit(payload)}[kind]()
        return out, self._log_since(start)

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log.name)
        except OSError:
            return 0

    def _log_since(self, start: int, limit: int = 20_000) -> str:
        with open(self.log.name, "rb") as f:
            f.seek(start)
            text = f.read(limit + 1).decode("utf-8", "replace")
        return text if len(text) <= limit else text[:limit] + "\n... (clipped)"


# -- the child ---------------------------------------------------------------------------------------
def serve(fd: int, spec: str, kwargs_json: str, log: str) -> None:
    conn = Connection(fd)
    out = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the parent's to handle; it then ends us
    _die_with_parent()
    from refit_verify.usercode import load_callable

    try:
        fn = load_callable(spec, kwargs_json or None)
    except UserCodeError as exc:
        _send(conn, ("failed", str(exc)))
        return
    _send(conn, ("ready",))
    while True:
        try:
            msg = _recv(conn)
        except EOFError:
            return
        if msg[0] != "call":
            return
        _send(conn, _call(fn, msg[1]))


def _die_with_parent() -> None:
    """Linux: SIGKILL this child when the parent dies, even while the user's call hangs."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _call(fn, x):
    try:
        out = fn(x)
    except UserExit as exc:
        return ("exited", describe_user_exception(exc))
    except Exception as exc:  # noqa: BLE001 - any user error is this case's error
        return ("raised", describe_user_exception(exc))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        pickle.dumps(_encode(out))
    except Exception as exc:  # noqa: BLE001 - a return value that can't cross the process boundary
        return ("ok", f"<unpicklable {type(out).__name__}: {exc}>")
    return ("ok", out)


if __name__ == "__main__":
    # through the package module, not this __main__ copy: pickled classes must name refit_verify.userworker
    from refit_verify.userworker import serve as package_serve

    package_serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
