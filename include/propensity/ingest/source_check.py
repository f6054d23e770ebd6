"""``propensity source check PATH``: read a new transaction file and propose its ``source:`` block.

A new user has a file, not a configuration. This reads it as collect would (CSV with any delimiter,
line ending and encoding, gzip, Parquet), guesses which column is which from types and content
(names only break ties), and proposes the whole ``source:`` block. That block then goes through
the pipeline's own parser (:func:`propensity.ingest.sources.to_canonical`), so what the report shows is
what the first run will see: the first and last day, daily volume, zero days against the
proposed trading calendar, rows that validation would quarantine or count as duplicates, and the
first date a model can be trained.

Guesses, per canonical field (each column used once):

* ``event_time``: a timestamp column, or text that one format parses almost entirely; offsets in
  the values (or a tz-aware Parquet type) mean aware timestamps, otherwise naive wall-clock time
  in ``timezone`` (guessed from the dominant country; flagged where the country has several zones);
* ``customer_id``: repeated ids (many lines per value), integers or short codes, nulls allowed
  (guests); leading zeros are reported, because the id is kept as the text it is;
* ``quantity``: whole numbers, small, mostly positive (negatives are returns);
* ``order_id``: a column whose lines share one customer and one timestamp, several lines per value;
  none: a line is an order;
* ``item_id``: short codes bought by many customers; ``country``: a few values that are country
  names or codes;
* ``unit_price`` / ``amount``: a money column that is constant per item is a price, one that
  scales with the quantity (and turns negative with it) is an amount;
* returns: a boolean column; else an order-id prefix carried by (nearly) every negative-quantity
  line and (nearly) no other; else negative quantities.

``python -m propensity.ingest.source_check PATH [--timezone ZONE] [--yaml]``; the project's CLI
calls :func:`run`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import logging
import math
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from propensity.core.settings import (
    CANONICAL_FIELDS,
    ColumnMapping,
    Settings,
    SourceSettings,
    TradingCalendar,
    TrainingSettings,
    ValidationSettings,
)
from propensity.ingest import sources
from propensity.ingest.calendar import closed_reason

log = logging.getLogger(__name__)

DELIMITERS = (",", ";", "\t", "|")
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


class SourceCheckError(RuntimeError):
    """The file cannot be read at all; the message names it and the problem."""


# -- reading the file as collect would -----------------------------------------------------


@dataclass
class FileFacts:
    path: str
    size: int
    compression: str | None
    format: str
    encoding: str | None = None
    bom: bool = False
    delimiter: str | None = None
    line_ending: str | None = None


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        from propensity.core.storage import open_store

        folder, name = path.rsplit("/", 1)
        return open_store(folder).read_bytes(name)
    p = Path(path)
    if not p.is_file():
        raise SourceCheckError(f"{path}: no such file")
    return p.read_bytes()


def sniff(data: bytes, path: str) -> tuple[FileFacts, bytes]:
    """Compression, format, encoding, delimiter and line ending; returns the decompressed bytes."""
    if not data:
        raise SourceCheckError(f"{path}: file is empty (0 bytes)")
    facts = FileFacts(path=path, size=len(data), compression=None, format="csv")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise SourceCheckError(f"{path}: gzip stream is damaged or truncated ({exc})") from exc
        facts.compression = "gzip"
    if data[:4] == b"PAR1":
        facts.format = "parquet"
        return facts, data
    facts.encoding, facts.bom = _encoding(data)
    head = data[: 1 << 16].decode(facts.encoding, errors="replace").lstrip("\ufeff")
    crlf, lf, cr = head.count("\r\n"), head.count("\n"), head.count("\r")
    facts.line_ending = "\\r\\n" if crlf and crlf >= lf - crlf else ("\\r" if cr > lf else "\\n")
    facts.delimiter = _delimiter(head)
    return facts, data


def _encoding(data: bytes) -> tuple[str, bool]:
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8", True  # pandas drops the BOM from the header
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16", True
    try:
        data.decode("utf-8")
        return "utf-8", False
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data[: 1 << 20])
    best = matches.best()
    if best is None:
        return "latin-1", False  # every byte decodes: the rows are read, accents may be wrong
    # Little non-ASCII text decodes cleanly in several code pages (and their language coherence
    # is noise); among those, Windows' Western one is what spreadsheet exports most often are.
    tied = [m for m in matches if m.chaos <= best.chaos]
    western = any("cp1252" in m.could_be_from_charset for m in tied)
    return ("cp1252" if western else best.encoding), False


def _delimiter(head: str) -> str:
    lines = [ln for ln in head.splitlines()[:200] if ln.strip()]
    if len(lines) > 1:
        lines = lines[:-1]  # the head may cut the last line
    sample = "\n".join(lines)
    try:
        found = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
        if found in DELIMITERS:
            return found
    except csv.Error:
        pass
    # The delimiter that splits every line into the same number of fields (more than one).
    best, best_score = ",", -1.0
    for d in DELIMITERS:
        counts = [len(next(csv.reader([ln], delimiter=d))) for ln in lines]
        mode, freq = Counter(counts).most_common(1)[0]
        score = freq / len(counts) if mode > 1 else 0.0
        if score > best_score:
            best, best_score = d, score
    return best


def read_frame(path: str) -> tuple[FileFacts, pd.DataFrame]:
    """The file's rows with its own columns, parsed exactly as collect parses them."""
    facts, data = sniff(_read_bytes(path), path)
    probe = SourceSettings(
        path=path,
        format=facts.format,
        delimiter=facts.delimiter or ",",
        encoding=facts.encoding or "utf-8",
        mapping=ColumnMapping(customer_id="_", event_time="_", quantity="_", amount="_"),
    )
    try:
        # Already decompressed: read_source_bytes would only gunzip a .gz name or gzip magic again.
        frame = sources.read_source_bytes(data, path.removesuffix(".gz"), probe)
    except sources.SourceError as exc:
        raise SourceCheckError(str(exc)) from exc
    frame.columns = [str(c).lstrip("\ufeff") for c in frame.columns]
    if frame.empty:
        raise SourceCheckError(f"{path}: a header but no rows")
    return facts, frame


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


