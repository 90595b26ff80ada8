"""The organisation hierarchy: nation → RHF → HF / private provider → treating unit.

`data/org_hierarchy.csv` is the shared reference list of the real regional health authorities and
health trusts. `data/private_providers.csv` holds the demo register's private non-profit providers
(fictitious names, valid organisation numbers); in production the registry registers its providers
in the catalog (`schemas.catalog.Organisation`).
"""

import csv
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Final, Literal

Level = Literal["nation", "rhf", "hf", "provider"]
NATION_ORGNR: Final = "1"

# Weights of the mod-11 check digit of a Norwegian organisation number (Brønnøysundregistrene).
_ORGNR_WEIGHTS: Final = (3, 2, 7, 6, 5, 4, 3, 2)


def is_valid_orgnr(value: str) -> bool:
    """Whether `value` is 9 digits with a correct mod-11 check digit."""
    if len(value) != 9 or not value.isascii() or not value.isdigit():
        return False
    remainder = sum(int(d) * w for d, w in zip(value[:8], _ORGNR_WEIGHTS, strict=True)) % 11
    check = 0 if remainder == 0 else 11 - remainder
    return check != 10 and check == int(value[8])


@dataclass(frozen=True)
class Organisation:
    orgnr: str
    name: str
    short_name: str
    level: Level
    parent_orgnr: str | None
    ownership: str

    @property
    def is_provider(self) -> bool:
        """Providers treat patients: HFs (public or private hospitals with a catchment) and private
        contracted providers."""
        return self.level in ("hf", "provider")

    @property
    def is_private(self) -> bool:
        return self.ownership != "public"


def _read(name: str) -> list[Organisation]:
    text = files("schemas").joinpath("data", name).read_text(encoding="utf-8")
    return [
        Organisation(
            orgnr=row["orgnr"],
            name=row["name"],
            short_name=row["short_name"],
            level=row["level"],  # type: ignore[arg-type]
            parent_orgnr=row["parent_orgnr"] or None,
            ownership=row["ownership"],
        )
        for row in csv.DictReader(text.splitlines())
    ]


@cache
def reference_organisations() -> tuple[Organisation, ...]:
    """The nation, the 4 RHFs and the HFs of the shared reference list."""
    return tuple(_read("org_hierarchy.csv"))


@cache
def demo_private_providers() -> tuple[Organisation, ...]:
    """The demo register's private providers (fictitious)."""
    return tuple(_read("private_providers.csv"))


class Hierarchy:
    """Look-ups over a set of organisations (the reference list plus registered providers)."""

    def __init__(self, organisations: tuple[Organisation, ...] | list[Organisation]) -> None:
        self.by_orgnr: dict[str, Organisation] = {o.orgnr: o for o in organisations}

    @classmethod
    def default(cls) -> "Hierarchy":
        return cls([*reference_organisations(), *demo_private_providers()])

    def __contains__(self, orgnr: object) -> bool:
        return orgnr in self.by_orgnr

    def __getitem__(self, orgnr: str) -> Organisation:
        return self.by_orgnr[orgnr]

    @property
    def providers(self) -> list[Organisation]:
        return [o for o in self.by_orgnr.values() if o.is_provider]

    @property
    def hfs(self) -> list[Organisation]:
        return [o for o in self.by_orgnr.values() if o.level == "hf"]

    @property
    def rhfs(self) -> list[Organisation]:
        return [o for o in self.by_orgnr.values() if o.level == "rhf"]

    def rhf_of(self, orgnr: str) -> Organisation:
        """The RHF above a provider (or the RHF itself)."""
        organisation = self.by_orgnr[orgnr]
        while organisation.level not in ("rhf", "nation"):
            assert organisation.parent_orgnr is not None
            organisation = self.by_orgnr[organisation.parent_orgnr]
        return organisation
