"""Running programs on the node: bounded in time, output captured, failures with a stderr tail."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from agent.steps import StepFailed, StepTimedOut

TAIL_LINES = 20
TAIL_CHARS = 2000


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last lines of a command's output (what a failure report carries)."""
    kept = "\n".join(text.rstrip().splitlines()[-lines:])
    return kept[-TAIL_CHARS:]


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(command: list[str] | str, timeout: float = 600, env: dict[str, str] | None = None,
        check: bool = False, what: str = "") -> Result:
    """Run argv (a list) or a shell string; kill its whole process group after `timeout` s.

    `check=True` raises StepFailed (with the stderr tail) on a non-zero exit; running out of
    time raises StepTimedOut.
    """
    shell = isinstance(command, str)
    argv = ["/bin/sh", "-c", command] if shell else list(command)
    full_env = dict(os.environ, LC_ALL="C", **(env or {}))
    label = what or (command if shell else " ".join(command))
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=full_env, start_new_session=True,
                                   universal_newlines=True)
    except OSError as exc:
        raise StepFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise StepTimedOut(f"{label}: timed out after {timeout:g} s (killed)", tail(stderr)) from None
    result = Result(process.returncode, stdout, stderr)
    if check and not result.ok:
        raise StepFailed(f"{label}: exit status {result.returncode}", tail(stderr or stdout))
    return result