def _country_codes() -> dict[str, str]:
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


# -- the report ----------------------------------------------------------------------------


@dataclass
class SourceReport:
    facts: FileFacts
    rows: int
    columns: list[str]
    source: dict[str, Any]  # the proposed source: block
    notes: list[str]
    first_day: dt.date | None
    last_day: dt.date | None
    daily: pd.Series  # rows per UTC day, every day of [first, last]
    zero_days: list[tuple[dt.date, str | None]]  # and the calendar's reason (None: unexplained)
    checks: dict[str, int]  # what validation would do with the rows
    first_run: list[str]
    evidence: dict[str, Any]
    home_country: str | None = None

    def yaml(self) -> str:
        return proposal_yaml(self)


def check_source(
    path: str,
    *,
    settings: Settings | None = None,
    timezone: str | None = None,
    name: str | None = None,
    sample_rows: int = 200_000,
) -> SourceReport:
    """Read ``path``, propose its ``source:`` block and say what the first run will do."""
    validation = settings.validation if settings else ValidationSettings()
    training = settings.training if settings else TrainingSettings()
    horizon = settings.features.label_days if settings else 30
    facts, frame = read_frame(path)
    notes: list[str] = []
    sample = frame.sample(n=sample_rows, random_state=16) if len(frame) > sample_rows else frame
    profiles = [profile(sample, c) for c in sample.columns]

    time = guess_timestamp(profiles)
    if time is None:
        raise SourceCheckError(
            f"{path}: no column reads as timestamps (tried timestamp types and {len(TIMESTAMP_FORMATS)} "
            f"formats); columns: {list(frame.columns)}"
        )
    used = {time.column}
    customer = guess_customer(profiles, used)
    if customer is None:
        raise SourceCheckError(f"{path}: no column looks like a customer id (repeated short ids)")
    used.add(customer.name)
    quantity = guess_quantity(profiles, used)
    if quantity is None:
        raise SourceCheckError(f"{path}: no column looks like a quantity (small whole numbers)")
    used.add(quantity.name)
    order = guess_order(sample, profiles, used, customer.name, time.column)
    if order is not None:
        used.add(order.name)
    item = guess_item(profiles, used)
    if item is not None:
        used.add(item.name)
    price, amount, money_evidence = guess_money(
        sample, profiles, used, quantity.name, item.name if item else None
    )
    if price is None and amount is None:
        raise SourceCheckError(f"{path}: no money column (unit price or amount) found")
    used |= {c for c in (price, amount) if c}
    codes = _country_codes()
    country = guess_country(profiles, used, codes)
    if country is not None:
        used.add(country.name)
    flag = guess_return_flag(profiles, used)
    if flag is not None:
        used.add(flag.name)
    prefix = (
        guess_return_prefix(sample, order.name, quantity.name) if order is not None and flag is None else None
    )

    home = None
    if country is not None:
        top = country.values.astype(str).str.strip().value_counts()
        home = str(top.index[0])
    home_code = codes.get(home.lower()) if home else None

    if facts.encoding and facts.encoding != "utf-8":
        notes.append(f"the text is not UTF-8: read as {facts.encoding} (a guess: check accented values)")
    zone, zone_note = _zone(time, timezone, home_code)
    if zone_note:
        notes.append(zone_note)
    mapping = {f: None for f in CANONICAL_FIELDS}
    mapping |= {
        "customer_id": customer.name,
        "event_time": time.column,
        "quantity": quantity.name,
        "order_id": order.name if order else None,
        "item_id": item.name if item else None,
        "unit_price": price,
        "amount": amount,
        "is_return": flag.name if flag else None,
        "country": country.name if country else None,
    }
    block: dict[str, Any] = {
        "name": name or _name_of(path),
        "kind": "export",
        "path": path,
        "format": "auto" if _auto_format(path) == facts.format else facts.format,
        "delimiter": facts.delimiter or ",",
        "encoding": facts.encoding or "utf-8",
        "timezone": zone,
        "timestamp_format": time.format,
        "mapping": mapping,
        "return_order_prefix": prefix,
        "guest_rows": customer.nulls > 0,
    }
    source = SourceSettings(**block)

    # Through the pipeline's own parser: what collect will write.
    canonical = sources.to_canonical(frame, path, source)
    when = canonical["event_time"]
    days = when.dt.floor("D").dropna()
    first = days.min().date() if len(days) else None
    last = days.max().date() if len(days) else None
    daily = pd.Series(dtype="int64")
    calendar = TradingCalendar()
    cal_evidence: dict[str, Any] = {}
    if first is not None:
        index = pd.date_range(first, last, freq="D", tz="UTC")
        daily = days.value_counts().reindex(index, fill_value=0).sort_index()
        calendar, cal_evidence = propose_calendar(daily, home_code)
    block["calendar"] = _calendar_block(calendar)
    if calendar.country:
        traded = cal_evidence.get(f"{calendar.country}/{calendar.subdivision or '-'}", {}).get(
            "holidays_traded", 0
        )
        if traded:
            notes.append(
                f"calendar: closed on {calendar.country} public holidays is proposed, but the business trades on "
                f"{traded} of them: on those days the volume band is not applied"
            )
    block["non_product_items"] = []
    block["download_url"] = None
    source = SourceSettings(**block)
    zero_days = [(d.date(), closed_reason(calendar, d.date())) for d, n in daily.items() if n == 0]

    checks = _row_checks(canonical, source, validation)
    notes += _notes(customer, time, order, prefix, flag, checks)
    evidence = {"money": money_evidence, "calendar": cal_evidence, "non_product_candidates": _odd_items(item)}
    report = SourceReport(
        facts=facts,
        rows=len(frame),
        columns=list(frame.columns),
        source=block,
        notes=notes,
        first_day=first,
        last_day=last,
        daily=daily,
        zero_days=zero_days,
        checks=checks,
        first_run=[],
        evidence=evidence,
        home_country=home,
    )
    report.first_run = _first_run(report, source, training, horizon, used)
    return report


