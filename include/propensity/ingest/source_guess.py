"""Guessing a source's columns from types and content, and its trading calendar from its zero days.

Part of ``propensity source check`` (:mod:`propensity.ingest.source_check`, whose docstring lists
the rules). Column names only break ties between columns whose content fits equally.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from propensity.core.settings import ColumnMapping, SourceSettings, TradingCalendar
from propensity.ingest import sources
from propensity.ingest.calendar import closed_reason

# strftime patterns tried on text timestamps, most specific first; ISO text with offsets is parsed
# by the pipeline's own ISO path (timestamp_format: null).
TIMESTAMP_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
)
_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "event_time": ("date", "time", "timestamp", "ts", "at", "when", "datetime"),
    "customer_id": ("customer", "cust", "client", "member", "user", "account", "buyer", "shopper", "loyalty"),
    "quantity": ("qty", "quantity", "units", "unit", "count", "pieces", "pcs", "amount_units"),
    "order_id": ("order", "invoice", "receipt", "transaction", "txn", "basket", "ticket", "bill"),
    "item_id": ("item", "sku", "product", "stock", "article", "code", "upc", "ean", "part"),
    "unit_price": ("price", "unitprice", "rate"),
    "amount": ("amount", "total", "value", "revenue", "sales", "net", "gross", "sum", "line"),
    "country": ("country", "nation", "market", "region"),
    "is_return": ("return", "returned", "refund", "cancel", "cancelled", "credit", "void", "reversal"),
}
_BOOL_TOKENS = {"true", "false", "t", "f", "1", "0", "yes", "no", "y", "n"}


# -- profiling columns ---------------------------------------------------------------------


@dataclass
class Profile:
    name: str
    tokens: set[str]
    rows: int
    nulls: int
    distinct: int
    kind: str  # timestamp | integer | number | boolean | text
    values: pd.Series = field(repr=False)  # non-null sample values, as read
    numbers: pd.Series | None = field(default=None, repr=False)  # numeric view (sample), NaN where not
    text_len: float = 0.0
    spaces: float = 0.0  # share of values with a space
    leading_zeros: float = 0.0  # share of values like "000123"
    aware: bool = False

    @property
    def filled(self) -> int:
        return self.rows - self.nulls


def _tokens(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if p]
    return set(parts) | {"".join(parts)}


def profile(frame: pd.DataFrame, column: str) -> Profile:
    s = frame[column]
    nonnull = s.dropna()
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        nonnull = nonnull[nonnull.astype(str).str.strip() != ""]
    p = Profile(
        name=column,
        tokens=_tokens(column),
        rows=len(s),
        nulls=len(s) - len(nonnull),
        distinct=int(nonnull.nunique()),
        kind="text",
        values=nonnull,
    )
    if pd.api.types.is_datetime64_any_dtype(s):
        p.kind, p.aware = "timestamp", getattr(s.dt, "tz", None) is not None
        return p
    if pd.api.types.is_bool_dtype(s):
        p.kind = "boolean"
        return p
    if pd.api.types.is_numeric_dtype(s):
        p.numbers = nonnull.astype("float64")
    else:
        text = nonnull.astype(str).str.strip()
        p.text_len = float(text.str.len().mean()) if len(text) else 0.0
        p.spaces = float(text.str.contains(" ").mean()) if len(text) else 0.0
        p.leading_zeros = float(text.str.fullmatch(r"0\d+").mean()) if len(text) else 0.0
        lowered = text.str.lower()
        if (
            len(text)
            and lowered.isin(_BOOL_TOKENS).all()
            and lowered.nunique() <= 2
            and not text.str.fullmatch(r"[01]").all()
        ):
            p.kind = "boolean"
            return p
        p.numbers = pd.to_numeric(text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True), errors="coerce")
        if p.numbers.notna().mean() < 0.98:
            p.numbers = None
    if p.numbers is not None and len(p.numbers):
        finite = p.numbers.dropna()
        p.kind = "integer" if len(finite) and bool((finite == np.round(finite)).all()) else "number"
    return p


def _hint(p: Profile, canonical: str) -> float:
    hints = _NAME_HINTS[canonical]
    return 1.0 if any(h in p.tokens or any(t.startswith(h) for t in p.tokens) for h in hints) else 0.0


# -- timestamps ----------------------------------------------------------------------------


@dataclass
class TimeGuess:
    column: str
    aware: bool
    format: str | None
    parsed_share: float
    zone: str | None = None  # the zone of a tz-aware Parquet column
    ambiguous: list[str] = field(default_factory=list)


def guess_timestamp(profiles: list[Profile]) -> TimeGuess | None:
    """The event-time column and how to parse it (with the pipeline's own parser)."""
    found: list[tuple[float, TimeGuess]] = []
    for p in profiles:
        if p.kind == "timestamp":
            zone = str(p.values.dt.tz) if p.aware else None
            found.append((2.0 + _hint(p, "event_time"), TimeGuess(p.name, p.aware, None, 1.0, zone)))
            continue
        if p.kind != "text" or not p.filled:
            continue
        sample = p.values.astype(str).str.strip().drop_duplicates().head(3000)
        offsets = float(sample.str.contains(_OFFSET).mean())
        if offsets > 0.98:
            share = _parse_share(sample, None)
            if share > 0.98:
                found.append((1.5 + share + _hint(p, "event_time"), TimeGuess(p.name, True, None, share)))
            continue
        ok = [(fmt, _parse_share(sample, fmt)) for fmt in TIMESTAMP_FORMATS]
        good = [(fmt, share) for fmt, share in ok if share > 0.98]
        if not good:
            continue
        fmt, share = max(good, key=lambda x: x[1])  # first of the best: the most specific
        ties = [f for f, s in good if s == share and f != fmt and ("%d" in f) != ("%d" in fmt or False)]
        guess = TimeGuess(p.name, False, fmt, share, ambiguous=[f for f in ties if _swapped(f, fmt)])
        found.append((1.0 + share + _hint(p, "event_time"), guess))
    return max(found, key=lambda x: x[0])[1] if found else None


def _swapped(a: str, b: str) -> bool:
    return a.replace("%d", "%X").replace("%m", "%d").replace("%X", "%m") == b


def _parse_share(values: pd.Series, fmt: str | None) -> float:
    probe = SourceSettings(
        path="-",
        timezone="UTC",
        timestamp_format=fmt,
        mapping=ColumnMapping(customer_id="_", event_time="_", quantity="_", amount="_"),
    )
    ts, bad = sources._timestamps(values.reset_index(drop=True), probe)
    return float(ts.notna().mean()) if len(values) else 0.0


# -- the other columns ---------------------------------------------------------------------


def _repeats(p: Profile) -> float:
    return p.filled / p.distinct if p.distinct else 0.0


def guess_customer(profiles: list[Profile], used: set[str]) -> Profile | None:
    best, score = None, 0.0
    for p in profiles:
        if p.name in used or p.kind in ("timestamp", "boolean", "number") or not p.filled:
            continue
        if p.kind == "text" and (p.text_len > 24 or p.spaces > 0.05):
            continue  # descriptions, names
        repeats = _repeats(p)
        if repeats < 1.5 or p.distinct < 10:
            continue
        s = 1.0 + 2.0 * _hint(p, "customer_id") + min(math.log10(p.distinct), 6) / 6
        s += 0.5 * ("id" in p.tokens or "no" in p.tokens or "number" in p.tokens)
        s -= 1.5 * _hint(p, "item_id") + 1.5 * _hint(p, "order_id")
        if s > score:
            best, score = p, s
    return best


def guess_quantity(profiles: list[Profile], used: set[str]) -> Profile | None:
    best, score = None, 0.0
    for p in profiles:
        if p.name in used or p.kind != "integer" or p.numbers is None:
            continue
        q = p.numbers.dropna()
        if not len(q):
            continue
        median = float(q.abs().median())
        small = float((q.abs() <= 12).mean())
        s = 2.0 * _hint(p, "quantity") + small + 0.5 * float((q < 0).any()) + (median <= 12)
        if p.distinct > 0.5 * p.filled:
            s -= 2.0  # an id, not a count
        if s > score:
            best, score = p, s
    return best


def guess_order(
    frame: pd.DataFrame, profiles: list[Profile], used: set[str], customer: str | None, time: str
) -> Profile | None:
    """A column whose lines share one customer and one time, with several lines per value."""
    best, score = None, 0.0
    for p in profiles:
        if p.name in used or p.kind not in ("text", "integer") or not p.filled:
            continue
        if p.text_len > 24 or p.spaces > 0.05:
            continue
        lines_per = _repeats(p)
        if lines_per < 1.2 or p.distinct < 10:
            continue
        groups = frame.loc[p.values.index, [p.name, time] + ([customer] if customer else [])]
        g = groups.groupby(p.name, sort=False)
        one_time = float((g[time].nunique(dropna=False) == 1).mean())
        one_customer = float((g[customer].nunique(dropna=False) == 1).mean()) if customer else 1.0
        if one_time < 0.9 or one_customer < 0.95:
            continue
        s = one_time + one_customer + 2.0 * _hint(p, "order_id")
        if s > score:
            best, score = p, s
    return best


def guess_item(profiles: list[Profile], used: set[str]) -> Profile | None:
    best, score = None, 0.0
    for p in profiles:
        if p.name in used or p.kind not in ("text", "integer") or not p.filled:
            continue
        if p.text_len > 20 or p.spaces > 0.2 or p.distinct < 20 or _repeats(p) < 2:
            continue
        s = 1.0 + 2.0 * _hint(p, "item_id") - 0.8 * p.spaces
        if s > score:
            best, score = p, s
    return best


def country_codes() -> dict[str, str]:
    """Lower-cased country names, alpha-2 and alpha-3 codes -> alpha-2 (holidays' registry, pytz)."""
    import pytz
    from holidays import registry

    out: dict[str, str] = {}
    for key, entry in registry.COUNTRIES.items():
        _cls, alpha2, alpha3, *_ = entry
        out[key.replace("_", " ")] = alpha2
        out[re.sub(r"(?<=[a-z])(?=[A-Z])", " ", _cls).lower()] = alpha2
        out[alpha2.lower()] = alpha2
        out[alpha3.lower()] = alpha2
    for alpha2, name in pytz.country_names.items():
        out.setdefault(name.lower(), alpha2)
        out.setdefault(alpha2.lower(), alpha2)
    return out


def guess_country(profiles: list[Profile], used: set[str], codes: dict[str, str]) -> Profile | None:
    best, score = None, 0.0
    for p in profiles:
        if p.name in used or p.kind != "text" or not p.filled or p.distinct > 300:
            continue
        known = float(p.values.astype(str).str.strip().str.lower().isin(codes.keys()).mean())
        if known < 0.5:
            continue
        s = known + 2.0 * _hint(p, "country")
        if s > score:
            best, score = p, s
    return best


def guess_return_flag(profiles: list[Profile], used: set[str]) -> Profile | None:
    flags = [p for p in profiles if p.name not in used and p.kind == "boolean"]
    flags.sort(key=lambda p: -_hint(p, "is_return"))
    return flags[0] if flags and (_hint(flags[0], "is_return") or len(flags) == 1) else None


def guess_money(
    frame: pd.DataFrame, profiles: list[Profile], used: set[str], quantity: str, item: str | None
) -> tuple[str | None, str | None, dict[str, float]]:
    """(unit_price column, amount column, evidence). Price: constant per item; amount: ~ quantity."""
    money = [
        p
        for p in profiles
        if p.name not in used and p.kind in ("number", "integer") and p.numbers is not None
    ]
    q = pd.to_numeric(frame[quantity], errors="coerce")
    evidence: dict[str, float] = {}
    price_col = amount_col = None
    best_price = best_amount = -1.0
    for p in money:
        x = p.numbers
        qx = q.loc[x.index]
        both = x.notna() & qx.notna() & (qx != 0)
        if both.sum() < 10:
            continue
        x, qx = x[both], qx[both]
        # Sign: an amount turns negative with the quantity; a price stays positive.
        neg = qx < 0
        follows_sign = float(((x < 0) == neg).mean()) if neg.any() else float("nan")
        per_item_price = per_item_ratio = float("nan")
        if item is not None:
            items = frame.loc[x.index, item]
            cv_x = _median_cv(x.abs(), items)
            cv_r = _median_cv((x / qx).abs(), items)
            per_item_price, per_item_ratio = cv_x, cv_r
        # Without items: an amount correlates with |quantity| much more than a price does.
        corr = float(np.corrcoef(np.abs(x), np.abs(qx))[0, 1]) if x.std() > 0 and qx.std() > 0 else 0.0
        evidence[p.name] = {
            "cv_per_item": per_item_price,
            "cv_of_ratio_per_item": per_item_ratio,
            "sign_follows_quantity": follows_sign,
            "corr_with_quantity": corr,
        }
        amountish = 2.0 * _hint(p, "amount") + corr
        priceish = 2.0 * _hint(p, "unit_price") - corr
        if not math.isnan(per_item_price) and not math.isnan(per_item_ratio):
            amountish += 2.0 * (per_item_ratio < per_item_price)
            priceish += 2.0 * (per_item_price <= per_item_ratio)
        if not math.isnan(follows_sign):
            amountish += 2.0 * (follows_sign > 0.9)
            priceish += 2.0 * (follows_sign < 0.5)
        if amountish > priceish and amountish > best_amount:
            amount_col, best_amount = p.name, amountish
        elif priceish >= amountish and priceish > best_price:
            price_col, best_price = p.name, priceish
    return price_col, amount_col, evidence


def _median_cv(values: pd.Series, groups: pd.Series) -> float:
    g = values.groupby(groups.to_numpy(), sort=False)
    stats = g.agg(["mean", "std", "size"])
    stats = stats[(stats["size"] >= 5) & (stats["mean"] > 0)]
    if stats.empty:
        return float("nan")
    return float((stats["std"] / stats["mean"]).median())


def guess_return_prefix(frame: pd.DataFrame, order: str, quantity: str) -> str | None:
    """A letter prefix on (nearly) every negative-quantity line's order id and (nearly) no other."""
    ids = frame[order].astype("string").str.strip()
    q = pd.to_numeric(frame[quantity], errors="coerce")
    prefix = ids.str.extract(r"^([A-Za-z]+)", expand=False)
    neg, pos = q < 0, q > 0
    if not neg.any():
        return None
    top = prefix[neg].value_counts()
    if top.empty:
        return None
    candidate, count = top.index[0], int(top.iloc[0])
    on_neg = count / int(neg.sum())
    on_pos = float((prefix[pos] == candidate).mean()) if pos.any() else 0.0
    return str(candidate) if on_neg >= 0.8 and on_pos <= 0.01 else None


# -- the calendar --------------------------------------------------------------------------


def propose_calendar(daily: pd.Series, country: str | None) -> tuple[TradingCalendar, dict[str, Any]]:
    """Closed weekdays, the country's public holidays (best subdivision), Easter, closures."""
    import holidays
    from dateutil.easter import easter

    days = [d.date() for d in daily.index]
    zero = {d for d, n in zip(days, daily.to_numpy(), strict=True) if n == 0}
    weekdays = []
    for wd in range(7):
        on = [d for d in days if d.weekday() == wd]
        if on and sum(d in zero for d in on) / len(on) >= 0.8:
            weekdays.append(wd)
    cal = TradingCalendar(closed_weekdays=weekdays)
    evidence: dict[str, Any] = {}
    supported = holidays.list_supported_countries()
    if country and country in supported:
        # The country's holidays (the subdivision explaining the most zero days, then trading on the
        # fewest holidays, then none) as soon as they explain one zero day: a holiday the business
        # trades on only relaxes that day's volume band.
        best, best_key = None, (0, 0.0, 0.0)
        for sub in [None, *supported[country]]:
            table = holidays.country_holidays(country, subdiv=sub, years=sorted({d.year for d in days}))
            explained = sum(1 for d in zero if d in table and d.weekday() not in weekdays)
            traded = sum(1 for d in days if d in table and d not in zero)
            evidence[f"{country}/{sub or '-'}"] = {
                "zero_days_explained": explained,
                "holidays_traded": traded,
            }
            key = (explained, -traded, 0.0 if sub else 0.5)
            if explained and key > best_key:
                best, best_key = cal.model_copy(update={"country": country, "subdivision": sub}), key
        if best is not None:
            cal = best
    # Easter offsets closed in every year of the history.
    unexplained = sorted(d for d in zero if closed_reason(cal, d) is None)
    offsets = Counter((d - easter(d.year)).days for d in unexplained if abs((d - easter(d.year)).days) <= 3)
    years = {d.year for d in days if dt.date(d.year, 3, 22) >= days[0] or easter(d.year) >= days[0]}
    easter_in_range = [easter(y) for y in years if days[0] <= easter(y) <= days[-1]]
    cal.easter_offsets = sorted(
        o for o, n in offsets.items() if easter_in_range and n == len(easter_in_range)
    )
    # Remaining zero days: a run of zero days with two or more unexplained ones is a shutdown.
    unexplained = sorted(d for d in zero if closed_reason(cal, d) is None)
    runs: list[list[dt.date]] = []
    for d in sorted(zero):
        if runs and (d - runs[-1][-1]).days == 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    ranges, singles = [], []
    for run in runs:
        open_days = [d for d in run if d in unexplained]
        if len(open_days) >= 2:
            ranges.append((run[0], run[-1]))
        elif open_days:
            singles.append(open_days[0])
    cal.closure_ranges = ranges
    cal.closures = singles  # one-off closures: the user confirms them (or the day was a broken export)
    return cal, evidence


def guess_zone(time: TimeGuess, given: str | None, country: str | None) -> tuple[str, str | None]:
    if given:
        return given, None
    if time.aware:
        if time.zone:
            return time.zone, None
        return "UTC", "timestamps carry their UTC offset: source.timezone only applies to naive values"
    import pytz

    zones = pytz.country_timezones.get(country, []) if country else []
    if len(zones) == 1:
        return zones[0], None
    if zones:
        return zones[0], (
            f"timestamps are naive local times and {country} has {len(zones)} time zones "
            f"({', '.join(zones[:4])}, ...): {zones[0]} is a guess; set source.timezone (--timezone)"
        )
    return "UTC", "timestamps are naive and no country column says where: UTC assumed; set source.timezone"


def odd_items(item: Profile | None) -> list[str]:
    """Item codes unlike the rest (no digit, or a shape under 1% of lines): often fees, postage."""
    if item is None:
        return []
    codes = item.values.astype(str).str.strip()
    shapes = codes.str.replace(r"[A-Za-z]", "A", regex=True).str.replace(r"\d", "9", regex=True)
    share = shapes.map(shapes.value_counts(normalize=True))
    letters_only = ~codes.str.contains(r"\d")
    odd = codes[letters_only | (share < 0.01)]
    counts = odd.value_counts()
    ranked = sorted(counts.index, key=lambda c: (any(ch.isdigit() for ch in c), -counts[c]))
    return ranked[:15]
