"""The validated field types that request bodies and queries are built from."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic_core import PydanticCustomError

from planher.body_mass import round_half_up
from planher.config import (
    BBT_MAX_CELSIUS,
    BBT_MIN_CELSIUS,
    COMMON_PASSWORDS,
    CYCLE_MAX_DAYS,
    CYCLE_MIN_DAYS,
    EARLIEST_DATE,
    EMAIL_MAX_CHARS,
    LATEST_DATE,
    NAME_MAX_CHARS,
    NOTES_MAX_CHARS,
    PASSWORD_MAX_BYTES,
    PASSWORD_MIN_CHARS,
    PERIOD_MAX_DAYS,
    REMIND_MAX_DAYS_BEFORE,
    RETENTION_MAX_DAYS,
    RETENTION_MIN_DAYS,
    TIME_ZONE_MAX_CHARS,
    TIME_ZONES,
    TOKEN_MAX_CHARS,
)


class RequestBody(BaseModel):
    """A JSON request body: unknown fields are refused (a client never sets `id`, `role` or
    timestamps), and types are strict (`"5"` is not a number, `1` is not `true`)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# Control characters (C0, DEL, C1), which JSON can carry but no text needs (and PostgreSQL
# refuses NUL); notes may keep tabs and line breaks. (Lone surrogates never get this far:
# the JSON parser refuses them.)
CONTROL_CHARACTERS = "\\x00-\\x1f\\x7f-\\x9f"
NOTE_CONTROL_CHARACTERS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"


def _refusing(forbidden: str, what: str) -> AfterValidator:
    """A validator that refuses the `forbidden` characters with a message a person reads."""
    found = re.compile(f"[{forbidden}]").search

    def check(value: str) -> str:
        if found(value):
            raise PydanticCustomError(
                "control_character", f"{what} cannot contain control characters"
            )
        return value

    return AfterValidator(check)


def _pattern_refusing(forbidden: str) -> Any:
    """The same rule as a pattern in the document, so that clients can check it first."""
    return Field(json_schema_extra={"pattern": f"^[^{forbidden}]*$"})


def _date_in_range(value: dt.date) -> dt.date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise PydanticCustomError(
            "date_out_of_range",
            f"Dates must be between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}",
        )
    return value


Date = Annotated[
    dt.date,
    # The document says the range with a pattern on the year, which a client can check.
    Field(json_schema_extra={"pattern": r"^(19\d\d|20\d\d|21\d\d|2200)-\d\d-\d\d$"}),
    AfterValidator(_date_in_range),
]


def _normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > EMAIL_MAX_CHARS or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise PydanticCustomError("email", "Enter a valid email address, like name@example.com")
    return email


def _check_password(value: str) -> str:
    if len(value) < PASSWORD_MIN_CHARS:
        raise PydanticCustomError(
            "password_too_short", f"Password must be at least {PASSWORD_MIN_CHARS} characters"
        )
    if value.lower() in COMMON_PASSWORDS:
        raise PydanticCustomError(
            "password_too_common",
            "This password is one of the most common ones, which attackers try first; "
            "choose another",
        )
    return _check_password_bytes(value)


