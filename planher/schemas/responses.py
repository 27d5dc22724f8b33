"""Response models: each documents an answer in the OpenAPI document and serializes it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    computed_field,
)

from planher.body_mass import bmi, bmi_category
from planher.clock import format_timestamp
from planher.config import ENERGY_LABELS, IMPORT_REPORT_DATES
from planher.errors import ERROR_CODES
from planher.schemas.fields import CervicalMucus, LhTest

# Response shapes. Handlers build plain dicts; these models describe them in the OpenAPI
# document, and the schemathesis run in the tests checks every response against them.
Phase = Literal["menstrual", "follicular", "ovulatory", "luteal", "late"]
EnergyLabel = Literal["low", "medium", "high"]
EnergyLevelOut = Literal[0, 1, 2]
ModelSource = Literal["personal", "population", "phase_prior"]
# What competes in training (model_candidates, partial_pooling, the majority baseline, the
# population's expectation), and the phase prior served when no model is shipped.
ModelType = Literal[
    "random_forest",
    "hist_gradient_boosting",
    "logistic_regression",
    "mlp",
    "partial_pooling",
    "majority",
    "population",
    "phase_prior",
]
ErrorCode = Literal[tuple(ERROR_CODES)]
OvulationEvidence = Literal["lh", "bbt", "mucus", "estimated"]
# Stored naive in UTC; answered as the contract writes them: `2026-11-24T08:30:00Z`.
Timestamp = Annotated[
    dt.datetime,
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong, for people")
    code: ErrorCode = Field(
        description="What went wrong, for programs:\n\n"
        + "\n".join(f"- `{code}` ({meaning})" for code, meaning in ERROR_CODES.items())
    )


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationErrorItem]
    code: Literal["validation_error"]


class UserOut(BaseModel):
    id: int
    email: str
    name: str | None
    role: Literal["user", "admin"]
    time_zone: str = Field(description="IANA name: her dates and her today are in it")
    retention_days: int | None = Field(
        description="Her periods and moods older than this many days are deleted daily; "
        "null keeps everything"
    )
    created_at: Timestamp
    updated_at: Timestamp


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds the access token lives")


class ProfileOut(BaseModel):
    height_cm: int
    weight_kg: float
    cycle_length: int
    luteal_length: int
    menses_length: int
    unusual_bleeding: bool
    number_of_peak: int
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field
    @property
    def bmi(self) -> float:
        return bmi(self.height_cm, self.weight_kg)

    @computed_field
    @property
    def bmi_category(self) -> Literal["underweight", "normal", "overweight", "obese"]:
        return bmi_category(self.bmi)


class PeriodOut(BaseModel):
    id: int
    start_date: dt.date
    end_date: dt.date | None
    notes: str | None
    excluded: bool = Field(description="the cycle it starts counts in no estimate")
    cycle_length: int | None = Field(description="days to the next recorded start")
    created_at: Timestamp

    @computed_field(description="end - start + 1; null while the end is not logged")
    @property
    def length_days(self) -> int | None:
        return None if self.end_date is None else (self.end_date - self.start_date).days + 1


class MoodOut(BaseModel):
    id: int
    date: dt.date
    day_of_cycle: int | None = Field(description="from her periods when they cover the date")
    phase: Phase | None
    energy_level: EnergyLevelOut
    notes: str | None
    created_at: Timestamp

    @computed_field
    @property
    def energy_label(self) -> EnergyLabel:
        return ENERGY_LABELS[self.energy_level]


class ObservationOut(BaseModel):
    id: int
    date: dt.date
    lh_test: LhTest | None
    bbt_celsius: float | None
    cervical_mucus: CervicalMucus | None
    notes: str | None
    created_at: Timestamp


class OvulationOut(BaseModel):
    date: dt.date
    evidence: OvulationEvidence = Field(
        description="lh: a positive LH test the day before; bbt: a sustained temperature "
        "shift; mucus: her peak mucus day; estimated: from her cycle length and luteal phase"
    )


class CycleOut(BaseModel):
    length_estimate: int = Field(
        description="days: the median of her next cycle's length, from her recorded cycles "
        "and everyone's, else her profile"
    )
    last_period_start: dt.date | None
    next_period_start: dt.date | None = Field(
        description="once her today is past the estimate made at the cycle's beginning with "
        "no period logged: today or later"
    )
    next_period_range: tuple[dt.date, dt.date] | None = Field(
        description="holds the next start 80% of the time; in her open cycle, never before her "
        "today"
    )
    days_until_next_period: int | None
    fertile_window: tuple[dt.date, dt.date] | None
    ovulation: OvulationOut | None = Field(
        description="detected from her observations in this cycle, else estimated"
    )
    days_late: int | None = Field(
        description="her today − the start estimated at the beginning of the cycle, once "
        "past it with no period logged (≥ 1); null otherwise"
    )


class EnergyProbabilitiesOut(BaseModel):
    low: float
    medium: float
    high: float


class EnergyOut(BaseModel):
    level: EnergyLevelOut
    label: EnergyLabel
    confidence: float
    probabilities: EnergyProbabilitiesOut


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read off the EnergyModel served
    source: ModelSource
    version: int | None
    type: ModelType = Field(validation_alias=AliasChoices("type", "model_type"))
    trained_at: Timestamp | None
    n_samples: int
    cv_accuracy: float | None
    baseline_accuracy: float | None
    brier_score: float | None


class PredictionOut(BaseModel):
    date: dt.date
    day_of_cycle: int | None
    phase: Phase | None
    cycle: CycleOut
    energy: EnergyOut
    model: ModelOut


class PredictionHistoryOut(BaseModel):
    date: dt.date
    day_of_cycle: int | None
    phase: Phase | None
    predicted_level: EnergyLevelOut
    confidence: float
    model_version: int | None
    source: ModelSource
    actual_level: EnergyLevelOut | None = Field(description="her mood of that date, once logged")
    created_at: Timestamp

    @computed_field(description="whether the prediction was right, once her mood is logged")
    @property
    def hit(self) -> bool | None:
        return None if self.actual_level is None else self.actual_level == self.predicted_level


class CandidateScoreOut(BaseModel):
    type: ModelType
    cv_accuracy: float
    brier_score: float | None = Field(None, description="null for models trained before it")


class RetrainStateOut(BaseModel):
    state: Literal["queued", "running"]
    detail: str


def not_shipped_reason(
    shipped: bool, cv_accuracy: float, baseline_accuracy: float, prior_accuracy: float | None
) -> str | None:
    """Why a trained model is not used, in words for her (None when it is)."""
    if shipped:
        return None
    if cv_accuracy > baseline_accuracy and prior_accuracy is not None:
        return (
            f"Not used yet: on later days it had not seen, it guessed your energy right "
            f"{cv_accuracy:.0%} of the time, no better than the estimate your predictions "
            f"use now ({prior_accuracy:.0%}). Your predictions keep using that until your "
            "own days do better; each day you log helps."
        )
    return (
        f"Not used yet: on days it had not seen, it guessed your energy right "
        f"{cv_accuracy:.0%} of the time, no better than always guessing your most common "
        f"level ({baseline_accuracy:.0%}). Your predictions keep using what works better "
        "until then; each day you log helps."
    )


def _json_list(value: Any) -> Any:
    """`candidates` is stored as JSON text."""
    return json.loads(value) if isinstance(value, str) else value


class ModelSummaryOut(BaseModel):
    version: int
    type: ModelType = Field(validation_alias=AliasChoices("type", "model_type"))
    shipped: bool = Field(
        description="false unless the best candidate beat both the majority baseline and "
        "the prior alone (the population's expectation, else the phase prior)"
    )
    trained_at: Timestamp
    n_samples: int
    cv_accuracy: float = Field(
        description="forward-in-time: trained on earlier days, scored on later ones"
    )
    baseline_accuracy: float = Field(
        description="always her most common level so far, scored alike"
    )
    brier_score: float | None = Field(
        description="calibration on the same days: mean Σ (p − outcome)², 0 best, 2 worst; "
        "null for models trained before it"
    )
    candidates: Annotated[list[CandidateScoreOut], BeforeValidator(_json_list)]
    sklearn_version: str

    @computed_field(description="why it was not shipped, in words for her")
    @property
    def reason(self) -> str | None:
        priors = [c.cv_accuracy for c in self.candidates if c.type in ("population", "phase_prior")]
        return not_shipped_reason(
            self.shipped, self.cv_accuracy, self.baseline_accuracy, priors[0] if priors else None
        )


class ExportOut(BaseModel):
    user: UserOut
    profile: ProfileOut | None
    periods: list[PeriodOut]
    moods: list[MoodOut]
    observations: list[ObservationOut]
    predictions: list[PredictionHistoryOut]
    models: list[ModelSummaryOut]


# The formats POST /users/me/import reads (the importers below define each).
ImportFormat = Literal[
    "planher", "drip", "clue", "clue_backup", "flo", "mensinator", "periodical", "apple_health"
]


class ImportQuery(BaseModel):
    format: ImportFormat | None = Field(
        None, description="The file's format. Left out: recognized from the content."
    )
    dry_run: bool = Field(False, description="Report what would be imported; store nothing.")


class ImportCountOut(BaseModel):
    count: int
    first_date: dt.date | None
    last_date: dt.date | None


class ImportSkippedOut(BaseModel):
    what: Literal["period", "mood", "observation", "profile", "day"]
    reason: str
    count: int
    dates: list[dt.date] = Field(description=f"the first {IMPORT_REPORT_DATES} of them")


class ImportProfileOut(BaseModel):
    found: dict[str, int | float | bool] = Field(
        description="the profile settings the file carries"
    )
    applied: bool = Field(description="whether they made her profile (see `skipped` if not)")


class ImportReportOut(BaseModel):
    format: ImportFormat
    dry_run: bool
    periods: ImportCountOut = Field(description="imported (with dry_run: would be)")
    excluded_periods: list[dt.date] = Field(
        description="the starts of those periods that come in with their cycle set aside"
    )
    moods: ImportCountOut = Field(description="imported (with dry_run: would be)")
    observations: ImportCountOut = Field(description="imported (with dry_run: would be)")
    profile: ImportProfileOut | None = Field(description="null: the file has no settings")
    skipped: list[ImportSkippedOut]
    unmapped: dict[str, int] = Field(
        description="what the file holds that PlanHer has no field for, and how often"
    )


class CalendarFeedReminderOut(BaseModel):
    remind_days_before: int | None = Field(
        description="an alarm this many days before each predicted period, at 09:00 her "
        "time; null: none"
    )


class CalendarFeedOut(CalendarFeedReminderOut):
    url: str = Field(
        description="Her secret iCalendar feed: anyone with it sees her periods and "
        "predictions, so share it only with her calendar app"
    )


class AuditEventOut(BaseModel):
    id: int
    at: Timestamp
    user_id: int | None
    action: str
    target: str | None
    ip: str | None
    ok: bool


class LivenessOut(BaseModel):
    status: str
    version: str


class ReadinessOut(BaseModel):
    status: str
    database: str
    version: str
