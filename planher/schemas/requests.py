"""Request bodies and query strings, as the contract defines them."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from planher.config import (
    DEFAULT_CYCLE_LENGTH,
    DEFAULT_FORECAST_DAYS,
    DEFAULT_LIST_LIMIT,
    DEFAULT_LUTEAL_LENGTH,
    DEFAULT_MENSES_LENGTH,
    DEFAULT_NUMBER_OF_PEAK,
    DEFAULT_TIME_ZONE,
    MAX_FORECAST_DAYS,
    MAX_LIST_LIMIT,
    MAX_LIST_OFFSET,
    RETENTION_MIN_DAYS,
)
from planher.schemas.fields import (
    BbtCelsius,
    CervicalMucus,
    CycleLength,
    Date,
    DayOfCycle,
    Email,
    EnergyLevel,
    GivenPassword,
    HeightCm,
    LhTest,
    LutealLength,
    MensesLength,
    Name,
    NewPassword,
    Notes,
    NumberOfPeak,
    RemindDaysBefore,
    RequestBody,
    RetentionDays,
    TimeZone,
    Token,
    WeightKg,
)


class RegisterBody(RequestBody):
    email: Email
    password: NewPassword
    name: Name | None = None
    time_zone: TimeZone = DEFAULT_TIME_ZONE


class LoginBody(RequestBody):
    email: Email
    password: GivenPassword


class OAuth2PasswordForm(BaseModel):
    """The OAuth2 password flow's form (what the docs page's Authorize button sends)."""

    model_config = ConfigDict(extra="ignore")  # grant_type, scope, client_id, …
    username: Email
    password: GivenPassword

    @property
    def email(self) -> str:
        return self.username


class RefreshBody(RequestBody):
    refresh_token: Token


class LogoutBody(RequestBody):
    refresh_token: Token | None = None


class UserUpdateBody(RequestBody):
    # email and password default to None but do not accept null: leave them out instead.
    name: Name | None = None
    email: Email = None
    password: NewPassword = None
    current_password: GivenPassword = None
    time_zone: TimeZone = None
    retention_days: RetentionDays | None = Field(
        None,
        description=f"Keep only this many days of her history ({RETENTION_MIN_DAYS} at "
        "least); null keeps everything",
    )


class ProfileBody(RequestBody):
    height_cm: HeightCm
    weight_kg: WeightKg
    cycle_length: CycleLength = DEFAULT_CYCLE_LENGTH
    luteal_length: LutealLength = DEFAULT_LUTEAL_LENGTH
    menses_length: MensesLength = DEFAULT_MENSES_LENGTH
    unusual_bleeding: bool = False
    number_of_peak: NumberOfPeak = DEFAULT_NUMBER_OF_PEAK


PROFILE_FIELDS = tuple(ProfileBody.model_fields)


class ProfileUpdateBody(RequestBody):
    # Each field defaults to None but refuses null: a profile field is never empty.
    height_cm: HeightCm = None
    weight_kg: WeightKg = None
    cycle_length: CycleLength = None
    luteal_length: LutealLength = None
    menses_length: MensesLength = None
    unusual_bleeding: bool = None
    number_of_peak: NumberOfPeak = None


EXCLUDED_DESCRIPTION = (
    "The cycle this period starts is unusual (illness, the pill, a pregnancy loss, travel): "
    "its length counts in no estimate; the period still places her days."
)


class PeriodBody(RequestBody):
    start_date: Date
    end_date: Date | None = None
    notes: Notes | None = None
    excluded: bool = Field(False, description=EXCLUDED_DESCRIPTION)


class PeriodUpdateBody(RequestBody):
    start_date: Date = None  # refuses null; end_date and notes may be cleared
    end_date: Date | None = None
    notes: Notes | None = None
    excluded: bool = Field(None, description=EXCLUDED_DESCRIPTION)


class MoodBody(RequestBody):
    date: Date = Field(None, description="Left out: her today, in her time zone.")
    energy_level: EnergyLevel
    notes: Notes | None = None
    day_of_cycle: DayOfCycle | None = None


class MoodUpdateBody(RequestBody):
    date: Date = None
    energy_level: EnergyLevel = None
    notes: Notes | None = None
    day_of_cycle: DayOfCycle | None = None


class ObservationBody(RequestBody):
    date: Date = Field(None, description="Left out: her today, in her time zone.")
    lh_test: LhTest | None = None
    bbt_celsius: BbtCelsius | None = None
    cervical_mucus: CervicalMucus | None = None
    notes: Notes | None = None


class ObservationUpdateBody(RequestBody):
    date: Date = None
    lh_test: LhTest | None = None
    bbt_celsius: BbtCelsius | None = None
    cervical_mucus: CervicalMucus | None = None
    notes: Notes | None = None


OBSERVATION_SIGNS = ("lh_test", "bbt_celsius", "cervical_mucus")


class ListQuery(BaseModel):
    """`limit`, `offset`, `from`, `to` of every list; other query parameters are ignored."""

    model_config = ConfigDict(populate_by_name=True)
    limit: int = Field(DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_LIST_OFFSET)
    from_date: Date | None = Field(None, alias="from")
    to_date: Date | None = Field(None, alias="to")


class PredictionQuery(BaseModel):
    date: Date | None = None


class ForecastQuery(BaseModel):
    days: int = Field(DEFAULT_FORECAST_DAYS, ge=1, le=MAX_FORECAST_DAYS)
    date: Date | None = Field(None, description="The first day. Left out: her today.")


REMINDER_DESCRIPTION = (
    "An alarm this many days before each predicted period, at 09:00 her time (0: on the "
    "day); null: no reminders."
)


class CalendarFeedBody(RequestBody):
    remind_days_before: RemindDaysBefore | None = Field(None, description=REMINDER_DESCRIPTION)


class CalendarFeedUpdateBody(RequestBody):
    remind_days_before: RemindDaysBefore | None = Field(description=REMINDER_DESCRIPTION)
