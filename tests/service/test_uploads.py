"""`service.uploads`: what a file name may be and what the ledger keeps of it, one part per
field, and the upload list showing the rows a client knows."""

from typing import Annotated

import pytest
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import Session, col, select

from etl.privacy import is_identity_number
from schemas.catalog import Upload
from schemas.forms import Form as ExtractForm
from service import errors, uploads
from service.settings import Settings
from tests.conftest import PROVIDER_A, PROVIDER_B, ExtractWriter, episode_row
from tests.service.conftest import Headers

API = "/api/v1"
PROBLEM = "application/problem+json"
# A valid identity number: 010190 + 000 + check digits 8 and 3 (k1 = 11 - (3·0 + 7·1 + 6·0 +
# 1·1 + 8·9 + 9·0 + 4·0 + 5·0 + 2·0) mod 11 = 11 - 80 mod 11 = 8; k2 = 11 - (5·0 + 4·1 + 3·0 +
# 2·1 + 7·9 + 6·0 + 5·0 + 4·0 + 3·0 + 2·8) mod 11 = 11 - 85 mod 11 = 3).
NUMBER = "01019000083"


def test_the_worked_number_is_valid() -> None:
    assert is_identity_number(NUMBER)
    assert not is_identity_number("01019000084")


@pytest.mark.parametrize(
    "name",
    [
        "010190_00083.csv",
        "010190\u200b00083.csv",  # zero-width space
        "01.01.90 00083.csv",
        "010190  00083.csv",
        "010190--00083.csv",
        "010190+00083.csv",
        "010 190 00083.csv",
        "010190%2000083.csv",  # URL-encoded space
        "basis 2024 010190_00083.csv",  # beside other digits
        "rapport_010190_00083_v2.xlsx",
        "010190\u00a000083.csv",  # caught by etl.privacy.safe_filename already
        "01019000083.csv",
    ],
)
def test_a_name_hiding_an_identity_number_is_withheld(name: str) -> None:
    assert uploads.ledger_filename(name) == uploads.NAME_WITHHELD


@pytest.mark.parametrize(
    "name",
    [
        "basis_2024_q1.csv",
        "æøå utskrivning 2024-03-31.xlsx",
        "010190_00084.csv",  # wrong check digit
        "udir_2024_01_01.parquet",
        "../../../etc/passwd",
    ],
)
def test_other_names_are_kept(name: str) -> None:
    assert uploads.ledger_filename(name) == name


