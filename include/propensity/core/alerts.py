"""One way to raise an alert, for the whole project: ``send_alert`` and an Airflow notifier on it.

``send_alert(kind, title, details)`` works in tasks and from the command line. Channels come from
``settings.validation.alerts``: the log always; a JSON line per alert under ``<zone_root>/alerts/``
(on by default); a webhook and mail through Airflow's own notifiers (``HttpNotifier``,
``SmtpNotifier``) and connections when configured, so URLs and credentials live in Airflow
connections. A channel that fails is logged and the others still run; the caller learns which
channels delivered from the returned record.

:class:`AlertNotifier` is the Airflow side: pass it as ``on_failure_callback`` and a failed task
becomes an alert carrying the DAG, task, day and the exception's message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from typing import Any

from propensity.core.settings import Settings
from propensity.core.zones import ALERTS_DIR

log = logging.getLogger(__name__)

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
    if cfg.http_conn_id:
        channels.append(("webhook", lambda: _to_webhook(cfg, record)))
    if cfg.smtp_conn_id and cfg.smtp_to:
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


def _to_webhook(cfg: Any, record: dict[str, Any]) -> None:
    from airflow.providers.http.notifications.http import HttpNotifier

    body = json.loads(json.dumps(record, default=str))
    notifier = HttpNotifier(
        http_conn_id=cfg.http_conn_id,
        endpoint=cfg.http_endpoint,
        json=body,
        headers={"Content-Type": "application/json"},
        extra_options={"timeout": cfg.timeout_s},
    )
    notifier.notify({})  # HttpHook raises on a non-2xx answer


def _to_smtp(cfg: Any, record: dict[str, Any]) -> None:
    import html

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    notifier = SmtpNotifier(
        to=cfg.smtp_to,
        from_email=cfg.smtp_from,
        subject=f"[propensity {record['kind']}] {record['title']}",
        html_content="<pre>" + html.escape(json.dumps(record["details"], indent=2, default=str)) + "</pre>",
        smtp_conn_id=cfg.smtp_conn_id,
    )
    notifier.notify({})


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