def _name_of(path: str) -> str:
    stem = Path(path).name.split(".")[0]
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "source"


def _auto_format(path: str) -> str | None:
    try:
        return sources.detect_format(path, "auto")
    except sources.SourceError:
        return None


def _zone(time: TimeGuess, given: str | None, country: str | None) -> tuple[str, str | None]:
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


def _calendar_block(cal: TradingCalendar) -> dict[str, Any]:
    return {
        "country": cal.country,
        "subdivision": cal.subdivision,
        "closed_weekdays": list(cal.closed_weekdays),
        "closure_ranges": [[a.isoformat(), b.isoformat()] for a, b in cal.closure_ranges],
        "closures": [d.isoformat() for d in cal.closures],
        "easter_offsets": list(cal.easter_offsets),
    }


def _row_checks(canonical: pd.DataFrame, source: SourceSettings, v: ValidationSettings) -> dict[str, int]:
    """What the row-level expectations and the duplicate check would do (counted as validate counts)."""
    q, price = canonical["quantity"], canonical["unit_price"]
    ret = canonical["is_return"].fillna(False).astype(bool)
    sale = ~ret & canonical["is_return"].notna()
    key = [c for c in canonical.columns if not c.startswith("_")] + ["_parse_errors"]
    return {
        "rows": len(canonical),
        "guest_rows": int(canonical["customer_id"].isna().sum()),
        "parse_errors": int(canonical["_parse_errors"].notna().sum()),
        "no_event_time": int(canonical["event_time"].isna().sum()),
        "zero_quantity": int((q == 0).fillna(False).sum()),
        "negative_quantity_outside_returns": int(((q < 1) & sale).fillna(False).sum()),
        "returns_with_positive_quantity": int(((q > -1) & ret).fillna(False).sum()),
        "quantity_over_limit": int((q.abs() > v.max_abs_quantity).fillna(False).sum()),
        "negative_unit_price": int((price < 0).fillna(False).sum()),
        "returns": int(ret.sum()),
        "identical_lines": int(canonical.duplicated(subset=key, keep="first").sum()),
    }