def _post(client: TestClient, headers: Headers, name: str, content: bytes = b"x;y\n1;2\n") -> int:
    response = client.post(
        f"{API}/uploads",
        files={"file": (name, content, "text/csv")},
        data={"form": "basis"},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    upload_id = response.json()["id"]
    assert isinstance(upload_id, int)
    return upload_id


def test_the_api_withholds_a_name_hiding_an_identity_number(
    client: TestClient, headers: dict[str, Headers]
) -> None:
    registry = headers["registry"]
    upload_id = _post(client, registry, "010190_00083.csv")
    polled = client.get(f"{API}/uploads/{upload_id}", headers=registry)
    listed = client.get(f"{API}/uploads", headers=registry)
    assert polled.json()["filename"] == uploads.NAME_WITHHELD
    assert [u["filename"] for u in listed.json()["items"]] == [uploads.NAME_WITHHELD]
    assert "00083" not in polled.text + listed.text


def _post_raw(client: TestClient, headers: Headers, filename: bytes) -> Response:
    """A multipart body written by hand: httpx would percent-encode a control character."""
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="form"\r\n\r\nbasis\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/csv\r\n\r\nx;y\n1;2\n\r\n--XyZ--\r\n"
    )
    response: Response = client.post(
        f"{API}/uploads",
        content=body,
        headers={**headers, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    return response


@pytest.mark.parametrize("name", [b"x.\x00", b"a.c\x00sv", b"basis\t.csv", b"basis\x7f.csv"])
def test_a_file_name_with_a_control_character_is_422(
    client: TestClient, app: FastAPI, headers: dict[str, Headers], name: bytes
) -> None:
    response = _post_raw(client, headers["registry"], name)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == (
        "the file name holds a control character (such as a NUL byte or a line break); "
        "rename the file and send it again"
    )
    incoming = app.state.settings.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())
    with Session(app.state.engine) as session:
        assert session.exec(select(Upload)).all() == []


def test_a_hand_written_body_with_a_plain_name_is_accepted(
    client: TestClient, headers: dict[str, Headers]
) -> None:
    response = _post_raw(client, headers["registry"], b"basis.csv")
    assert response.status_code == 202
    assert response.json() == {"id": 1, "status": "pending"}


def test_the_received_file_keeps_only_a_plain_suffix(
    client: TestClient, app: FastAPI, headers: dict[str, Headers]
) -> None:
    _post(client, headers["registry"], "basis.c\u00e6v")  # accepted; rejected by the reader
    _post(client, headers["registry"], "Basis 2024.CSV")
    with Session(app.state.engine) as session:
        names = session.exec(
            select(Upload.filename).where(col(Upload.uploaded_by).in_(["api:1", "api:3"]))
        ).all()
    # No suffix for '.cæv', none the reader knows; the job's ledger row keeps no client name.
    assert sorted(names) == ["upload", "upload.csv"]


def _single_parts_app() -> FastAPI:
    """A route shaped like `POST /uploads` (file and form fields) that calls `single_parts`."""
    app = FastAPI()
    errors.install(app)

    @app.post("/parts")
    async def parts(
        request: Request,
        file: Annotated[UploadFile, File()],
        form: Annotated[ExtractForm, Form()],
    ) -> dict[str, str]:
        await uploads.single_parts(request)
        return {"file": file.filename or "", "form": form.value}

    return app


def test_two_file_parts_are_422() -> None:
    with TestClient(_single_parts_app(), raise_server_exceptions=False) as client:
        two = client.post(
            "/parts",
            files=[("file", ("a.csv", b"a", "text/csv")), ("file", ("b.csv", b"b", "text/csv"))],
            data={"form": "basis"},
        )
        one = client.post(
            "/parts", files={"file": ("a.csv", b"a", "text/csv")}, data={"form": "basis"}
        )
        forms = client.post(
            "/parts",
            files={"file": ("a.csv", b"a", "text/csv")},
            data={"form": ["basis", "discharge"]},
        )
    assert two.status_code == 422
    assert two.headers["content-type"] == PROBLEM
    assert two.json()["detail"] == (
        "the request holds 2 parts named 'file'; send one file (and one form) per upload"
    )
    assert one.status_code == 200
    assert one.json() == {"file": "a.csv", "form": "basis"}
    assert forms.status_code == 422
    assert "2 parts named 'form'" in forms.json()["detail"]


def test_the_list_shows_the_request_rows_the_client_polls(
    client: TestClient,
    headers: dict[str, Headers],
    write_extract: ExtractWriter,
) -> None:
    registry = headers["registry"]
    own = write_extract(ExtractForm.BASIS, [episode_row(ExtractForm.BASIS, 1, "P-1")])
    other = write_extract(
        ExtractForm.BASIS,
        [episode_row(ExtractForm.BASIS, 2, "P-2", provider_orgnr=PROVIDER_B)],
    )
    first = _post(client, registry, "basis_2024_q1.csv", own.read_bytes())
    second = _post(client, registry, "basis_2024_q2.csv", other.read_bytes())
    # TestClient runs the background job before returning: each created a ledger row too.
    assert (first, second) == (1, 3)
    polled = {i: client.get(f"{API}/uploads/{i}", headers=registry).json() for i in (first, second)}
    listed = client.get(f"{API}/uploads", headers=registry).json()
    keys = ("id", "filename", "status", "uploaded_by", "providers", "rows_accepted")
    assert [{k: u[k] for k in keys} for u in listed["items"]] == [
        {k: polled[i][k] for k in keys} for i in (second, first)
    ]
    assert listed["total"] == 2
    assert [(u["filename"], u["status"], u["rows_accepted"]) for u in listed["items"]] == [
        ("basis_2024_q2.csv", "loaded", 1),
        ("basis_2024_q1.csv", "loaded", 1),
    ]
    assert all(u["uploaded_by"].startswith("key:") for u in listed["items"])
    # A trust sees its own upload only, as the request row.
    trust = client.get(f"{API}/uploads", headers=headers["trust"]).json()
    assert [(u["id"], u["providers"]) for u in trust["items"]] == [(first, [PROVIDER_A])]
    assert trust["total"] == 1
    loaded = client.get(f"{API}/uploads", params={"status": "loaded"}, headers=registry).json()
    assert [u["id"] for u in loaded["items"]] == [second, first]


def test_the_upload_route_refuses_two_file_parts_and_keeps_nothing(
    client: TestClient, app: FastAPI, headers: dict[str, Headers]
) -> None:
    files = [("file", ("a.csv", b"x;y\n1;2\n", "text/csv")), ("file", ("b.csv", b"z", "text/csv"))]
    answer = client.post(
        f"{API}/uploads", files=files, data={"form": "basis"}, headers=headers["registry"]
    )
    assert answer.status_code == 422
    assert "2 parts named 'file'" in answer.json()["detail"]
    with Session(app.state.engine) as session:
        assert session.exec(select(Upload)).all() == []


def test_an_unknown_upload_id_is_not_echoed(
    client: TestClient, headers: dict[str, Headers]
) -> None:
    typed = "1019000083"  # 01019000083, a valid identity number, without its leading zero
    answer = client.get(f"{API}/uploads/{typed}", headers=headers["registry"])
    assert answer.status_code == 404
    assert answer.json()["detail"] == "no upload with this id"
    assert typed not in answer.text


def test_the_ledger_row_of_an_api_upload_is_not_served(
    client: TestClient,
    app: FastAPI,
    headers: dict[str, Headers],
    write_extract: ExtractWriter,
) -> None:
    # The list hides the ledger row an API request's job created (its temporary file name and
    # `api:N` uploader are internal): its detail and report page were served by id all the same,
    # to the registry and to the trust whose provider it holds. Now the same 404 as a missing id.
    own = write_extract(ExtractForm.BASIS, [episode_row(ExtractForm.BASIS, 1, "P-1")])
    request_id = _post(client, headers["registry"], "basis_2024_q1.csv", own.read_bytes())
    with Session(app.state.engine) as session:
        ledger = session.exec(select(Upload).where(Upload.uploaded_by == "api:1")).one()
    assert (request_id, ledger.id, ledger.status, ledger.providers) == (1, 2, "loaded", PROVIDER_A)
    assert ledger.filename != "basis_2024_q1.csv"  # the server's temporary file name
    for role in ("registry", "trust"):
        for path in (f"{API}/uploads/2", f"{API}/uploads/2/report.html"):
            answer = client.get(path, headers=headers[role])
            assert answer.status_code == 404, (role, path, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            assert answer.json()["detail"] == "no upload with this id"
            assert ledger.filename not in answer.text
            assert "api:1" not in answer.text
        # The request row the client polls is served, with its load's outcome and report.
        polled = client.get(f"{API}/uploads/1", headers=headers[role])
        assert polled.status_code == 200
        assert polled.json()["filename"] == "basis_2024_q1.csv"
        assert polled.json()["status"] == "loaded"
        assert polled.json()["report"] is not None
        page = client.get(f"{API}/uploads/1/report.html", headers=headers[role])
        assert page.status_code == 200


def test_a_route_failing_after_the_file_is_received_leaves_nothing(
    client: TestClient,
    app: FastAPI,
    headers: dict[str, Headers],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No job will take the file: nothing of it is left (it was never on disk)."""

    def fail(*args: object, **kwargs: object) -> Upload:
        raise errors.ServiceUnavailable("the catalog is busy")

    monkeypatch.setattr(uploads, "create_request", fail)
    answer = client.post(
        f"{API}/uploads",
        files={"file": ("a.csv", b"x;y\n1;2\n", "text/csv")},
        data={"form": "basis"},
        headers=headers["registry"],
    )
    assert answer.status_code == 503
    assert not (settings.data_dir / "incoming").exists()


def test_a_duplicate_names_the_upload_the_client_polled_for_the_file(
    client: TestClient, headers: dict[str, Headers], write_extract: ExtractWriter
) -> None:
    # It named the job's ledger row (id 2), which the API answers as a missing id.
    registry = headers["registry"]
    content = write_extract(ExtractForm.BASIS, [episode_row(ExtractForm.BASIS, 1, "P-1")])
    first = _post(client, registry, "basis.csv", content.read_bytes())
    again = _post(client, registry, "basis.csv", content.read_bytes())
    assert (first, again) == (1, 3)
    assert client.get(f"{API}/uploads/{again}", headers=registry).json()["status"] == "duplicate"
    page = client.get(f"{API}/uploads/{again}/report.html", headers=registry)
    assert page.status_code == 404
    assert page.json()["detail"] == (
        "No quality report: a duplicate is not validated again; the same file was loaded as "
        "upload 1"
    )
