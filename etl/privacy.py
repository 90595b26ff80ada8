"""The privacy guard: no national identity number enters the register, pseudonyms are re-keyed.

EXTRACT_SPEC.md: a file in which any value looks like a national identity number (fødselsnummer or
D-number: 11 digits that pass both mod-11 check digits) is rejected whole; the error names the
column and the count, never the value. The digits may also be written "DDMMYY NNNNN" (one space,
hyphen or dot after the sixth), or in another script's digits, as people write or paste them. The
source system's pseudonym is never stored: the register keeps `patient_key`, the hex HMAC-SHA256
of the pseudonym under the register's secret key.
"""

import re
import subprocess
import sys
import unicodedata
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl import hmac_worker
from schemas.errors import PrivacyViolation

# Check-digit weights of the fødselsnummer (Skatteetaten's specification of the national identity
# number): k1 over digits 1-9, k2 over digits 1-10; check = 11 - (sum mod 11), 11 → 0, 10 → invalid.
# D-numbers (first digit + 4) follow the same digit rule.
_K1_WEIGHTS: Final = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS: Final = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

# An identity number is a run of exactly 11 digits, or as it is often written, "DDMMYY NNNNN": the
# six digits of the birth date and the five of the personal number, with up to three spaces, tabs
# (two spreadsheet cells copied together), dots, hyphens or dashes between them ("010190 00083",
# "010190-00083", "010190.00083", "010190 - 00083"; the dashes and the non-breaking hyphen are what
# word processors and spreadsheets put in place of a typed hyphen: U+2010-U+2014 and the minus
# sign U+2212). Either shape is found as the whole
# cell, or inside text between non-digits. A cell holding a full-width digit or separator, a
# non-ASCII space, another script's digit or an invisible format character (`_NFKC_CHANGES`) is
# also looked at folded (`_fold`: NFKC, format characters removed, every digit as ASCII):
# full-width "01019000083", "010190" and "00083" with a no-break space between them, Arabic-Indic
# digits, a zero-width space inside. The regexes are only prefilters; the check digits decide.
_SEPARATORS: Final = "[ \t.\\-\u2010-\u2014\u2212]"
_NUMBER: Final = rf"[0-9]{{6}}{_SEPARATORS}{{0,3}}[0-9]{{5}}"
_WHOLE_CELL: Final = rf"^{_NUMBER}$"
_RUN_INSIDE: Final = rf"(^|[^0-9]){_NUMBER}([^0-9]|$)"
_RUNS: Final = re.compile(rf"(?<![0-9])([0-9]{{6}}){_SEPARATORS}{{0,3}}([0-9]{{5}})(?![0-9])")
# The non-ASCII cells that are also looked at folded (`_fold`): those holding a character NFKC
# turns into an ASCII digit or separator (full-width digits, hyphen-minus and full stop, small
# hyphen-minus and full stop, the non-ASCII spaces: no-break, en, em, thin, ideographic, ...), and
# those holding eleven digits or other numbers in any script (Arabic-Indic and mathematical bold
# digits, superscripts; NFKC leaves the first as they are), which the invisible format characters
# a number copied from a web page or a word processor carries (zero-width space, soft hyphen, word
# joiner) may split. A cell without one is looked at as it is: "Åsgård 3" is not folded (1M such
# cells: 0.11 s; folding them all took 0.50 s).
# Unicode's default ignorable code points (DerivedCoreProperties.txt, Default_Ignorable_Code_Point):
# shown as nothing, or as a blank, and so as invisible inside a number as the format characters
# (\p{Cf}, most of them are these too), but some are marks or letters: the combining grapheme
# joiner U+034F, the variation selectors, the Hangul fillers U+3164, U+115F, U+1160 and U+FFA0,
# Khmer's inherent vowels. `_fold` removes them all, as it removes the format characters.
_IGNORABLE_RANGES: Final = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
_IGNORABLE: Final = "".join(rf"\x{{{a:X}}}-\x{{{b:X}}}" for a, b in _IGNORABLE_RANGES)
# What `_fold` removes (a format character or a default ignorable one), as an RE2 class.
_INVISIBLE: Final = rf"[\p{{Cf}}{_IGNORABLE}]"
_INVISIBLE_CHARS: Final = re.compile(
    "[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _IGNORABLE_RANGES) + "]"
)
# Blanks that NFKC leaves as they are (the Ogham space mark U+1680 and the Braille blank U+2800,
# which shows as a space): `_fold` makes them spaces, a separator.
_KEPT_BLANKS: Final = (0x1680, 0x2800)
_BLANKS: Final = "".join(rf"\x{{{c:X}}}" for c in _KEPT_BLANKS)  # in an RE2 class
_AS_SPACES: Final = dict.fromkeys(_KEPT_BLANKS, " ")
_NFKC_CHANGES: Final = (
    r"[\x{A0}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}\x{FE52}\x{FE63}\x{FF0D}\x{FF0E}"
    rf"\x{{FF10}}-\x{{FF19}}{_BLANKS}{_IGNORABLE}]"
    r"|(?:[\p{Nd}\p{No}][^\p{Nd}\p{No}]*){11}"
)
# Either shape of a number in any script's digits (after NFKC and without format characters):
# the column-wise prefilter of the folded cells, which `_fold` then checks one by one.
_ANY_DIGITS_RUN: Final = rf"\p{{Nd}}{{6}}{_SEPARATORS}{{0,3}}\p{{Nd}}{{5}}"
# Any cell holding either shape, bounded or not: a superset of both patterns above, so one pass
# over a column finds every cell the exact checks need to see (the rest cannot hold a number).
_ANY_RUN: Final = _NUMBER
# The fewest bytes a cell holding a number can have (11 ASCII digits).
_RUN_LENGTH: Final = 11

