"""Loading an optout file passes `before_commit` on to the erasure: it runs, under the loader's
write locks, for the replacement release, before that release is committed."""

from datetime import date

from sqlmodel import Session, col, select

from etl.load import load_file
from etl.release import publish_release
from etl.warehouse import Warehouse
from schemas.catalog import Release
from schemas.forms import Form
from schemas.manifest import ReleaseManifest
from schemas.organisations import Hierarchy
from tests.conftest import ExtractWriter, episode_row

KNOWN = frozenset(o.orgnr for o in Hierarchy.default().providers)


def test_the_hook_sees_the_replacement_release_before_its_commit(
    write_extract: ExtractWriter, warehouse: Warehouse, session: Session, key: bytes
) -> None:
    basis = [episode_row(Form.BASIS, 1, "P-KEEP"), episode_row(Form.BASIS, 2, "P-GONE")]
    load_file(
        write_extract(Form.BASIS, basis), Form.BASIS, warehouse=warehouse, session=session,
        key=key, known_providers=KNOWN, today=date(2025, 11, 1),
    )  # fmt: skip
    session.commit()
    publish_release(warehouse, warehouse.releases_dir, session, note="before")
    seen: list[tuple[int, int, list[int]]] = []

    def hook(manifest: ReleaseManifest) -> None:
        # Locks held: another writer could not take them. The replacement is not committed yet.
        with Session(session.get_bind()) as other:
            committed = other.exec(select(Release.number).order_by(col(Release.number))).all()
        seen.append((manifest.release, manifest.tables["basis"].row_count, list(committed)))

    optout = [episode_row(Form.OPTOUT, 1, "P-GONE")]
    upload = load_file(
        write_extract(Form.OPTOUT, optout), Form.OPTOUT, warehouse=warehouse, session=session,
        key=key, known_providers=KNOWN, today=date(2025, 11, 1), before_commit=hook,
    )  # fmt: skip
    assert upload.status == "loaded"
    assert seen == [(2, 1, [1])]
    numbers = session.exec(select(Release.number, Release.retired)).all()
    assert sorted(numbers) == [(1, True), (2, False)]