def _notes(
    customer: Profile,
    time: TimeGuess,
    order: Profile | None,
    prefix: str | None,
    flag: Profile | None,
    checks: dict[str, int],
) -> list[str]:
    notes = []
    if customer.leading_zeros > 0.01:
        notes.append(
            f"{customer.name}: {customer.leading_zeros:.0%} of ids have leading zeros ('{customer.values.iloc[0]}'): "
            "they are kept as text, so '000123' and '123' are different customers everywhere"
        )
    if customer.kind == "integer" and customer.values.astype(str).str.contains(r"\.0$").any():
        notes.append(f"{customer.name}: integer ids written as floats ('17850.0') are read as '17850'")
    if time.ambiguous:
        notes.append(
            f"{time.column}: every value also parses as {time.ambiguous[0]!r} (day and month both <= 12): "
            f"{time.format!r} is a guess"
        )
    if order is None:
        notes.append(
            "no order id: a line is an order; the pipeline derives '<customer>@<time>' "
            f"({checks['identical_lines']:,} identical lines: real repeat purchases for such a source, "
            "but today's validation removes exact copies as duplicates)"
        )
    if prefix:
        notes.append(f"returns: order ids starting with {prefix!r} (on the negative-quantity lines)")
    elif flag is not None:
        notes.append(f"returns: the boolean column {flag.name!r}")
    else:
        notes.append(f"returns: negative quantities ({checks['returns']:,} lines)")
    return notes


def _odd_items(item: Profile | None) -> list[str]:
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


def _first_run(
    report: SourceReport, source: SourceSettings, training: TrainingSettings, horizon: int, used: set[str]
) -> list[str]:
    from propensity.core.cutoffs import plan_cutoffs

    c = report.checks
    out = []
    if report.first_day is None:
        return ["no row has a usable event time: collect would refuse the file"]
    span = (report.last_day - report.first_day).days + 1
    out.append(
        f"collect (export): parses the file once into the cache ({report.rows:,} rows), then each daily run "
        f"takes its UTC day's rows: {report.first_day} .. {report.last_day} ({span} days)"
    )
    unused = [col for col in report.columns if col not in used]
    if unused:
        out.append(f"collect: columns not mapped (allowed, reported): {unused}")
    quarantine = (
        c["parse_errors"]
        + c["no_event_time"]
        + c["zero_quantity"]
        + c["negative_quantity_outside_returns"]
        + c["returns_with_positive_quantity"]
        + c["quantity_over_limit"]
        + c["negative_unit_price"]
    )
    out.append(
        f"validate: about {quarantine:,} line(s) quarantined (unparseable values {c['parse_errors']:,}, zero "
        f"quantity {c['zero_quantity']:,}, negative quantity outside a return "
        f"{c['negative_quantity_outside_returns']:,}, over the quantity limit {c['quantity_over_limit']:,}, "
        f"negative price {c['negative_unit_price']:,}); {c['identical_lines']:,} identical line(s) removed as "
        f"duplicates; {c['guest_rows']:,} guest line(s) kept"
    )
    unexplained = [d for d, why in report.zero_days if why is None]
    explained = len(report.zero_days) - len(unexplained)
    if unexplained:
        shown = ", ".join(d.isoformat() for d in unexplained[:8])
        out.append(
            f"validate: {len(unexplained)} zero day(s) the calendar does not explain would FAIL as broken "
            f"exports ({shown}); add them to source.calendar.closures if the business was closed"
        )
    out.append(f"validate: {explained} zero day(s) pass as closed by the proposed calendar")
    as_of = None
    for k in range(span + 1):
        day = report.first_day + dt.timedelta(days=k)
        try:
            plan = plan_cutoffs(report.first_day, day, training)
        except ValueError:
            continue
        as_of = day
        break
    if as_of is None:
        out.append(
            f"train: not enough history for a first model: it needs {training.min_history_days} days, then "
            f"{training.eval_cutoffs + training.validation_cutoffs + 1} weekly cutoffs whose {horizon}-day labels "
            f"have matured; the file spans {span} days"
        )
    else:
        final = plan_cutoffs(report.first_day, report.last_day + dt.timedelta(days=1), training)
        out.append(
            f"train: the first possible training date is {as_of} ({len(plan.all)} cutoffs); as of "
            f"{report.last_day + dt.timedelta(days=1)}: {len(final.all)} weekly cutoffs "
            f"{final.all[0]} .. {final.all[-1]} (at most training.max_cutoffs={training.max_cutoffs})"
        )
    return out


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of plain values: ``[5]``, ``['2010-12-24', '2011-01-03']``."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flow = all(not isinstance(v, dict | list) for v in data) or all(
            isinstance(v, list) and all(not isinstance(x, dict | list) for x in v) for v in data
        )
        node = self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=False)
        if flow:
            inner = all(not isinstance(v, dict | list) for v in data)
            node.flow_style = inner
            for child in node.value:
                child.flow_style = True
        return node