# Field metadata that `etl.read.read_extract` puts on a raw column whose cells were numbers in the
# source (an XLSX number cell, a Parquet integer or floating column). A number has no leading
# zero: the identity number 01019000083 arrives as 1019000083. A fødselsnummer begins with the day
# of birth (01-31), so about 29 % begin with one 0; never with two (days 01-09 have one zero, and a
# D-number adds 4 to the first digit). So a numeric column's 10-digit cells are checked again with
# one zero in front, and must then also begin with a birth date (`_plausible_date`), as the
# separated forms must: EXTRACT_SPEC.md's rule is 11 digits, and without the date a numeric id
# column of 10-digit numbers (a Parquet or XLSX record_id 1000000001, 1000000002, ...) would be
# refused for about 1 cell in 110 (8 of 1000000001-1000001000, all of month 00); with it, none of
# those. Text cells (CSV) keep their zeros and are not padded: no false positives there.
NUMERIC_SOURCE_KEY: Final = b"kvarus.numeric"
NUMERIC_SOURCE: Final = {NUMERIC_SOURCE_KEY: b"1"}
_TEN_DIGITS: Final = r"^[0-9]{10}$"


def _check_digit(digits: str, weights: tuple[int, ...]) -> int:
    """The mod-11 check digit over `digits`, or -1 where the rule has none (remainder 1 → 10)."""
    check = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    if check == 11:
        return 0
    return -1 if check == 10 else check


def is_identity_number(s: str) -> bool:
    """Whether `s` is 11 ASCII digits whose two check digits hold."""
    if len(s) != 11 or not s.isascii() or not s.isdigit():
        return False
    return _check_digit(s[:9], _K1_WEIGHTS) == int(s[9]) and _check_digit(
        s[:10], _K2_WEIGHTS
    ) == int(s[10])


