"""A publish and an erasure commit the catalog before they release the warehouse's write locks.

The next writer (an erasure, a publish) reads the committed releases once it holds the locks: a
release row committed after they were released can be missed by an erasure in between, which then
neither retires it nor keeps its files.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from etl.erasure import erase_patients
from etl.load import load_file
from etl.release import publish_release
from etl.warehouse import TABLES, Warehouse
from schemas.catalog import Erasure, Release
from schemas.forms import Form
from schemas.organisations import Hierarchy
from tests.conftest import ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)
ERASED = "P-ERASE-LOCKED-0815"

Committed = tuple[list[tuple[int, bool]], int]


class _Watched(Warehouse):
    """A warehouse that records the committed catalog at the moment its write locks are released."""

    def __init__(self, root: Path, releases_dir: Path, engine: Engine) -> None:
        super().__init__(root, releases_dir)
        self.engine = engine
        self.at_release: list[Committed] = []

    @contextmanager
    def writing(self, tables: Sequence[str] = TABLES) -> Iterator[None]:
        with super().writing(tables):
            yield
            with Session(self.engine) as other:  # another connection: committed rows only
                releases = other.exec(select(Release).order_by(col(Release.number))).all()
                erasures = len(other.exec(select(Erasure)).all())
                self.at_release.append(([(r.number, r.retired) for r in releases], erasures))


def _load(write: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes) -> None:
    rows = [episode_row(Form.BASIS, 1, "P-KEEP"), episode_row(Form.BASIS, 2, ERASED)]
    upload = load_file(
        write(Form.BASIS, rows), Form.BASIS, warehouse=warehouse, session=session, key=key,
        known_providers=KNOWN, today=date(2025, 11, 1),
    )  # fmt: skip
    assert upload.status == "loaded"
    session.commit()


def test_a_release_is_committed_before_the_locks_are_released(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    catalog_engine: Engine,
) -> None:
    _load(write_extract, warehouse, session, key)
    watched = _Watched(warehouse.root, warehouse.releases_dir, catalog_engine)

    manifest = publish_release(watched, watched.releases_dir, session, note="q1")

    assert manifest.release == 1
    assert watched.at_release == [([(1, False)], 0)]


def test_an_erasure_commits_the_retired_release_and_its_replacement_under_the_locks(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
    catalog_engine: Engine,
) -> None:
    _load(write_extract, warehouse, session, key)
    publish_release(warehouse, warehouse.releases_dir, session, note="q1")
    session.commit()
    watched = _Watched(warehouse.root, warehouse.releases_dir, catalog_engine)

    erasure = erase_patients(
        [ERASED], warehouse=watched, session=session, key=key, releases_dir=watched.releases_dir
    )

    assert erasure.releases_rebuilt == "1->2"
    # A second erasure taking the locks now finds release 2 and keeps (or retires) it.
    assert watched.at_release == [([(1, True), (2, False)], 1)]


def test_a_failed_publish_leaves_no_release_behind(
    write_extract: ExtractWriter,
    warehouse: Warehouse,
    session: Session,
    key: bytes,
) -> None:
    _load(write_extract, warehouse, session, key)

    def fail(_: object) -> None:
        raise RuntimeError("the indicators could not be computed")

    with pytest.raises(RuntimeError, match="could not be computed"):
        publish_release(warehouse, warehouse.releases_dir, session, before_commit=fail)

    assert session.exec(select(Release)).all() == []
    assert not (warehouse.releases_dir / "1").exists()
    # The next publish takes number 1.
    assert publish_release(warehouse, warehouse.releases_dir, session).release == 1
