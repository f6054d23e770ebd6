"""The Airflow UI in headless Chromium: log in, open the training DAG, trigger it with Params from
the trigger form, and see the run succeed (the shared standalone of conftest.py, seeded zone)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from e2e_airflow import TRAINING_AS_OF, USERNAME, Standalone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium package; Playwright never downloads one
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REASON = "e2e: triggered from the UI"


@pytest.fixture
def page(tmp_path: Path) -> Iterator:
    """A page of a fresh headless Chromium profile."""
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} missing: apt-get install chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)  # CI installs it: a missing browser is a broken job, not a skip
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(60_000)  # a loaded 2-core box renders slowly
        try:
            yield context.new_page()
        finally:
            context.close()


def test_trigger_training_with_params_from_the_ui_and_see_it_succeed(
    airflow_standalone: Standalone, page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    sa = airflow_standalone
    page.goto(f"{sa.url}/")
    expect(page.get_by_text("Sign into Airflow")).to_be_visible()  # redirected to the login form
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(sa.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="Dags")).to_be_visible()

    page.goto(f"{sa.url}/dags/training")
    expect(page.get_by_text("build_training_set").first).to_be_visible()
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    expect(form.get_by_role("heading", name=re.compile(r"Trigger Dag -\s+training"))).to_be_visible()
    # The form is generated from the DAG's Params: one field per Param, defaults filled in.
    expect(form.locator("#element_reason")).to_have_value("scheduled")
    form.locator("#element_reason").fill(REASON)
    form.locator("#element_training_end_date").fill(TRAINING_AS_OF.isoformat())
    # dry_run is a switch whose checkbox is visually hidden: click the switch, as a person does.
    form.locator("label:has(input[name=element_dry_run])").click()
    expect(form.locator("input[name=element_dry_run]")).to_be_checked()
    expect(form.locator("input[name=element_rollback]")).not_to_be_checked()
    form.get_by_role("button", name="Trigger").click()

    # The UI opens the new run's page; its id is in the address.
    page.wait_for_url(re.compile(r"/dags/training/runs/[^/]+$"))
    run_id = unquote(page.url.rsplit("/runs/", 1)[1])
    path = f"dags/training/dagRuns/{quote(run_id, safe='')}"
    created = sa.api("GET", path)
    assert created["run_type"] == "manual"
    assert created["conf"] == {
        "reason": REASON,
        "training_end_date": TRAINING_AS_OF.isoformat(),
        "dry_run": True,
        "rollback": False,
    }

    run = sa.wait_for_run("training", run_id, timeout=1200)
    tasks = {t["task_id"]: t["state"] for t in sa.api("GET", f"{path}/taskInstances")["task_instances"]}
    assert run["state"] == "success", tasks
    assert tasks == {
        "choose_path": "success",
        "build_training_set": "success",
        "train_model": "success",
        "evaluate_model": "success",
        "register_challenger": "success",
        "deploy_shadow": "success",
        "shadow_test": "success",
        "gate_model": "success",
        "promote_model": "success",
        "rollback_champion": "skipped",  # the branch took the training path
        "deploy_champion": "success",
    }

    def xcom(task_id: str):
        entry = f"{path}/taskInstances/{task_id}/xcomEntries/return_value"
        return sa.api("GET", entry, params={"deserialize": "true", "stringify": "false"})["value"]

    # The Params reached the tasks: trained as of the date typed, and dry_run kept the registry still.
    assert xcom("build_training_set")["as_of"] == TRAINING_AS_OF.isoformat()
    promoted = xcom("promote_model")
    assert promoted["promoted"] is False
    assert promoted["detail"] == "dry run: evaluated without promoting"
    assert xcom("deploy_champion") == {"deployed": False, "detail": "no champion yet"}

    # What a person sees: the run page with the run marked successful.
    page.reload()
    expect(page.get_by_text(run_id).first).to_be_visible()
    expect(page.get_by_text("Success").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "training-run.png"), full_page=True)