def _count_whole_cells(values: pa.Array, *, dated: bool = False) -> int:
    """Cells that are exactly a number (11 digits, or 6 and 5 with a separator) with valid check
    digits, computed column-wise. A separated cell, and every cell if `dated`, must also begin
    with a birth date (`_plausible_date`)."""
    candidates = pc.filter(values, pc.match_substring_regex(values, pattern=_WHOLE_CELL))
    if len(candidates) == 0:
        return 0
    separated = pc.invert(pc.match_substring_regex(candidates, pattern=r"^[0-9]{11}$"))
    candidates = pc.replace_substring_regex(candidates, pattern=_SEPARATORS, replacement="")
    digits = [
        pc.cast(pc.utf8_slice_codeunits(candidates, start=i, stop=i + 1), pa.int64())
        for i in range(11)
    ]

    def check(weights: tuple[int, ...]) -> pa.Array:
        total = pc.multiply(digits[0], weights[0])
        for digit, weight in zip(digits[1:], weights[1:], strict=False):
            total = pc.add(total, pc.multiply(digit, weight))
        # Arrow divides integers with truncation: remainder = sum - 11 * (sum // 11).
        remainder = pc.subtract(total, pc.multiply(pc.divide(total, 11), 11))
        check = pc.subtract(11, remainder)
        # 11 → 0; 10 stays 10 and can never equal a digit, so the number is invalid.
        return pc.if_else(pc.equal(check, 11), 0, check)

    k1 = check(_K1_WEIGHTS)
    k2 = check(_K2_WEIGHTS)
    valid = pc.and_(pc.equal(k1, digits[9]), pc.equal(k2, digits[10]))
    # `_plausible_date`, column-wise.
    day = pc.add(pc.multiply(digits[0], 10), digits[1])
    month = pc.add(pc.multiply(digits[2], 10), digits[3])
    birth_date = pc.and_(
        pc.or_(_between(day, 1, 31), _between(day, 41, 71)),
        pc.or_(pc.or_(_between(month, 1, 12), _between(month, 41, 52)), _between(month, 81, 92)),
    )
    undated = pc.invert(separated) if not dated else pa.scalar(False)
    valid = pc.and_(valid, pc.or_(undated, birth_date))
    return int(pc.sum(valid.cast(pa.int64())).as_py() or 0)


def _between(values: pa.Array, low: int, high: int) -> pa.Array:
    return pc.and_(pc.greater_equal(values, low), pc.less_equal(values, high))


def _plausible_date(digits: str) -> bool:
    """Whether the first six digits can be a fødselsnummer's birth date DDMMYY: day 01-31 (a
    D-number adds 40), month 01-12 (an H-number adds 40, Skatteetaten's synthetic test numbers
    80). Asked of the separated forms and of a numeric cell given back its leading zero
    (`NUMERIC_SOURCE`), not of 11 digits as written: the issue's rule for those is the check
    digits alone, but "YYYYMM-NNNNN" and such ids would otherwise be taken for one in about 1 of
    110."""
    day, month = int(digits[:2]), int(digits[2:4])
    return (1 <= day <= 31 or 41 <= day <= 71) and (
        1 <= month <= 12 or 41 <= month <= 52 or 81 <= month <= 92
    )


def _holds_number(text: str) -> bool:
    """Whether `text` holds a number (either shape, between non-digits) with valid check digits."""
    return any(
        is_identity_number(match[1] + match[2])
        and (len(match[0]) == 11 or _plausible_date(match[1]))
        for match in _RUNS.finditer(text)
    )


def _count_runs_inside_text(values: pa.Array) -> int:
    """Cells with a valid number inside longer text (few: checked one by one)."""
    inside = pc.and_(
        pc.match_substring_regex(values, pattern=_RUN_INSIDE),
        pc.invert(pc.match_substring_regex(values, pattern=_WHOLE_CELL)),
    )
    return sum(_holds_number(text) for text in pc.filter(values, inside).to_pylist())


def _fold(text: str) -> str:
    """`text` in NFKC form, its format characters (Unicode category Cf) and default ignorable
    characters removed, the blanks NFKC keeps as spaces and every decimal digit of any script as
    its ASCII digit."""
    folded = _INVISIBLE_CHARS.sub("", unicodedata.normalize("NFKC", text)).translate(_AS_SPACES)
    return "".join(
        str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c
        for c in folded
        if unicodedata.category(c) != "Cf"
    )


def _count_normalised(values: pa.Array) -> int:
    """Cells holding a character of `_NFKC_CHANGES` that hold a valid number as they are or
    folded (`_fold`; few hold one: the regex picks them, then they are checked one by one)."""
    folded = pc.replace_substring_regex(
        pc.utf8_normalize(values, form="NFKC"), pattern=_INVISIBLE, replacement=""
    )
    folded = pc.replace_substring_regex(folded, pattern=f"[{_BLANKS}]", replacement=" ")
    hits = pc.or_(
        pc.match_substring_regex(values, pattern=_ANY_RUN),
        pc.match_substring_regex(folded, pattern=_ANY_DIGITS_RUN),
    )
    return sum(
        _holds_number(text) or _holds_number(_fold(text))
        for text in pc.filter(values, hits).to_pylist()
    )