def _check_password_bytes(value: str) -> str:
    if len(value.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise PydanticCustomError(
            "password_too_long",
            f"Password must be at most {PASSWORD_MAX_BYTES} bytes in UTF-8 (bcrypt's limit); "
            "accented letters and emoji take 2 to 4 bytes each",
        )
    return value


# The byte limit cannot be said in JSON Schema, so the document states it in words and
# marks the fields with OpenAPI's `password` format; the validators enforce it.
PASSWORD_DOCUMENTATION = {
    "format": "password",
    "maxLength": PASSWORD_MAX_BYTES,
    "description": f"at most {PASSWORD_MAX_BYTES} bytes in UTF-8 (bcrypt's limit), "
    "no control characters",
}
Email = Annotated[
    str,
    Field(json_schema_extra={"format": "email", "maxLength": EMAIL_MAX_CHARS}),
    _pattern_refusing(CONTROL_CHARACTERS),
    _refusing(CONTROL_CHARACTERS, "An email address"),
    AfterValidator(_normalize_email),
]
NewPassword = Annotated[
    str,
    Field(json_schema_extra={**PASSWORD_DOCUMENTATION, "minLength": PASSWORD_MIN_CHARS}),
    _refusing(CONTROL_CHARACTERS, "A password"),
    AfterValidator(_check_password),
]
GivenPassword = Annotated[
    str,
    Field(min_length=1, json_schema_extra=PASSWORD_DOCUMENTATION),
    _refusing(CONTROL_CHARACTERS, "A password"),
    AfterValidator(_check_password_bytes),
]
Name = Annotated[
    str,
    Field(max_length=NAME_MAX_CHARS),
    _pattern_refusing(CONTROL_CHARACTERS),
    _refusing(CONTROL_CHARACTERS, "A name"),
]
Token = Annotated[
    str,
    Field(min_length=1, max_length=TOKEN_MAX_CHARS),
    _pattern_refusing(CONTROL_CHARACTERS),
    _refusing(CONTROL_CHARACTERS, "A token"),
]


def _known_time_zone(value: str) -> str:
    if value not in TIME_ZONES:
        raise PydanticCustomError(
            "time_zone", "Unknown time zone: use an IANA name such as America/Los_Angeles"
        )
    return value


TimeZone = Annotated[
    str,
    # ~600 names, some of which differ only in punctuation (Etc/GMT+0, Etc/GMT-0, GMT0):
    # as an enum they would break client generators, so the document names a format.
    Field(
        max_length=TIME_ZONE_MAX_CHARS,
        json_schema_extra={
            "format": "iana-time-zone",
            "description": "An IANA time zone name, such as America/Los_Angeles",
            "examples": ["Europe/Berlin"],
        },
    ),
    AfterValidator(_known_time_zone),
]


RetentionDays = Annotated[int, Field(ge=RETENTION_MIN_DAYS, le=RETENTION_MAX_DAYS)]


# Tracking data. Every range is the contract's; the rules that tie fields together
# (luteal + menses < cycle, end after start, …) are checked on the merged record instead,
# because a partial update must obey them too.
def _whole_number(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer; strict validation alone would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = BeforeValidator(_whole_number)
HeightCm = Annotated[int, Field(ge=100, le=250), Whole]
WeightKg = Annotated[float, Field(ge=25, le=350), AfterValidator(lambda kg: round_half_up(kg, 2))]
CycleLength = Annotated[int, Field(ge=CYCLE_MIN_DAYS, le=CYCLE_MAX_DAYS), Whole]
LutealLength = Annotated[int, Field(ge=7, le=20), Whole]
MensesLength = Annotated[int, Field(ge=1, le=PERIOD_MAX_DAYS), Whole]
NumberOfPeak = Annotated[int, Field(ge=0, le=10), Whole]
RemindDaysBefore = Annotated[int, Field(ge=0, le=REMIND_MAX_DAYS_BEFORE), Whole]


def _not_a_boolean(value: Any) -> Any:
    """`true` equals 1 to a Literal; as everywhere else, it is not a number."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# 0 low, 1 medium, 2 high: an enum in the document, so generated clients offer just these.
EnergyLevel = Annotated[Literal[0, 1, 2], Whole, BeforeValidator(_not_a_boolean)]
DayOfCycle = Annotated[int, Field(ge=1, le=CYCLE_MAX_DAYS), Whole]
Notes = Annotated[
    str,
    Field(max_length=NOTES_MAX_CHARS),
    _pattern_refusing(NOTE_CONTROL_CHARACTERS),
    _refusing(NOTE_CONTROL_CHARACTERS, "Notes"),
]


LhTest = Literal["positive", "negative"]
CervicalMucus = Literal["dry", "sticky", "creamy", "watery", "egg_white"]
BbtCelsius = Annotated[
    float,
    Field(ge=BBT_MIN_CELSIUS, le=BBT_MAX_CELSIUS, description="two decimals (rounded)"),
    AfterValidator(lambda celsius: round_half_up(celsius, 2)),
]
