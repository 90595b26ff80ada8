"""The key check: a register refuses any pseudonym key but the one it was loaded with.

Every `patient_key` is the HMAC of a source pseudonym under the register's key
(`etl.privacy.rekey`). Under another key the same patients get other keys and nothing downstream
can tell: a load stores them as patients never seen (every patient-level indicator and
cross-record check silently wrong), and an erasure finds none of their rows and erases nothing
(an opt-out not carried out). So the warehouse keeps `key.check`: the hex HMAC-SHA256, under the
key, of `CHECK_MESSAGE`, one line. Loads, erasures and the service's start-up compare the key they
were given with it before they read or write anything else (`check_key`).

The check value reveals nothing of the key (HMAC is a pseudorandom function: without the key its
output says nothing of it), nor of any patient: `rekey` HMACs a pseudonym's UTF-8 bytes, and
`CHECK_MESSAGE` is not UTF-8, so no patient's key can equal it. It also differs from the
researcher aggregates' secret cell-key salt (`service.aggregates.cell_key_salt`, another message).
"""

import hashlib
import hmac
import os
import re
import tempfile
from pathlib import Path
from typing import Final

from schemas.errors import ConfigurationError

KEY_CHECK_FILE: Final = "key.check"
# Fixed for good: changing it refuses every register's key. The trailing 0xFF byte never occurs
# in UTF-8 (RFC 3629 §1), which keeps the message apart from every pseudonym.
CHECK_MESSAGE: Final = b"kvarus key check v1\xff"
_CHECK_VALUE: Final = re.compile(rb"[0-9a-f]{64}")

WRONG_KEY: Final = (
    "The pseudonym key is not the one this register was loaded with (the check value in the "
    f"warehouse's {KEY_CHECK_FILE} differs): nothing was read or written. Use the register's key"
)
DAMAGED: Final = (
    f"The warehouse's {KEY_CHECK_FILE} does not hold a key check value: nothing was read or "
    "written. Restore it from a backup of the data directory"
)


def key_check_value(key: bytes) -> str:
    """The hex HMAC-SHA256 of `CHECK_MESSAGE` under `key`."""
    return hmac.new(key, CHECK_MESSAGE, hashlib.sha256).hexdigest()


def check_key(warehouse_root: Path, key: bytes) -> None:
    """Refuse `key` (`ConfigurationError`) unless its check value is the register's.

    The first use writes the check value, creating the warehouse directory if need be. A
    register loaded before this check existed has no `key.check` either, and so adopts the key of
    its first use after it: whether its stored rows were keyed under that key cannot be checked
    retroactively (a `patient_key` does not say which key made it).
    """
    expected = key_check_value(key).encode("ascii")
    path = warehouse_root / KEY_CHECK_FILE
    try:
        stored = path.read_bytes().strip()
    except FileNotFoundError:
        stored = _adopt(path, expected)
    if not _CHECK_VALUE.fullmatch(stored):
        raise ConfigurationError(DAMAGED)
    if not hmac.compare_digest(stored, expected):
        raise ConfigurationError(WRONG_KEY)


def _adopt(path: Path, value: bytes) -> bytes:
    """Write `value` as the register's check value unless another first use was quicker; returns
    the stored value (ours, or the quicker one's, for the caller to compare).

    The file appears whole or not at all: it is written and synced under a temporary name, then
    hard-linked to its name, which fails if the name exists (the atomic create of O_EXCL, without
    its window: a name created with O_EXCL is there, empty, before its content is written, and a
    second first use reading it then would refuse the right key; a kill there would leave it
    empty for good). The warehouse lives on a local filesystem (`etl.warehouse`: flock), which
    has hard links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(value + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes().strip()
    finally:
        os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the name too must survive a crash, or the next use adopts anew
    finally:
        os.close(directory)
    return value
