"""Alerts: the file and webhook channels for real, a broken channel, and the Airflow notifier."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pendulum
import pytest

from propensity.core.alerts import AlertNotifier, read_alerts, send_alert


@pytest.fixture
def webhook():
    """A real HTTP server on a free loopback port that records the bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_alerts_go_to_the_log_the_file_and_the_webhook(make_settings, webhook, caplog):
    url, received = webhook
    settings = make_settings(validation={"alerts": {"webhook_url": url}})
    record = send_alert(
        "validation_failed", "ingest 2011-03-01", {"failed": ["row_count_in_band"]}, settings=settings
    )

    assert record["delivered"] == ["log", "file", "webhook"]
    (stored,) = read_alerts(settings)
    assert stored["kind"] == "validation_failed" and stored["details"] == {"failed": ["row_count_in_band"]}
    assert received[0]["title"] == "ingest 2011-03-01"
    assert "ALERT [validation_failed] ingest 2011-03-01" in caplog.text


def test_a_broken_channel_does_not_silence_the_others(make_settings, caplog):
    # Nothing listens on port 9 (discard) of the loopback: the webhook fails, the file still gets it.
    settings = make_settings(
        validation={"alerts": {"webhook_url": "http://127.0.0.1:9/hook", "timeout_s": 2}}
    )
    record = send_alert("task_failed", "collect 2011-03-01", "source file does not exist", settings=settings)
    assert record["delivered"] == ["log", "file"]
    assert [a["details"] for a in read_alerts(settings)] == [{"message": "source file does not exist"}]
    assert "alert channel webhook failed" in caplog.text


def test_lines_append_and_are_read_back_in_order(make_settings):
    settings = make_settings()
    for i in range(3):
        send_alert("task_failed", f"alert {i}", settings=settings)
    assert [a["title"] for a in read_alerts(settings)] == ["alert 0", "alert 1", "alert 2"]


def test_the_airflow_notifier_raises_an_alert_from_a_failure_context(make_settings, monkeypatch):
    settings = make_settings()
    monkeypatch.setattr("propensity.core.settings.get_settings", lambda: settings)
    notifier = AlertNotifier("validation_failed")
    context = {
        "ti": SimpleNamespace(dag_id="ingest", task_id="validate_events", try_number=1),
        "run_id": "scheduled__2011-03-01T00:00:00+00:00",
        "data_interval_start": pendulum.datetime(2011, 3, 1, tz="UTC"),
        "exception": RuntimeError("validation of 2011-03-01 failed 1 batch check(s)"),
    }
    notifier(context)
    (alert,) = read_alerts(settings)
    assert alert["kind"] == "validation_failed"
    assert alert["title"] == "ingest.validate_events failed for 2011-03-01"
    assert alert["details"]["error"] == "validation of 2011-03-01 failed 1 batch check(s)"
    assert alert["details"]["day"] == "2011-03-01"
