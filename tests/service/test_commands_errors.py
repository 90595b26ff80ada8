"""Every failure a command meets is one line and an exit code (1 runtime failure or rejected input,
2 usage or configuration error), never a traceback, and never an input value: not a byte of a
pseudonym, not a mistyped key, not the catalog's URL (it may hold a password)."""

from pathlib import Path

import pytest
import typer
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner, Result

from schemas.forms import Form
from service.cli import app
from service.commands import common
from service.commands import demo as demo_command
from service.commands import generate as generate_command
from service.commands import indicators as indicators_command
from service.settings import DEMO_PSEUDONYM_KEY
from tests.conftest import ExtractWriter, episode_row

SECRET = "hunter2-0123456789-0123456789-abcdef"


def _invoke(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> Result:
    result = CliRunner().invoke(app, args, env=env, input=stdin)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def _said(result: Result) -> str:
    """The output with the usage-error box's borders and line breaks taken out."""
    return " ".join(result.output.replace("│", " ").split())


def _strerror(path: str) -> str:
    """What the OS says when `path` is opened for writing here (root may meet another error)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).open("ab").close()
    except OSError as refused:
        return str(refused.strerror)
    raise AssertionError(f"{path} could be written")


def test_indicators_refuses_an_unwritable_out_before_computing(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(indicators_command, "compute", never)
    (tmp_path / "afile").write_text("")
    cases = {
        str(tmp_path): f"file '{tmp_path}' is a directory.",
        f"{tmp_path}/afile/x.csv": f"cannot write {tmp_path}/afile/x.csv: {tmp_path}/afile is "
        "not a directory",
        "/proc/x/y.json": f"cannot write /proc/x/y.json: {_strerror('/proc/x/y.json')}",
    }
    for out, message in cases.items():
        result = _invoke(["indicators", "--release", "1", "--out", out], env)
        assert result.exit_code == 2, result.output
        assert f"Invalid value for '--out': {message}" in _said(result)


def test_indicators_format_without_out_is_a_usage_error(env: dict[str, str]) -> None:
    result = _invoke(["indicators", "--format", "json"], env)
    assert result.exit_code == 2
    assert (
        "Invalid value for '--format': --format is the format of --out: give --out PATH as well"
    ) in _said(result)


def test_validate_creates_the_out_directory_and_refuses_an_unwritable_one(
    env: dict[str, str], tmp_path: Path, write_extract: ExtractWriter
) -> None:
    extract = str(write_extract(Form.BASIS, [episode_row(Form.BASIS, 1, "P-VAL-1")]))
    report = tmp_path / "nodir" / "report.html"
    result = _invoke(["validate", extract, "--form", "basis", "--out", str(report)], env)
    assert result.exit_code == 0, result.output
    assert f"Report written to {report}" in _said(result)
    assert report.read_text(encoding="utf-8").startswith("Form basis, 1 rows")
    refused = "/sys/kernel/r.txt"
    result = _invoke(["validate", extract, "--form", "basis", "--out", refused], env)
    assert result.exit_code == 2
    assert f"Invalid value for '--out': cannot write {refused}: {_strerror(refused)}" in _said(
        result
    )


def test_generate_refuses_a_file_or_an_uncreatable_directory(
    env: dict[str, str], tmp_path: Path
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    result = _invoke(["generate", "--out", str(afile), "--episodes", "5"], env)
    assert result.exit_code == 2
    assert f"Invalid value for '--out': {afile} is a file, not a directory" in _said(result)
    result = _invoke(["generate", "--out", "/proc/kvarus", "--episodes", "5"], env)
    assert result.exit_code == 2
    assert (
        "Invalid value for '--out': cannot create /proc/kvarus: No such file or directory"
        in _said(result)
    )


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_erase_refuses_pseudonyms_that_are_not_utf8_without_quoting_them(
    env: dict[str, str], tmp_path: Path, source: str
) -> None:
    cp1252 = "P-Ærøy-1\n".encode("cp1252")
    listing = tmp_path / "optouts.txt"
    listing.write_bytes(cp1252)
    if source == "file":
        result = _invoke(["erase", "--pseudonyms-file", str(listing)], env)
        expected = "Input rejected: the pseudonyms file is not UTF-8 text\n"
    else:
        result = _invoke(["erase", "--stdin"], env, stdin=cp1252)
        expected = "Input rejected: the standard input is not UTF-8 text\n"
    assert result.exit_code == 1
    assert result.output == expected  # neither a byte (0xc6) nor any part of the pseudonym


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"KVARUS_DEMO": f"maybe-{SECRET}"},
            "KVARUS_DEMO: input should be a valid boolean, unable to interpret input",
        ),
        (
            {"KVARUS_MAX_UPLOAD_BYTES": SECRET, "KVARUS_DEMO": "maybe"},
            "KVARUS_DEMO: input should be a valid boolean, unable to interpret input; "
            "KVARUS_MAX_UPLOAD_BYTES: input should be a valid integer, unable to parse string as "
            "an integer",
        ),
        (
            {"KVARUS_MAX_UPLOAD_BYTES": "0"},
            "KVARUS_MAX_UPLOAD_BYTES: input should be greater than or equal to 1",
        ),
        (
            {"KVARUS_PSEUDONYM_KEY": " " * 35},
            "KVARUS_PSEUDONYM_KEY must be at least 32 characters, not counting spaces around it",
        ),
        (
            # The public demo key, pasted with a newline and a space around it, outside demo mode.
            {"KVARUS_PSEUDONYM_KEY": f"{DEMO_PSEUDONYM_KEY}\n ", "KVARUS_DEMO": "0"},
            "the demo pseudonym key is refused outside demo mode",
        ),
        (
            {"KVARUS_DATABASE_URL": f"nosuchdb://kvarus:{SECRET}@db/kvarus"},
            "KVARUS_DATABASE_URL is not a usable SQLAlchemy URL (NoSuchModuleError)",
        ),
        (
            {"KVARUS_DATABASE_URL": f"not a URL {SECRET}"},
            "KVARUS_DATABASE_URL is not a usable SQLAlchemy URL (ArgumentError)",
        ),
    ],
)
def test_a_bad_variable_is_named_but_its_value_never_printed(
    env: dict[str, str], tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    extract = tmp_path / "basis.csv"
    extract.write_text("")
    result = _invoke(["load", str(extract), "--form", "basis"], env | variables)
    assert result.exit_code == 2
    assert result.output == f"Configuration error: {message}\n"
    assert SECRET not in result.output


def test_a_data_dir_that_is_a_file_or_cannot_be_created_is_a_configuration_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Named, never shown (README: a bad variable is named with what it expects, not its value),
    # by every command that reads the settings, `kvarus serve` (the API's start-up) included.
    afile = tmp_path / "P-01019000083"
    afile.write_text("")
    cases = {
        str(afile): "Configuration error: KVARUS_DATA_DIR is not a directory\n",
        str(afile / "var"): "Configuration error: KVARUS_DATA_DIR cannot be created (Not a "
        "directory)\n",
        "/proc/kvarus-01019000083": "Configuration error: KVARUS_DATA_DIR cannot be created (No "
        "such file or directory)\n",
    }
    for command in (["uploads"], ["serve"], ["demo", "--no-serve"]):
        for data_dir, message in cases.items():
            result = _invoke(command, env | {"KVARUS_DATA_DIR": data_dir, "KVARUS_DEMO": "1"})
            assert result.exit_code == 2, (command, result.output)
            assert result.output == message
            assert "01019000083" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://kvarus:{SECRET}@127.0.0.1:1/kvarus",  # nothing listens on port 1
        f"sqlite:////proc/no-such-dir-{SECRET}/catalog.sqlite3",
    ],
)
def test_an_unreachable_catalog_is_one_line_without_its_url(env: dict[str, str], url: str) -> None:
    result = _invoke(["uploads"], env | {"KVARUS_DATABASE_URL": url})
    assert result.exit_code == 1
    assert result.output == (
        "Catalog database error: OperationalError (the catalog: KVARUS_DATABASE_URL, or the "
        "SQLite file in KVARUS_DATA_DIR)\n"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://kvarus:{SECRET}@localhost/kvarus",  # MySQLdb is not installed
        f"oracle://kvarus:{SECRET}@localhost/kvarus",
        f"postgresql+asyncpg://kvarus:{SECRET}@localhost/kvarus",
    ],
)
@pytest.mark.parametrize("command", [["uploads"], ["keys", "list"], ["serve", "--port", "1"]])
def test_a_catalog_driver_not_installed_is_a_configuration_error_without_its_url(
    env: dict[str, str], url: str, command: list[str]
) -> None:
    result = _invoke(command, env | {"KVARUS_DATABASE_URL": url})
    assert result.exit_code == 2
    assert result.output == (
        "Configuration error: KVARUS_DATABASE_URL names a database driver that is not installed "
        "(ModuleNotFoundError): expected a SQLite URL (sqlite:///PATH) or "
        "postgresql+psycopg://user@host/db\n"
    )
    assert SECRET not in result.output


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("99999999999999999999", "Input should be less than or equal to 9223372036854775807"),
        ("-5", "Input should be greater than or equal to 1"),
        ("0", "Input should be greater than or equal to 1"),
    ],
)
def test_uploads_limit_out_of_range_is_a_usage_error(
    env: dict[str, str], limit: str, message: str
) -> None:
    result = _invoke(["uploads", "--limit", limit], env)
    assert result.exit_code == 2
    assert f"Invalid value for '--limit': {message}" in _said(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--provider", "abc"],
            "Invalid value for '--provider': expected an organisation number: 9 digits, the last "
            "a check digit",
        ),
        (
            ["--provider", "983974881"],  # PROVIDER_A with a wrong check digit
            "Invalid value for '--provider': expected an organisation number: 9 digits, the last "
            "a check digit",
        ),
        (
            ["--optout-date", "2999-01-01"],
            "Invalid value for '--optout-date': an opt-out date cannot lie in the future",
        ),
    ],
)
def test_erase_refuses_a_malformed_provider_or_a_future_date(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = _invoke(["erase", "--pseudonym", "P-1", *args], env)
    assert result.exit_code == 2
    assert message in _said(result)
    assert not (Path(env["KVARUS_DATA_DIR"]) / "catalog.sqlite3").exists()  # refused up front


def test_keys_create_with_an_unknown_role_is_a_usage_error(env: dict[str, str]) -> None:
    result = _invoke(["keys", "create", "--role", "admin"], env)
    assert result.exit_code == 2
    assert "Invalid value for '--role': expected one of registry, trust, researcher" in _said(
        result
    )


class _Manifest(BaseModel):
    release: int


def _raising(error: BaseException) -> int:
    @common.reports_errors
    def command() -> int:
        raise error

    with pytest.raises(typer.Exit) as stopped:
        command()
    return stopped.value.exit_code


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            PermissionError(13, "Permission denied", "/srv/out.csv"),
            1,
            "Failed: Permission denied: /srv/out.csv",
        ),
        (
            OSError(f"Failed to open {SECRET}"),
            1,
            "Failed: an input or output operation (OSError)",
        ),
        (
            UnicodeDecodeError("utf-8", SECRET.encode(), 0, 1, "invalid start byte"),
            1,
            "Input rejected: text that is not UTF-8 (UnicodeDecodeError)",
        ),
        (
            IntegrityError("INSERT", {"pseudonym": SECRET}, Exception(SECRET)),
            1,
            "Catalog database error: IntegrityError (the catalog: KVARUS_DATABASE_URL, or the "
            "SQLite file in KVARUS_DATA_DIR)",
        ),
        (
            KeyboardInterrupt(),
            130,
            "Interrupted: the command was stopped before it finished",
        ),
        (
            # deltalake's error on a full disk during an erasure printed a traceback.
            RuntimeError(f"Failed to write {SECRET}: No space left on device (os error 28)"),
            1,
            "Failed: RuntimeError: No space left on device (its message is not shown: it may "
            "quote a record); anything left half done is repaired by the next load, release or "
            "erasure",
        ),
        (
            OSError(f"Generic error at {SECRET}: Permission denied (os error 13)"),
            1,
            "Failed: an input or output operation (OSError: Permission denied)",
        ),
    ],
)
def test_reports_errors_prints_one_line_without_the_message(
    capsys: pytest.CaptureFixture[str], error: BaseException, code: int, line: str
) -> None:
    assert _raising(error) == code
    captured = capsys.readouterr()
    assert captured.err == f"{line}\n"
    assert SECRET not in captured.err


def test_reports_errors_names_a_stored_model_that_does_not_validate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValidationError) as invalid:
        _Manifest.model_validate({"release": SECRET})
    assert _raising(invalid.value) == 1
    assert capsys.readouterr().err == "Failed: a stored _Manifest does not validate (1 errors)\n"


def test_a_message_holding_square_brackets_is_printed_as_written(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Rich reads `[...]` as a style: a column named `note[/]` in a file's header made the
    rejection a MarkupError traceback, and `[b]` vanished from the message."""
    header = "record_id;episode_id;patient_pseudonym;provider_orgnr;note[/];extra[b]"
    path = tmp_path / "basis.csv"
    path.write_text(f"{header}\nb1;e1;P1;974631407;x;y\n", encoding="utf-8")
    result = _invoke(["load", str(path), "--form", "basis"], env)
    assert result.exit_code == 1
    assert "'note[/]'" in _said(result)
    assert "'extra[b]'" in _said(result)


def _never_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("generated before the options were checked")

    monkeypatch.setattr(demo_command, "generate_register", never)
    monkeypatch.setattr(generate_command, "generate_register", never)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--port", "70000"],
            "Invalid value for '--port': Input should be less than or equal to 65535",
        ),
        (["--port", "0"], "Invalid value for '--port': Input should be greater than or equal to 1"),
        (
            ["--seed", "-1"],
            "Invalid value for '--seed': Input should be greater than or equal to 0",
        ),
        (
            ["--episodes", "100000001"],
            "Invalid value for '--episodes': Input should be less than or equal to 100000000",
        ),
        (
            ["--episodes", "99999999999999999999"],
            "Invalid value for '--episodes': Input should be less than or equal to 100000000",
        ),
    ],
)
def test_demo_port_seed_and_episodes_are_checked_as_generate_and_serve_check_them(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    # Before: `--port 70000` served on 4464 (70000 mod 65536), `--seed -1` ended in the
    # generator's traceback, and `--episodes` had no upper bound (a disk filled).
    _never_generate(monkeypatch)
    result = _invoke(["demo", "--no-serve", *args], env | {"KVARUS_DEMO": "1"})
    assert result.exit_code == 2, result.output
    assert message in _said(result)


def test_generate_episodes_has_an_upper_bound(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_generate(monkeypatch)
    out = tmp_path / "extracts"
    for episodes in ("100000001", "99999999999999999999"):
        result = _invoke(["generate", "--out", str(out), "--episodes", episodes], env)
        assert result.exit_code == 2, result.output
        assert (
            "Invalid value for '--episodes': Input should be less than or equal to 100000000"
            in _said(result)
        )
    assert not out.exists()
