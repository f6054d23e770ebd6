"""Reading a new transaction file as collect would: compression, format, encoding, delimiter, line ending.

Part of ``propensity source check`` (:mod:`propensity.ingest.source_check`): the bytes are sniffed
here, then parsed by the pipeline's own reader (:func:`propensity.ingest.sources.read_source_bytes`),
so the columns the check guesses from are the ones collect will see.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from propensity.core.settings import ColumnMapping, SourceSettings
from propensity.ingest import sources

DELIMITERS = (",", ";", "\t", "|")


class SourceCheckError(RuntimeError):
    """The file cannot be read at all; the message names it and the problem."""


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
