"""Code lists of extract specification version 1, with Norwegian and English labels.

Registration systems export integer codes; the register keeps the codes and shows the labels.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    value: int
    no: str
    en: str


@dataclass(frozen=True)
class CodeList:
    name: str
    codes: tuple[Code, ...]

    @property
    def values(self) -> frozenset[int]:
        return frozenset(code.value for code in self.codes)

    def label(self, value: int, language: str = "en") -> str:
        for code in self.codes:
            if code.value == value:
                return code.no if language == "no" else code.en
        raise KeyError(f"{value} is not a code of {self.name}")


def _codes(name: str, *codes: tuple[int, str, str]) -> CodeList:
    return CodeList(name, tuple(Code(value, no, en) for value, no, en in codes))


SEX = _codes("sex", (1, "Mann", "Male"), (2, "Kvinne", "Female"), (9, "Ukjent", "Unknown"))
TREATMENT_TYPE = _codes(
    "treatment_type",
    (1, "Poliklinisk", "Outpatient"),
    (2, "Døgn, korttid", "Inpatient, short-term"),
    (3, "Døgn, langtid", "Inpatient, long-term"),
    (4, "Ambulant", "Ambulant"),
    (5, "Legemiddelassistert rehabilitering (LAR)", "Opioid agonist treatment (LAR)"),
)
# Inpatient treatment types: the ones that can overlap in time for one patient only by error.
INPATIENT_TREATMENT_TYPES = frozenset({2, 3})
PRIMARY_SUBSTANCE = _codes(
    "primary_substance",
    (1, "Alkohol", "Alcohol"),
    (2, "Cannabis", "Cannabis"),
    (3, "Opioider", "Opioids"),
    (4, "Sentralstimulerende", "Stimulants"),
    (5, "Sedativer/hypnotika", "Sedatives/hypnotics"),
    (6, "Blandingsmisbruk", "Polysubstance"),
    (9, "Annet", "Other"),
)
HOUSING = _codes(
    "housing",
    (1, "Egen bolig", "Own home"),
    (2, "Leid bolig", "Rented"),
    (3, "Midlertidig bolig", "Temporary"),
    (4, "Bostedsløs", "Homeless"),
    (5, "Institusjon", "Institution"),
    (9, "Ukjent", "Unknown"),
)
# Stable housing (indicator stable_housing): own or rented home.
STABLE_HOUSING = frozenset({1, 2})
EMPLOYMENT = _codes(
    "employment",
    (1, "I arbeid", "Employed"),
    (2, "Student", "Student"),
    (3, "Trygd/uføre", "Benefits/disability"),
    (4, "Arbeidsledig", "Unemployed"),
    (9, "Annet/ukjent", "Other/unknown"),
)
NO_YES = _codes("no_yes", (0, "Nei", "No"), (1, "Ja", "Yes"))
MEASUREMENT_STATUS = _codes(
    "status",
    (1, "Aktiv", "Active"),
    (2, "Overført", "Transferred"),
    (3, "Avbrutt", "Dropped out"),
    (4, "Avsluttet etter avtale", "Ended by mutual agreement"),
)
PLAN = _codes("plan", (1, "Nei", "No"), (2, "Ja", "Yes"), (3, "Ukjent", "Unknown"))
END_REASON = _codes(
    "end_reason",
    (1, "Etter avtale", "Mutual agreement"),
    (2, "Avbrutt", "Dropped out"),
    (3, "Overført", "Transferred"),
    (4, "Død", "Died"),
    (9, "Annet", "Other"),
)
FOLLOWUP_STATUS = _codes(
    "followup_status",
    (1, "Nådd", "Reached"),
    (2, "Ikke nådd", "Not reached"),
    (3, "Reservert seg", "Declined"),
)

CODE_LISTS: dict[str, CodeList] = {
    code_list.name: code_list
    for code_list in (
        SEX,
        TREATMENT_TYPE,
        PRIMARY_SUBSTANCE,
        HOUSING,
        EMPLOYMENT,
        NO_YES,
        MEASUREMENT_STATUS,
        PLAN,
        END_REASON,
        FOLLOWUP_STATUS,
    )
}