def _count_cells(values: pa.ChunkedArray) -> int:
    """Cells of a column holding a valid number, whole or inside text, in either shape."""
    if values.type != pa.string():
        values = pc.cast(values, pa.string())
    longest = pc.max(pc.binary_length(values)).as_py()
    if longest is None or longest < _RUN_LENGTH:
        return 0
    count = 0
    ascii_cells = pc.string_is_ascii(values)
    if pc.all(ascii_cells).as_py() is False:  # None: every cell is null
        # Only the cells NFKC would change into digits or separators are normalised (NFKC costs
        # about 0.3 s per million cells); the rest are looked at as they are, like ASCII ones.
        changed = pc.and_(
            pc.invert(ascii_cells), pc.match_substring_regex(values, pattern=_NFKC_CHANGES)
        )
        if pc.any(changed).as_py():
            count += _count_normalised(pc.filter(values, changed).combine_chunks())
            values = pc.filter(values, pc.invert(changed))
    candidates = _candidates(values)
    if candidates is not None:
        count += _count_whole_cells(candidates) + _count_runs_inside_text(candidates)
    return count


def _candidates(values: pa.ChunkedArray) -> pa.Array | None:
    """The ASCII cells of a column that hold a number's shape, or None if no cell does.

    Every value is looked at: first by its length in bytes (`_count_cells`: a column whose
    cells are all shorter than 11 bytes cannot hold 11 digits; dates, codes and short ids are
    skipped without a regex), then, if the column has a long enough cell, by one regex pass over
    the whole column.
    """
    hits = pc.match_substring_regex(values, pattern=_ANY_RUN)
    if not pc.any(hits).as_py():
        return None
    return pc.filter(values, hits).combine_chunks()


def _lost_leading_zero(values: pa.ChunkedArray) -> pa.Array | None:
    """A numeric column's 10-digit cells with the leading zero the number lost, or None."""
    if values.type != pa.string():
        values = pc.cast(values, pa.string())
    ten = pc.match_substring_regex(values, pattern=_TEN_DIGITS)
    if not pc.any(ten).as_py():
        return None
    return pc.utf8_lpad(pc.filter(values, ten), width=_RUN_LENGTH, padding="0").combine_chunks()


def safe_filename(name: str) -> str:
    """A file name fit for the ledger: withheld when it holds an identity-number-like run (names are
    chosen by whoever exports the file, and shown to every user who may see the upload)."""
    if _holds_number(name) or _holds_number(_fold(name)):
        return "(name withheld: it looks like it holds an identity number)"
    return name


def is_numeric_source(field: pa.Field) -> bool:
    """Whether a raw column's cells were numbers in the source (marked by the reader), or are
    integers in the table itself."""
    metadata = field.metadata or {}
    return metadata.get(NUMERIC_SOURCE_KEY) == b"1" or pa.types.is_integer(field.type)


def find_identity_numbers(raw: pa.Table) -> dict[str, int]:
    """Column → number of cells holding something that passes as a national identity number.

    Only columns with at least one such cell appear. Non-text columns are inspected as text; in a
    column whose cells were numbers (`is_numeric_source`), a 10-digit cell is also checked with
    the leading zero a number cannot keep (and then must begin with a birth date).
    """
    found: dict[str, int] = {}
    for index, field in enumerate(raw.schema):
        name = field.name
        count = _count_cells(raw.column(index))
        if is_numeric_source(field):
            padded = _lost_leading_zero(raw.column(index))
            if padded is not None:
                # Disjoint from the above: a 10-digit cell holds no run of 11 digits.
                count += _count_whole_cells(padded, dated=True)
        if count:
            found[name] = found.get(name, 0) + count
    return found


def holds_identity_number(text: str) -> bool:
    """Whether a free text (a key's name, an uploader, a release note, a token's subject) holds
    what looks like an identity number: the detector a file is refused by, every shape and
    spelling included. Such a text is refused where it would be stored or shown."""
    return bool(find_identity_numbers(pa.table({"text": [text]})))


def guard(raw: pa.Table) -> None:
    """Refuse the whole table if any cell looks like a national identity number."""
    found = find_identity_numbers(raw)
    if found:
        where = ", ".join(f"column '{name}' ({count})" for name, count in found.items())
        raise PrivacyViolation(
            f"Values that look like national identity numbers (11 digits, or 6 and 5 with up to "
            f"three spaces, dots, hyphens or dashes between them; valid check digits) in {where}; "
            f"the file is rejected whole"
        )


