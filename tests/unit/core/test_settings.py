"""Settings layers: a source's column mapping is replaced whole by the layer that gives it."""

from __future__ import annotations

import os

import pytest
import yaml

from propensity.core.settings import Settings, committed_settings, config_dir, get_settings

CSV_MAPPING = {"customer_id": "client", "event_time": "ts", "quantity": "qty", "amount": "total"}


def test_a_mapping_given_as_overrides_replaces_the_default_mapping(tmp_path):
    settings = committed_settings(zone_root=str(tmp_path), source={"mapping": CSV_MAPPING})
    m = settings.source.mapping
    assert m.mapped() == CSV_MAPPING  # nothing inherited: no order id, unit price, item or country
    assert m.order_id is None and m.unit_price is None and m.country is None
    # The rest of the source block still comes from the defaults.
    assert settings.source.path == committed_settings(zone_root=str(tmp_path)).source.path


def test_the_default_mapping_stands_when_no_layer_gives_one(tmp_path):
    defaults = yaml.safe_load((config_dir() / "defaults.yaml").read_text())["source"]["mapping"]
    m = committed_settings(zone_root=str(tmp_path), source={"delimiter": ";"}).source.mapping
    assert m.mapped() == defaults


def test_an_overlay_file_replaces_the_mapping_and_merges_the_rest(tmp_path, monkeypatch):
    overlay = tmp_path / "retailer.yaml"
    overlay.write_text(yaml.safe_dump({"source": {"name": "csv_shop", "mapping": CSV_MAPPING}}))
    for key in [k for k in os.environ if k.startswith("PROPENSITY_")]:
        if key != "PROPENSITY_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PROPENSITY_CONFIG_OVERLAY", str(overlay))
    monkeypatch.setenv("PROPENSITY_ZONE_ROOT", str(tmp_path / "zones"))
    # One key by environment variable still sets that key only (on top of the overlay's mapping).
    monkeypatch.setenv("PROPENSITY_SOURCE__MAPPING__COUNTRY", "land")
    get_settings.cache_clear()
    try:
        settings = Settings()
    finally:
        get_settings.cache_clear()
    assert settings.source.name == "csv_shop"
    assert settings.source.mapping.mapped() == CSV_MAPPING | {"country": "land"}
    assert settings.source.timezone == committed_settings(zone_root=str(tmp_path)).source.timezone


def test_an_overlay_that_does_not_exist_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_CONFIG_OVERLAY", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        Settings()


@pytest.mark.parametrize(
    ("mapping", "duplicates", "drops"),
    [
        ({"order_id": "order"}, "auto", True),
        ({}, "auto", False),
        ({}, "drop", True),
        ({"order_id": "order"}, "keep", False),
    ],
)
def test_duplicates_auto_drops_only_with_an_order_id(tmp_path, mapping, duplicates, drops):
    source = {"mapping": CSV_MAPPING | mapping, "duplicates": duplicates}
    assert committed_settings(zone_root=str(tmp_path), source=source).source.drops_duplicates is drops
