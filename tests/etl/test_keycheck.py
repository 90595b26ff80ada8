"""The key check: loads and erasures refuse a pseudonym key other than the register's."""

import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from etl import keycheck
from etl.erasure import PENDING, erase_patients
from etl.keycheck import CHECK_MESSAGE, KEY_CHECK_FILE, check_key, key_check_value
from etl.load import load_file
from etl.warehouse import QUARANTINE, Warehouse
from schemas.catalog import Erasure, Upload
from schemas.errors import ConfigurationError
from schemas.forms import Form
from schemas.organisations import Hierarchy
from service.cli import app
from tests.conftest import TEST_KEY, ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
OTHER_KEY = b"another-pseudonym-key-0123456789-xyz"  # 36 characters, not TEST_KEY
PATIENT = "P-KEY-1"


def _load(path: Path, form: Form, warehouse: Warehouse, session: Session, key: bytes) -> Upload:
    return load_file(
        path, form, warehouse=warehouse, session=session, key=key, known_providers=KNOWN,
        today=date(2025, 11, 1),
    )  # fmt: skip


def _register(write: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes) -> None:
    """Two patients under `key`: PATIENT with two episodes and a measurement, P-KEY-2 with one."""
    basis = [
        episode_row(Form.BASIS, 1, PATIENT),
        episode_row(Form.BASIS, 2, PATIENT),
        episode_row(Form.BASIS, 3, "P-KEY-2"),
    ]
    assert _load(write(Form.BASIS, basis), Form.BASIS, warehouse, session, key).status == "loaded"
    session.commit()


def _state(warehouse: Warehouse, session: Session) -> tuple[dict[str, int], list[str]]:
    """Every table's Delta version and the ledger's statuses."""
    uploads = session.exec(select(Upload).order_by(col(Upload.id))).all()
    return warehouse.versions(), [u.status for u in uploads]


