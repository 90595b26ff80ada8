"""HMAC-SHA256 digests of many values: the loop of `etl.privacy.rekey`, run in the caller's process
or as a child process of its own (`python -I -S hmac_worker.py`).

The loop holds the GIL (about 0.35 s for 500,000 pseudonyms), while the loader validates the same
file beside it, Python-heavy work that wants the GIL too. As a child process the loop runs on the
other core instead. The child imports only the standard library's `hashlib`, `signal`, `sys` and
`collections.abc` (it starts in ~20 ms), is started with an empty environment and talks over its
standard streams only: the key never appears in its arguments or environment.

Protocol, integers in the machine's byte order (parent and child run on the same machine): on
stdin the key's length (4 bytes), the key, the number of values n (8 bytes), n + 1 offsets
(8 bytes each, the first 0) and the values' bytes; on stdout n × 32 digest bytes, and exit
status 0.
"""

import hashlib
import signal
import sys
from collections.abc import Iterable

BLOCK = 64  # SHA-256's block size (RFC 2104's B)


def digests(key: bytes, offsets: Iterable[int], data: bytes | memoryview) -> bytes:
    """The concatenated 32-byte HMAC-SHA256 of each value `data[offsets[i]:offsets[i + 1]]`.

    RFC 2104 spelled out on hashlib objects: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)).
    The two keyed states are computed once and copied per value; this skips the `hmac.HMAC`
    wrapper's Python-level copy/update/digest per value (about 40 % of the time for 500,000
    distinct pseudonyms). Tested against `hmac` and RFC 4231 through `rekey`."""
    padded = (hashlib.sha256(key).digest() if len(key) > BLOCK else key).ljust(BLOCK, b"\0")
    inner_copy = hashlib.sha256(bytes(b ^ 0x36 for b in padded)).copy
    outer_copy = hashlib.sha256(bytes(b ^ 0x5C for b in padded)).copy
    view = memoryview(data)
    out: list[bytes] = []
    append = out.append
    bounds = iter(offsets)
    start = next(bounds)
    for end in bounds:
        inner = inner_copy()
        inner.update(view[start:end])
        outer = outer_copy()
        outer.update(inner.digest())
        append(outer.digest())
        start = end
    return b"".join(out)


def _main() -> int:
    # The terminal's Ctrl-C reaches the whole process group: the parent decides (an erasure
    # finishes first, `service.commands.common`); a child that died of it failed the load.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer

    def exactly(size: int) -> bytes:
        chunk = stdin.read(size)
        if len(chunk) != size:
            raise SystemExit(2)
        return chunk

    key = exactly(int.from_bytes(exactly(4), sys.byteorder))
    count = int.from_bytes(exactly(8), sys.byteorder)
    offsets = memoryview(exactly(8 * (count + 1))).cast("q")
    data = exactly(offsets[count])
    sys.stdout.buffer.write(digests(key, offsets, data))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
