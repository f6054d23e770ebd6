"""Alerts: the file, webhook (Airflow HttpNotifier) and mail (SmtpNotifier) channels against real
servers through Airflow connections, a broken channel, and the Airflow notifier."""

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
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()
    server.server_close()
    thread.join()


def test_alerts_go_to_the_log_the_file_and_the_webhook(make_settings, webhook, caplog, monkeypatch):
    url, received = webhook
    # The URL lives in an Airflow connection (here from the environment), not in settings.
    monkeypatch.setenv("AIRFLOW_CONN_PROPENSITY_ALERTS_HTTP", url)
    settings = make_settings(
        validation={"alerts": {"http_conn_id": "propensity_alerts_http", "http_endpoint": "hook"}}
    )
    record = send_alert(
        "validation_failed", "ingest 2011-03-01", {"failed": ["row_count_in_band"]}, settings=settings
    )

    assert record["delivered"] == ["log", "file", "webhook"]
    (stored,) = read_alerts(settings)
    assert stored["kind"] == "validation_failed" and stored["details"] == {"failed": ["row_count_in_band"]}
    assert received[0]["title"] == "ingest 2011-03-01"
    assert "ALERT [validation_failed] ingest 2011-03-01" in caplog.text


def test_a_broken_channel_does_not_silence_the_others(make_settings, caplog, monkeypatch):
    # Nothing listens on port 9 (discard) of the loopback: the webhook fails, the file still gets it.
    monkeypatch.setenv("AIRFLOW_CONN_PROPENSITY_ALERTS_HTTP", "http://127.0.0.1:9")
    settings = make_settings(
        validation={
            "alerts": {"http_conn_id": "propensity_alerts_http", "http_endpoint": "hook", "timeout_s": 2}
        }
    )
    record = send_alert("task_failed", "collect 2011-03-01", "source file does not exist", settings=settings)
    assert record["delivered"] == ["log", "file"]
    assert [a["details"] for a in read_alerts(settings)] == [{"message": "source file does not exist"}]
    assert "alert channel webhook failed" in caplog.text


@pytest.fixture
def smtp_server():
    """A real SMTP server on a free loopback port (the standard library's, Python 3.11) recording mail."""
    import asyncore
    import smtpd
    import socket

    received: list[tuple[str, list[str], str]] = []

    class Recorder(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append((mailfrom, rcpttos, data.decode() if isinstance(data, bytes) else data))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Recorder(("127.0.0.1", port), None)
    thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    yield port, received
    server.close()
    thread.join(timeout=5)


def test_alerts_are_mailed_through_an_smtp_connection(make_settings, smtp_server, monkeypatch):
    port, received = smtp_server
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROPENSITY_ALERTS_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_tls": True, "disable_ssl": True},
            }
        ),
    )
    settings = make_settings(
        validation={
            "alerts": {
                "smtp_conn_id": "propensity_alerts_smtp",
                "smtp_to": ["oncall@example.com"],
                "smtp_from": "propensity@example.com",
            }
        }
    )
    record = send_alert(
        "deploy_failed", "v3 not deployed", {"reason": "parity <1e-6 failed"}, settings=settings
    )
    assert record["delivered"] == ["log", "file", "smtp"]
    (mail,) = received
    assert mail[0] == "propensity@example.com" and mail[1] == ["oncall@example.com"]
    import email

    message = email.message_from_string(mail[2])
    assert message["Subject"] == "[propensity deploy_failed] v3 not deployed"
    (body,) = [
        p.get_payload(decode=True).decode() for p in message.walk() if p.get_content_type() == "text/html"
    ]
    assert "parity &lt;1e-6 failed" in body  # the details, escaped in the HTML body


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