_Dumper.add_representer(list, _Dumper.represent_list)


def proposal_yaml(report: SourceReport) -> str:
    """The ``source:`` block to paste into config (comments carry what needs a human)."""
    text = yaml.dump({"source": report.source}, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    lines = [f"# proposed by `propensity source check {report.facts.path}`"]
    lines += [f"# NOTE: {n}" for n in report.notes]
    odd = report.evidence.get("non_product_candidates")
    if odd:
        lines.append(
            f"# fee or adjustment lines? item codes unlike the rest: {odd}: list them in non_product_items"
        )
    if report.home_country:
        lines.append(f"# and in features: home_countries: [{report.home_country}]  (the dominant country)")
    return "\n".join(lines) + "\n" + text


def render(report: SourceReport) -> str:
    """The human report: file facts, the proposal, volume, zero days, what the first run will do."""
    f = report.facts
    out = [
        f"file: {f.path} ({f.size:,} bytes{', gzip' if f.compression else ''}), {f.format}"
        + (
            f", encoding {f.encoding}{' (BOM)' if f.bom else ''}, delimiter {f.delimiter!r}, line ending {f.line_ending}"
            if f.format == "csv"
            else ""
        ),
        f"rows: {report.rows:,}; columns: {report.columns}",
        "",
        "mapping (canonical <- column):",
    ]
    for canon, col in report.source["mapping"].items():
        out.append(f"  {canon:12} <- {col if col else '(none)'}")
    if report.first_day is not None:
        d = report.daily
        trading = d[d > 0]
        out += [
            "",
            f"days (UTC): {report.first_day} .. {report.last_day}: {len(d)} days, {len(trading)} with rows; "
            f"rows per trading day min {int(trading.min()):,} / median {int(trading.median()):,} / max {int(trading.max()):,}",
        ]
        weekly = d.groupby(d.index.weekday).mean()
        names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        out.append(
            "mean rows by weekday: " + ", ".join(f"{names[i]} {weekly.get(i, 0):,.0f}" for i in range(7))
        )
        monthly = d.groupby(d.index.strftime("%Y-%m")).sum()
        out.append("rows by month: " + ", ".join(f"{m} {n:,}" for m, n in monthly.items()))
        out.append(f"zero days: {len(report.zero_days)}")
        for day, why in report.zero_days:
            out.append(f"  {day} {day.strftime('%a')}: {why or 'UNEXPLAINED by the calendar'}")
    out += ["", "what the first run will do:"]
    out += [f"  - {line}" for line in report.first_run]
    out += ["", "proposed configuration (paste into config/defaults.yaml or an override):", "", report.yaml()]
    return "\n".join(out)


def run(
    path: str, *, timezone: str | None = None, yaml_only: bool = False, settings: Settings | None = None
) -> int:
    """What ``propensity source check PATH`` does: print the report (or only the YAML); 1 on an unreadable file."""
    try:
        report = check_source(path, settings=settings, timezone=timezone)
    except (SourceCheckError, sources.SourceError) as exc:
        print(f"source check: {exc}", file=sys.stderr)
        return 1
    print(report.yaml() if yaml_only else render(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="propensity source check", description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--timezone", default=None, help="zone of naive timestamps, when the guess is wrong")
    parser.add_argument("--yaml", action="store_true", help="print only the proposed source: block")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = None
    try:
        from propensity.core.settings import get_settings

        settings = get_settings()
    except Exception as exc:  # noqa: BLE001 - a new user's config may not load yet; defaults do
        log.warning("settings not loaded (%s): using the defaults of the settings classes", exc)
    return run(args.path, timezone=args.timezone, yaml_only=args.yaml, settings=settings)


if __name__ == "__main__":
    raise SystemExit(main())
