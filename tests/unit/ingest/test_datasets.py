"""The UCI download path, exercised against a local file:// archive made here."""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pandas as pd
import pytest

from propensity.ingest.collect import collect
from propensity.ingest.datasets import DatasetError, download_and_convert, ensure_source


def make_uci_zip(path) -> None:
    """A tiny workbook shaped like UCI's: blanks in CustomerID make Excel store it as float."""
    frame = pd.DataFrame(
        {
            "InvoiceNo": ["536365", "C536379"],
            "StockCode": ["85123A", "D"],
            "Description": ["WHITE HANGING HEART T-LIGHT HOLDER", "Discount"],
            "Quantity": [6, -1],
            "InvoiceDate": [dt.datetime(2010, 12, 1, 8, 26), dt.datetime(2010, 12, 1, 9, 41)],
            "UnitPrice": [2.55, 27.5],
            "CustomerID": [17850.0, None],
            "Country": ["United Kingdom", "United Kingdom"],
        }
    )
    sheet = io.BytesIO()
    frame.to_excel(sheet, index=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Online Retail.xlsx", sheet.getvalue())


def test_download_converts_the_workbook_to_the_mapped_csv(tmp_path):
    archive = tmp_path / "online+retail.zip"
    make_uci_zip(archive)
    dest = download_and_convert(archive.as_uri(), tmp_path / "out" / "online_retail.csv.gz")
    text = pd.read_csv(dest, dtype=str, keep_default_na=False)
    assert list(text["InvoiceDate"]) == ["2010-12-01 08:26:00", "2010-12-01 09:41:00"]
    assert list(text["CustomerID"]) == ["17850", ""]
    assert list(text["Quantity"]) == ["6", "-1"]


def test_demo_fetches_when_the_configured_file_is_absent_and_collects_it(
    tmp_path, make_settings, monkeypatch
):
    archive = tmp_path / "online+retail.zip"
    make_uci_zip(archive)
    settings = make_settings(
        source={"path": str(tmp_path / "absent.csv.gz"), "download_url": archive.as_uri()}
    )
    monkeypatch.setenv("PROPENSITY_HOME", str(tmp_path))
    (tmp_path / "config").mkdir()
    monkeypatch.setenv("PROPENSITY_CONFIG_DIR", str(tmp_path / "config"))
    path = ensure_source(settings)
    assert path == str(tmp_path / "data" / "downloads" / "online_retail.csv.gz")
    assert (tmp_path / "config" / "local.env").read_text() == f"PROPENSITY_SOURCE__PATH={path}\n"
    settings.source.path = path
    start = dt.datetime(2010, 12, 1, tzinfo=dt.UTC)
    result = collect(settings, start, start + dt.timedelta(days=1))
    assert result.rows == 2


def test_download_of_something_else_fails_clearly(tmp_path):
    bogus = tmp_path / "page.html"
    bogus.write_text("<html>moved</html>")
    with pytest.raises(DatasetError, match="expected a zip or .xlsx archive"):
        download_and_convert(bogus.as_uri(), tmp_path / "x.csv.gz")
    with pytest.raises(DatasetError, match="could not download"):
        download_and_convert((tmp_path / "nope.zip").as_uri(), tmp_path / "x.csv.gz")
