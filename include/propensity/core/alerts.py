"""One way to raise an alert, for the whole project: ``send_alert`` and an Airflow notifier on it.

``send_alert(kind, title, details)`` works anywhere (tasks, the serving API, the drift venv that
has no Airflow). Channels come from ``settings.validation.alerts``: the log always; a JSON line
per alert under ``<zone_root>/alerts/`` (on by default); a webhook (JSON POST) and SMTP mail when
configured. A channel that fails is logged and the others still run; the caller learns which
channels delivered from the returned record.

:class:`AlertNotifier` is the Airflow side: pass it as ``on_failure_callback`` and a failed task
becomes an alert carrying the DAG, task, day and the exception's message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import smtplib
import urllib.request
import uuid
from email.message import EmailMessage
from typing import Any

from propensity.core.settings import Settings

log = logging.getLogger(__name__)

ALERTS_DIR = "alerts"
ALERTS_FILE = "alerts.jsonl"


def send_alert(
    kind: str,
    title: str,
    details: dict[str, Any] | str | None = None,
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Raise an alert on every configured channel; returns the record with ``delivered`` filled in."""
    if settings is None:
        from propensity.core.settings import get_settings

        settings = get_settings()
    cfg = settings.validation.alerts
    record: dict[str, Any] = {
        "kind": kind,
        "title": title,
        "details": details if isinstance(details, dict) else {"message": details or ""},
        # When the alert was raised (operational metadata; no data is derived from it).
        "raised_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "delivered": ["log"],
    }
    log.error("ALERT [%s] %s: %s", kind, title, json.dumps(record["details"], default=str))
    channels = []
    if cfg.file:
        channels.append(("file", lambda: _to_file(settings, record)))
    if cfg.webhook_url:
        channels.append(("webhook", lambda: _to_webhook(cfg.webhook_url, record, cfg.timeout_s)))
    if cfg.smtp_host and cfg.smtp_recipients:
        channels.append(("smtp", lambda: _to_smtp(cfg, record)))
    for name, deliver in channels:
        try:
            deliver()
        except Exception:  # one broken channel must not silence the others
            log.exception("alert channel %s failed for %r", name, title)
        else:
            record["delivered"].append(name)
    return record


def read_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every alert the file channel has recorded, oldest first (tests, the demo, on-call)."""
    from propensity.core.zones import zone_store

    store = zone_store(settings)
    if store.is_local:
        path = store.path(ALERTS_DIR, ALERTS_FILE)
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    records = [store.read_json(ALERTS_DIR, n) for n in store.list_dir(ALERTS_DIR) if n.endswith(".json")]
    return sorted(records, key=lambda r: r["raised_at"])


def _to_file(settings: Settings, record: dict[str, Any]) -> None:
    from propensity.core.zones import zone_store

    store = zone_store(settings)
    line = json.dumps({k: v for k, v in record.items() if k != "delivered"}, default=str, sort_keys=True)
    if store.is_local:
        path = store.path(ALERTS_DIR, ALERTS_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # O_APPEND: concurrent tasks' lines never interleave (one write call per line).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    else:
        # Object stores cannot append: one object per alert, named to sort by time.
        stamp = record["raised_at"].replace(":", "").replace("-", "")
        store.write_bytes(line.encode(), ALERTS_DIR, f"{stamp}-{uuid.uuid4().hex[:8]}.json")


def _to_webhook(url: str, record: dict[str, Any], timeout: float) -> None:
    body = json.dumps(record, default=str).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
        if response.status >= 300:
            raise RuntimeError(f"webhook answered HTTP {response.status}")


def _to_smtp(cfg: Any, record: dict[str, Any]) -> None:
    message = EmailMessage()
    message["Subject"] = f"[propensity {record['kind']}] {record['title']}"
    message["From"] = cfg.smtp_sender
    message["To"] = ", ".join(cfg.smtp_recipients)
    message.set_content(json.dumps(record["details"], indent=2, default=str))
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
        if cfg.smtp_user:
            smtp.starttls()
            smtp.login(cfg.smtp_user, cfg.smtp_password or "")
        smtp.send_message(message)


try:  # The notifier exists where Airflow does; send_alert works without it (drift venv, API).
    from airflow.sdk import BaseNotifier
except ImportError:  # pragma: no cover - exercised in the Airflow-free venv
    BaseNotifier = None  # type: ignore[assignment,misc]

if BaseNotifier is not None:

    class AlertNotifier(BaseNotifier):
        """Airflow notifier: ``on_failure_callback=AlertNotifier("validation_failed")``."""

        template_fields = ("kind", "title")

        def __init__(self, kind: str = "task_failed", title: str | None = None) -> None:
            super().__init__()
            self.kind = kind
            self.title = title

        def notify(self, context: Any) -> None:
            ti = context.get("ti") or context.get("task_instance")
            dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
            task_id = getattr(ti, "task_id", "?")
            start = context.get("data_interval_start")
            day = start.date().isoformat() if start is not None else None
            error = context.get("exception")
            details = {
                "dag_id": dag_id,
                "task_id": task_id,
                "run_id": context.get("run_id"),
                "day": day,
                "try_number": getattr(ti, "try_number", None),
                "error": str(error) if error is not None else None,
            }
            send_alert(self.kind, self.title or f"{dag_id}.{task_id} failed for {day}", details)
