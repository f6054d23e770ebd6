"""The validation suite as code: every Great Expectations expectation with the reason it exists.

Each :class:`Check` has a stable ``name`` (what ``quarantine_reasons`` and the summary call it),
a ``level`` saying what a failure does, and a ``why``, rendered as the expectation's notes in
Data Docs:

* ``row``: the failing rows are quarantined with the check's name; the rest of the day goes on.
* ``dedup``: rows in a group of exact copies; every copy after the first is removed (counted).
* ``batch``: the day as a whole is not trustworthy; the gate fails and nothing is published.
* ``info``: reported in the summary, never blocks (a new country is news, not an error).

Thresholds come from ``settings.validation`` and from history (:class:`Bands`), never from code.
The row conditions use Great Expectations' own condition objects, so the same suite runs on a
pandas or a Spark DataFrame.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from propensity.core.schema import EVENT_COLUMNS, VALIDATED_SCHEMA
from propensity.core.settings import Settings
from propensity.ingest.ge_compat import quiet_great_expectations

if TYPE_CHECKING:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Condition

Level = Literal["row", "dedup", "batch", "info"]

SUITE_NAME = "events"
ROW_ID = "_row"  # position of the row in the day's raw partition; how results map back to rows
PRODUCT, NON_PRODUCT = "product", "non_product"

# Accepted physical types per column: pandas' nullable dtypes (named as GE resolves them), then
# Spark's. event_time has none: GE cannot name a tz-aware pandas dtype, and the event_time range
# checks cannot run on anything but timestamps, which fails the day just as clearly.
_STRING, _INT, _FLOAT, _BOOL = (
    ["StringDtype", "StringType"],
    ["int64", "Int64Dtype", "float64", "LongType"],  # float64: pandas' int with nulls, see events_frame
    ["float64", "Float64Dtype", "DoubleType"],
    ["BooleanDtype", "bool", "BooleanType"],
)
_TYPES: dict[str, list[str]] = {
    "customer_id": _STRING,
    "order_id": _STRING,
    "item_id": _STRING,
    "quantity": _INT,
    "unit_price": _FLOAT,
    "amount": _FLOAT,
    "is_return": _BOOL,
    "country": _STRING,
}


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    why: str
    expectation: gxe.Expectation


@dataclass(frozen=True)
class Bands:
    """What the calendar and the days before D say about day D (see ``validate.learn_bands``)."""

    start: dt.datetime  # the day's interval [start, end), UTC
    end: dt.datetime
    closed: str | None  # why the business was closed, None on a trading day
    min_rows: int
    max_rows: int | None
    usual_rows: float | None  # median rows of recent same-weekday days; None: too little history
    amount_median: tuple[float, float] | None  # allowed median sale amount; None: too little history
    known_countries: list[str] | None  # countries of recent validated rows; None: no history
    distributions: bool  # enough rows for shares and medians to mean something


def _is_sale() -> Condition:
    from great_expectations.expectations.row_conditions import Column

    # GE builds the condition from ``==``; ``not Column(...)`` would be a plain Python bool.
    return Column("is_return") == False  # noqa: E712


def _is_return() -> Condition:
    from great_expectations.expectations.row_conditions import Column

    return Column("is_return") == True  # noqa: E712


def build_checks(settings: Settings, bands: Bands) -> list[Check]:
    """The suite for one day, in the order it appears in reports."""
    quiet_great_expectations()
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    v, source = settings.validation, settings.source
    checks: list[Check] = []

    def add(name: str, level: Level, why: str, exp: gxe.Expectation) -> None:
        exp.notes = why
        exp.meta = {"check": name, "level": level}
        checks.append(Check(name, level, why, exp))

    # -- schema and types: the contract every later stage reads --------------------------
    add(
        "schema_columns",
        "batch",
        "later stages read exactly the canonical columns; a missing or renamed one breaks them all",
        gxe.ExpectTableColumnsToMatchSet(column_set=[*VALIDATED_SCHEMA.names, ROW_ID], exact_match=True),
    )
    for column in _TYPES:
        add(
            f"{column}_type",
            "batch",
            f"{column} must keep its canonical type, or features silently change meaning",
            gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=_TYPES[column]),
        )

    # -- row level: what makes one line unusable ---------------------------------------
    if not source.guest_rows:
        add(
            "customer_id_present",
            "row",
            "the source promises a customer on every line; features are per customer",
            gxe.ExpectColumnValuesToNotBeNull(column="customer_id"),
        )
    add(
        "event_time_present",
        "row",
        "a line without a time belongs to no day",
        gxe.ExpectColumnValuesToNotBeNull(column="event_time"),
    )
    add(
        "event_time_not_before_day",
        "row",
        "a line from an earlier day in today's delivery would be counted twice or on the wrong day",
        gxe.ExpectColumnValuesToBeBetween(column="event_time", min_value=bands.start),
    )
    add(
        "event_time_not_after_day",
        "row",
        "data leak: a time after the logical day is the future for every feature computed as of it",
        gxe.ExpectColumnValuesToBeBetween(column="event_time", max_value=bands.end, strict_max=True),
    )
    add(
        "order_id_present",
        "row",
        "orders are counted by id; a line without one cannot be attributed",
        gxe.ExpectColumnValuesToNotBeNull(column="order_id"),
    )
    if source.mapping.item_id:
        add(
            "item_id_present",
            "row",
            "the source maps an item column; a line without an item is unreadable, not a product",
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        )
    for column, why in (
        ("quantity", "spend and basket size need a quantity"),
        ("unit_price", "spend needs a price"),
        ("amount", "spend needs an amount"),
        ("is_return", "sales and returns count in opposite directions"),
    ):
        add(f"{column}_present", "row", why, gxe.ExpectColumnValuesToNotBeNull(column=column))
    add(
        "values_parse",
        "row",
        "a value the source sent could not be read (see _parse_errors); the line is kept, not guessed",
        gxe.ExpectColumnValuesToBeNull(column="_parse_errors"),
    )
    add(
        "quantity_nonzero",
        "row",
        "a line that moves no item is no purchase and no return",
        gxe.ExpectColumnValuesToNotBeInSet(column="quantity", value_set=[0]),
    )
    add(
        "sale_quantity_positive",
        "row",
        "a negative quantity outside a return is a stock adjustment (damaged, lost), not a sale",
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, row_condition=_is_sale()),
    )
    add(
        "return_quantity_negative",
        "row",
        "returns must take items back: a return with a positive quantity would count as a purchase",
        gxe.ExpectColumnValuesToBeBetween(column="quantity", max_value=-1, row_condition=_is_return()),
    )
    add(
        "quantity_within_limit",
        "row",
        f"|quantity| above {v.max_abs_quantity} (validation.max_abs_quantity) is a keying error, not a purchase",
        gxe.ExpectColumnValuesToBeBetween(
            column="quantity", min_value=-v.max_abs_quantity, max_value=v.max_abs_quantity
        ),
    )
    add(
        "amount_within_limit",
        "row",
        f"|amount| above {v.max_abs_amount:g} (validation.max_abs_amount) is a keying error; fee lines too",
        gxe.ExpectColumnValuesToBeBetween(
            column="amount", min_value=-v.max_abs_amount, max_value=v.max_abs_amount
        ),
    )
    add(
        "unit_price_not_negative",
        "row",
        "a negative price is an accounting entry (adjust bad debt), not something a customer bought",
        gxe.ExpectColumnValuesToBeBetween(column="unit_price", min_value=0),
    )
    add(
        "product_price_within_limit",
        "row",
        f"a product priced above {v.max_unit_price:g} (validation.max_unit_price) is a typo; fee lines are exempt",
        gxe.ExpectColumnValuesToBeBetween(
            column="unit_price", max_value=v.max_unit_price, row_condition=Column("line_kind") == PRODUCT
        ),
    )

    # -- duplicates ----------------------------------------------------------------------
    # Only where the source says so (source.duplicates): without order ids, identical lines on a
    # day are separate purchases, kept.
    if source.drops_duplicates:
        add(
            "no_exact_duplicates",
            "dedup",
            f"an identical line twice is one purchase delivered twice (source.duplicates={source.duplicates}); "
            "the copies are removed and counted",
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[*EVENT_COLUMNS, "_parse_errors"]),
        )

    # -- batch level: is the day as a whole believable? ----------------------------------
    if bands.closed:
        why = f"closed ({bands.closed}): no volume expectation"
    elif bands.usual_rows is None:
        why = "a trading day with zero lines is a broken export (too little history for a band yet)"
    else:
        why = (
            f"usual for this weekday is {bands.usual_rows:g} lines; {v.volume_factor:g}x more or fewer "
            "is a broken or duplicated export"
        )
    add(
        "row_count_in_band",
        "batch",
        why,
        gxe.ExpectTableRowCountToBeBetween(min_value=bands.min_rows, max_value=bands.max_rows),
    )
    if source.guest_rows and bands.distributions:
        lo, hi = v.guest_share_band
        add(
            "customer_share_in_band",
            "batch",
            f"guest lines (no customer) are {lo:.0%}..{hi:.0%} of a day; outside, the customer "
            "column was probably lost or remapped",
            gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(
                column="customer_id", min_value=round(1 - hi, 6), max_value=round(1 - lo, 6)
            ),
        )
    if bands.amount_median is not None and bands.distributions:
        lo_amount, hi_amount = bands.amount_median
        add(
            "sale_amount_median_in_band",
            "batch",
            f"the median sale line within {v.amount_median_factor:g}x of recent days; far off means "
            "prices or quantities changed unit",
            gxe.ExpectColumnMedianToBeBetween(
                column="amount",
                min_value=lo_amount,
                max_value=hi_amount,
                row_condition=(Column("line_kind") == PRODUCT) & _is_sale(),
            ),
        )
    if bands.known_countries:
        add(
            "country_known",
            "info",
            "a country not seen recently is reported (new market or typo), never blocked",
            gxe.ExpectColumnValuesToBeInSet(column="country", value_set=bands.known_countries),
        )
    return checks
