"""The re-keying child ignores the terminal's Ctrl-C (SIGINT reaches the whole process group): the
parent decides what an interrupt means (an erasure finishes first); a child that died of it made
the load fail."""

import hashlib
import hmac
import signal
import subprocess
import sys
import time
from pathlib import Path

from etl import hmac_worker


def _wait_until_ignored(pid: int, signum: int) -> None:
    """Until the child has set its handler (Linux: the SigIgn mask of /proc/PID/status), so that
    the signal is not sent before the handler is in place."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        mask = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
        if int(mask.split()[1], 16) >> (signum - 1) & 1:
            return
        time.sleep(0.01)
    raise AssertionError("the child never ignored the signal")


def test_the_child_survives_sigint_and_answers() -> None:
    key, value = b"k" * 32, b"P-1"
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", hmac_worker.__file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
    )
    assert child.stdin is not None
    order = sys.byteorder
    child.stdin.write(len(key).to_bytes(4, order) + key)
    child.stdin.flush()
    _wait_until_ignored(child.pid, signal.SIGINT)
    child.send_signal(signal.SIGINT)
    offsets = (0).to_bytes(8, order) + len(value).to_bytes(8, order)
    out, _ = child.communicate((1).to_bytes(8, order) + offsets + value, timeout=10)
    assert child.returncode == 0
    assert out == hmac.new(key, value, hashlib.sha256).digest()
