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

``propensity source check PATH [--timezone ZONE] [--name NAME] [--yaml]`` (the project's CLI)
calls :func:`run`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from propensity.core.settings import (
    CANONICAL_FIELDS,
    Settings,
    SourceSettings,
    TradingCalendar,
    TrainingSettings,
    ValidationSettings,
)
from propensity.ingest import sources
from propensity.ingest.calendar import closed_reason
from propensity.ingest.source_guess import (
    TIMESTAMP_FORMATS,
    Profile,
    TimeGuess,
    country_codes,
    guess_country,
    guess_customer,
    guess_item,
    guess_money,
    guess_order,
    guess_quantity,
    guess_return_flag,
    guess_return_prefix,
    guess_timestamp,
    guess_zone,
    odd_items,
    profile,
    propose_calendar,
)
from propensity.ingest.source_read import FileFacts, SourceCheckError, read_frame

__all__ = ["SourceCheckError", "SourceReport", "check_source", "proposal_yaml", "render", "run"]

log = logging.getLogger(__name__)


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
    codes = country_codes()
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
    zone, zone_note = guess_zone(time, timezone, home_code)
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
        "duplicates": "auto",
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
    evidence = {"money": money_evidence, "calendar": cal_evidence, "non_product_candidates": odd_items(item)}
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
    floats = customer.values.astype(str)
    floats = floats[floats.str.contains(r"\.0$")]
    if customer.kind == "integer" and len(floats):
        one = floats.iloc[0]
        notes.append(f"{customer.name}: integer ids written as floats ('{one}') are read as '{one[:-2]}'")
    if time.ambiguous:
        notes.append(
            f"{time.column}: every value also parses as {time.ambiguous[0]!r} (day and month both <= 12): "
            f"{time.format!r} is a guess"
        )
    if order is None:
        notes.append(
            "no order id: a line is a purchase; the pipeline derives '<customer>@<time>' "
            f"({checks['identical_lines']:,} identical lines: repeat purchases, kept by source.duplicates: auto)"
        )
    if prefix:
        notes.append(f"returns: order ids starting with {prefix!r} (on the negative-quantity lines)")
    elif flag is not None:
        notes.append(f"returns: the boolean column {flag.name!r}")
    else:
        notes.append(f"returns: negative quantities ({checks['returns']:,} lines)")
    return notes


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
    drops = SourceSettings(**report.source).drops_duplicates
    dedup = "removed as duplicates" if drops else "kept (no order id: each is a purchase)"
    out.append(
        f"validate: about {quarantine:,} line(s) quarantined (unparseable values {c['parse_errors']:,}, zero "
        f"quantity {c['zero_quantity']:,}, negative quantity outside a return "
        f"{c['negative_quantity_outside_returns']:,}, over the quantity limit {c['quantity_over_limit']:,}, "
        f"negative price {c['negative_unit_price']:,}); {c['identical_lines']:,} identical line(s) {dedup}; "
        f"{c['guest_rows']:,} guest line(s) kept"
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
    """Block style, except short lists of plain values: ``[5]``, ``['YYYY-12-24', 'YYYY-01-03']``."""

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
    path: str,
    *,
    timezone: str | None = None,
    yaml_only: bool = False,
    settings: Settings | None = None,
    name: str | None = None,
) -> int:
    """What ``propensity source check PATH`` does: print the report (or only the YAML); 1 on an unreadable file."""
    try:
        report = check_source(path, settings=settings, timezone=timezone, name=name)
    except (SourceCheckError, sources.SourceError) as exc:
        print(f"source check: {exc}", file=sys.stderr)
        return 1
    print(report.yaml() if yaml_only else render(report))
    return 0
