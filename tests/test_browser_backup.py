"""In Chromium: an admin opens the data-management page, downloads a backup, then restores it."""

import pytest

from exports import locks
from exports.models import ExportAudit
from monitoring.models import Provider

from .factories import MessageRequestFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _memory_lock(settings, tmp_path):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.BACKUP_WORK_DIR = str(tmp_path / "work")
    locks._memory_locks.clear()


def test_admin_backs_up_then_restores_the_file(page, live_server, login, admin_user, alice, tmp_path):
    MessageRequestFactory.create_batch(5, user=alice)
    login("admin")
    page.click("text=Data management")
    page.wait_for_url("**/dashboard/settings/data/")
    assert page.locator("#db-reachable").inner_text() == "reachable"
    assert "Per process" in page.locator("#lock-kind").inner_text()
    assert page.locator("#lock-state").inner_text() == "free"

    page.check("input[name=mode][value=exclude_logs]")
    page.check("input[name=mode][value=full]")
    with page.expect_download() as info:
        page.click("#backup-button")
    download = info.value
    assert download.suggested_filename.startswith("backup_") and download.suggested_filename.endswith(".dump")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes().startswith(b"PGDMP")

    Provider.objects.create(name="made-after-the-backup", url="https://after.example")
    page.set_input_files("#restore-file", str(saved))
    page.check("#restore-confirm")
    page.click("#restore-button")
    status = page.locator("#restore-status")
    status.filter(has_text="Restored").wait_for(timeout=60_000)
    assert saved.name in status.inner_text()
    page.screenshot(path=str(tmp_path / "data-page.png"), full_page=True)

    assert not Provider.objects.filter(name="made-after-the-backup").exists()
    assert ExportAudit.objects.filter(kind="database_restore", outcome="ok", channel="web").count() == 1
    assert not locks.lock_status().held


def test_non_admins_see_no_link_and_get_403(page, live_server, login, alice):
    login("alice")
    assert page.locator("text=Data management").count() == 0
    response = page.goto(f"{live_server.url}/dashboard/settings/data/")
    assert response.status == 403
