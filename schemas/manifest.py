"""The release manifest: what a numbered, immutable release consists of.

Everything downstream (indicators, Spark, the API) reads a release through its manifest, never
through the loader: the manifest lists the Delta version and the Parquet files of every table.
"""

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field


class TableSnapshot(BaseModel):
    name: str = Field(description="Table name: a form (basis, measurement, ...) or npr_counts")
    delta_version: int = Field(ge=0)
    files: list[str] = Field(description="Absolute Parquet file URIs of this version")
    row_count: int = Field(ge=0)


class ReleaseManifest(BaseModel):
    release: int = Field(ge=1, description="Release number, 1, 2, ...")
    created_at: datetime
    note: str | None = None
    spec_version: int = 1
    tables: dict[str, TableSnapshot]

    def files(self, table: str) -> list[str]:
        return self.tables[table].files

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "ReleaseManifest":
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