def test_a_load_under_another_key_is_refused_before_anything_is_stored(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    _register(write_extract, warehouse, session, key)
    before = _state(warehouse, session)
    assert before[1] == ["loaded"]
    measurement = write_extract(Form.MEASUREMENT, [episode_row(Form.MEASUREMENT, 1, PATIENT)])

    with pytest.raises(ConfigurationError) as refused:
        _load(measurement, Form.MEASUREMENT, warehouse, session, OTHER_KEY)
    assert refused.value.detail == keycheck.WRONG_KEY
    assert refused.value.exit_code == 2
    session.commit()
    # No Delta commit, no ledger row (etl.load.load_file: the file is not at fault).
    assert _state(warehouse, session) == before
    assert warehouse.count("measurement") == 0
    # The register's key still loads it, against the patient's stored episode.
    upload = _load(measurement, Form.MEASUREMENT, warehouse, session, key)
    assert (upload.status, upload.rows_accepted, upload.rows_quarantined) == ("loaded", 1, 0)


def test_an_erasure_under_another_key_erases_nothing_and_the_right_key_then_erases(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    _register(write_extract, warehouse, session, key)
    before = _state(warehouse, session)

    with pytest.raises(ConfigurationError, match="not the one this register was loaded with"):
        erase_patients(
            [PATIENT], warehouse=warehouse, session=session, key=OTHER_KEY,
            releases_dir=warehouse.releases_dir,
        )  # fmt: skip
    session.commit()
    assert _state(warehouse, session) == before
    assert warehouse.count("basis") == 3
    assert session.exec(select(Erasure)).all() == []
    assert not (warehouse.root / PENDING).exists()

    erasure = erase_patients(
        [PATIENT], warehouse=warehouse, session=session, key=key,
        releases_dir=warehouse.releases_dir,
    )  # fmt: skip
    assert erasure.rows_erased["basis"] == 2
    assert warehouse.table(Form.BASIS).column("record_id").to_pylist() == ["b3"]


def test_an_optout_file_under_another_key_erases_nothing(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    _register(write_extract, warehouse, session, key)
    before = _state(warehouse, session)
    optout = write_extract(Form.OPTOUT, [episode_row(Form.OPTOUT, 1, PATIENT)])
    with pytest.raises(ConfigurationError):
        _load(optout, Form.OPTOUT, warehouse, session, OTHER_KEY)
    session.commit()
    assert _state(warehouse, session) == before
    assert warehouse.count("basis") == 3


def test_the_check_value_is_the_documented_hmac_and_no_patient_key(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    _register(write_extract, warehouse, session, key)
    value = hmac.new(TEST_KEY.encode(), b"kvarus key check v1\xff", hashlib.sha256).hexdigest()
    assert (warehouse.root / KEY_CHECK_FILE).read_text(encoding="ascii") == value + "\n"
    assert key_check_value(key) == value
    # Not UTF-8, so no pseudonym re-keys to it (`rekey` HMACs a pseudonym's UTF-8 bytes).
    with pytest.raises(UnicodeDecodeError):
        CHECK_MESSAGE.decode("utf-8")
    assert value not in warehouse.table(Form.BASIS).column("patient_key").to_pylist()


def test_a_register_without_the_file_adopts_the_key_of_its_first_use(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    _register(write_extract, warehouse, session, key)
    # A register loaded before the check existed: its rows, no key.check.
    (warehouse.root / KEY_CHECK_FILE).unlink()
    second = write_extract(Form.BASIS, [episode_row(Form.BASIS, 4, "P-KEY-4")])
    assert _load(second, Form.BASIS, warehouse, session, key).status == "loaded"
    assert (warehouse.root / KEY_CHECK_FILE).read_text(encoding="ascii").strip() == (
        key_check_value(key)
    )
    third = write_extract(Form.BASIS, [episode_row(Form.BASIS, 5, "P-KEY-5")])
    with pytest.raises(ConfigurationError):
        _load(third, Form.BASIS, warehouse, session, OTHER_KEY)


def test_two_concurrent_first_loads_under_two_keys_leave_one_check_value(
    write_extract: ExtractWriter, warehouse: Warehouse, catalog_engine: Engine
) -> None:
    keys = {b"first-pseudonym-key-0123456789-abcdef", b"second-pseudonym-key-0123456789-abcd"}
    files = {
        k: write_extract(Form.BASIS, [episode_row(Form.BASIS, n, f"P-{n}") for n in (i, i + 10)])
        for i, k in enumerate(sorted(keys))
    }

    def load(key: bytes) -> str:
        with Session(catalog_engine, expire_on_commit=False) as session:
            try:
                upload = _load(files[key], Form.BASIS, warehouse, session, key)
            except ConfigurationError:
                return "refused"
            session.commit()
            return upload.status

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = dict(zip(sorted(keys), pool.map(load, sorted(keys)), strict=True))
    assert sorted(statuses.values()) == ["loaded", "refused"]
    (winner,) = (k for k, status in statuses.items() if status == "loaded")
    assert (warehouse.root / KEY_CHECK_FILE).read_text(encoding="ascii") == (
        key_check_value(winner) + "\n"
    )
    assert warehouse.count("basis") == 2
    assert [p.name for p in warehouse.root.glob(f"*{KEY_CHECK_FILE}*")] == [KEY_CHECK_FILE]


def test_many_concurrent_first_uses_of_one_key_all_pass(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: check_key(root, TEST_KEY.encode()), range(32)))
    assert [p.name for p in root.iterdir()] == [KEY_CHECK_FILE]
    assert (root / KEY_CHECK_FILE).read_text(encoding="ascii") == (
        key_check_value(TEST_KEY.encode()) + "\n"
    )


def test_a_first_use_overtaken_by_another_of_the_same_key_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process's first use runs whole while this one syncs its value under the temporary
    # name: the other finds no key.check (the name appears only with its value), adopts the key;
    # this one's link then fails, and it compares with the value the other wrote.
    root = tmp_path / "warehouse"
    real_fsync = os.fsync
    interleaved: list[bool] = []

    def fsync(fd: int) -> None:
        if not interleaved:
            interleaved.append(True)
            check_key(root, TEST_KEY.encode())  # the other first use: adopts, and passes
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    check_key(root, TEST_KEY.encode())  # loses the race, reads the winner's value: passes
    assert interleaved == [True]
    with pytest.raises(ConfigurationError):
        check_key(root, OTHER_KEY)


def test_a_first_use_that_loses_the_race_to_another_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "warehouse"
    real_link = os.link

    def link(source: str, target: Path) -> None:
        # The other key's first use links its value just before this one does.
        target.write_text(key_check_value(OTHER_KEY) + "\n", encoding="ascii")
        real_link(source, target)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(ConfigurationError) as refused:
        check_key(root, TEST_KEY.encode())
    assert refused.value.detail == keycheck.WRONG_KEY
    assert [p.name for p in root.iterdir()] == [KEY_CHECK_FILE]


def test_a_damaged_check_file_is_refused_as_such(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    root.mkdir()
    for content in (b"", b"\xff" * 64, key_check_value(TEST_KEY.encode()).encode()[:63]):
        (root / KEY_CHECK_FILE).write_bytes(content)
        with pytest.raises(ConfigurationError) as refused:
            check_key(root, TEST_KEY.encode())
        assert refused.value.detail == keycheck.DAMAGED


def test_the_cli_refuses_another_key_with_exit_2_and_names_neither_key(
    write_extract: ExtractWriter, tmp_path: Path
) -> None:
    env = {
        "KVARUS_DATA_DIR": str(tmp_path / "var"),
        "KVARUS_PSEUDONYM_KEY": TEST_KEY,
        "KVARUS_DATABASE_URL": "",
        "COLUMNS": "200",
    }
    wrong = env | {"KVARUS_PSEUDONYM_KEY": OTHER_KEY.decode()}
    runner = CliRunner()
    basis = write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, PATIENT)])
    measurement = write_extract(Form.MEASUREMENT, [episode_row(Form.MEASUREMENT, 1, PATIENT)])
    assert runner.invoke(app, ["load", str(basis), "--form", "basis"], env=env).exit_code == 0

    refusals = [
        runner.invoke(app, ["load", str(measurement), "--form", "measurement"], env=wrong),
        runner.invoke(app, ["erase", "--pseudonym", PATIENT], env=wrong),
    ]
    for result in refusals:
        assert result.exit_code == 2, result.output
        assert "not the one this register was loaded with" in result.output
        for secret in (TEST_KEY, OTHER_KEY.decode(), key_check_value(TEST_KEY.encode())):
            assert secret not in result.output
    warehouse = Warehouse(tmp_path / "var" / "warehouse")
    assert (warehouse.count("basis"), warehouse.count("measurement")) == (1, 0)

    result = runner.invoke(app, ["erase", "--pseudonym", PATIENT], env=env)
    assert result.exit_code == 0, result.output
    assert "erased 1 rows of 1 patient(s)" in result.output
    assert (warehouse.count("basis"), warehouse.count(QUARANTINE)) == (0, 0)
