"""The demo dataset: found at its configured path, or fetched once from UCI and converted.

UCI serves Online Retail (id 352) as an ``.xlsx`` inside a zip. The conversion writes the
same columns as a gzipped CSV (timestamps ``YYYY-MM-DD HH:MM:SS``, integer customer ids),
which is what the committed source mapping reads. Nothing here knows the column names
except through the sheet itself: the conversion keeps the header as it is.
"""

from __future__ import annotations

import io
import logging
import os
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd

from propensity.core.settings import Settings, config_dir, project_home

log = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    pass


def download_and_convert(url: str, dest: Path, timeout: float = 120.0) -> Path:
    """Fetch ``url`` (a zip holding one .xlsx, or the .xlsx itself) and write ``dest`` (.csv.gz)."""
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) or file:// by design)
            blob = resp.read()
    except OSError as exc:
        raise DatasetError(f"could not download {url}: {exc}") from exc
    sheet = _xlsx_bytes(blob, url)
    frame = pd.read_excel(io.BytesIO(sheet), dtype=object)
    frame = frame.apply(_normalise_column)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    frame.to_csv(tmp, index=False, compression="gzip", date_format="%Y-%m-%d %H:%M:%S")
    os.replace(tmp, dest)
    log.info("converted %d rows to %s", len(frame), dest)
    return dest


def _xlsx_bytes(blob: bytes, url: str) -> bytes:
    if blob[:2] != b"PK":
        raise DatasetError(f"{url}: expected a zip or .xlsx archive, got {blob[:16]!r}")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        if "[Content_Types].xml" in names:  # the .xlsx itself is a zip
            return blob
        sheets = [n for n in names if n.lower().endswith(".xlsx")]
        if not sheets:
            raise DatasetError(f"{url}: no .xlsx inside the archive (found {names})")
        return zf.read(sheets[0])


def _normalise_column(col: pd.Series) -> pd.Series:
    """Excel hands back whole numbers as floats when a column has blanks: write them as integers."""
    values = col.dropna()
    if len(values) and values.map(lambda v: isinstance(v, float) and v.is_integer()).all():
        return col.map(lambda v: "" if pd.isna(v) else str(int(v)))
    return col


def ensure_source(settings: Settings) -> str:
    """The source path, downloading the dataset first when it is absent and a URL is configured.

    The converted file's location is written to the gitignored ``config/local.env`` so every
    later process (Airflow tasks included) reads the same path.
    """
    source = settings.source
    if source.kind != "export" or "://" in source.path or Path(source.path).exists():
        return source.path
    if not source.download_url:
        raise DatasetError(f"source file {source.path} does not exist and no download_url is configured")
    dest = project_home() / "data" / "downloads" / f"{source.name}.csv.gz"
    if not dest.exists():
        print(f"{source.path} is absent: fetching the dataset from {source.download_url} (once)", flush=True)
        download_and_convert(source.download_url, dest)
    _remember_source_path(dest)
    return str(dest)


def _remember_source_path(dest: Path) -> None:
    path = config_dir() / "local.env"
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [ln for ln in lines if not ln.startswith("PROPENSITY_SOURCE__PATH=")]
    lines.append(f"PROPENSITY_SOURCE__PATH={dest}")
    path.write_text("\n".join(lines) + "\n")