# At or above this many values `rekey` runs the HMAC loop in a child process (`etl.hmac_worker`):
# below it the child's start (~20 ms) costs more than the GIL time it frees.
CHILD_PROCESS_FROM: Final = 100_000
MAX_VALUES: Final = (2**31 - 1) // 64


def rekey(
    pseudonyms: pa.Array | pa.ChunkedArray, key: bytes, *, child_process: bool | None = None
) -> pa.Array:
    """Hex HMAC-SHA256 of each UTF-8 pseudonym under `key`; null stays null.

    `child_process`: run the HMAC loop in a child process (`etl.hmac_worker`), so that it does
    not hold this process's GIL; None (default): from `CHILD_PROCESS_FROM` values on. On 1M basis
    rows (432,000 distinct pseudonyms) the loader's validation beside the re-keying took 1.12 s
    with the loop in a thread, 0.64 s with it in the child."""
    if not key:
        raise ValueError("The pseudonym key must not be empty")
    if isinstance(pseudonyms, pa.ChunkedArray):
        pseudonyms = pseudonyms.combine_chunks()
    count = len(pseudonyms)
    if count == 0:
        return pa.array([], pa.string())
    if count > MAX_VALUES:
        # 64 hex characters each must fit one Arrow string array (2 GiB); a file this size is
        # over read_extract's limit in CSV, but a Parquet file could hold it.
        raise ValueError(f"Over {MAX_VALUES} distinct pseudonyms at once: split the file")
    # As bytes straight from Arrow's buffers (a null is an empty value, masked again at the end).
    values = pseudonyms.cast(pa.large_binary())
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[values.offset : values.offset + count + 1]
    first = int(offsets[0])
    data = memoryview(buffers[2] or b"")[first : int(offsets[-1])]
    offsets = offsets - first
    if child_process is None:
        child_process = count >= CHILD_PROCESS_FROM and bool(sys.executable)
    if child_process:
        digest = _child_digests(key, offsets, data, count)
    else:
        digest = hmac_worker.digests(key, offsets.tolist(), data)
    # The digests in hex as one buffer of fixed-width (64-character) strings.
    hexed = digest.hex().encode("ascii")
    bounds = np.arange(0, 64 * (count + 1), 64, dtype=np.int64)
    keys = pa.LargeStringArray.from_buffers(count, pa.py_buffer(bounds), pa.py_buffer(hexed))
    keys = keys.cast(pa.string())
    if pseudonyms.null_count:
        keys = pc.if_else(pc.is_null(pseudonyms), pa.scalar(None, pa.string()), keys)
    return keys


def _child_digests(
    key: bytes, offsets: np.ndarray[Any, np.dtype[np.int64]], data: memoryview, count: int
) -> bytes:
    """`hmac_worker.digests` in a child process (the worker's protocol). Its failure, or no
    answer within `_child_timeout`, is an error naming nothing of the input."""
    order = sys.byteorder
    job = b"".join(
        [
            len(key).to_bytes(4, order),
            key,
            count.to_bytes(8, order),
            offsets.tobytes(),
            data,
        ]
    )
    timeout = _child_timeout(count)
    try:
        worker = subprocess.run(  # noqa: S603 (this interpreter and this package's own script)
            [sys.executable, "-I", "-S", hmac_worker.__file__],
            input=job,
            capture_output=True,
            check=False,
            env={},  # not this process's environment, which may hold KVARUS_PSEUDONYM_KEY
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        # The loader waits for the keys holding the warehouse's write locks: never forever.
        raise RuntimeError(f"The re-keying process did not finish in {timeout:.0f} s") from None
    if worker.returncode != 0 or len(worker.stdout) != 32 * count:
        raise RuntimeError(
            f"The re-keying process failed (exit status {worker.returncode}, "
            f"{len(worker.stdout)} of {32 * count} bytes)"
        )
    return worker.stdout


def _child_timeout(count: int) -> float:
    """Seconds the child may take: a minute, plus 20 µs per value (it re-keys about 1.3 million
    values a second, so 25 times its time on this machine)."""
    return 60.0 + count * 20e-6
