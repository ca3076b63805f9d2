"""Database backup download, restore upload and the data-management page (admins only)."""

import logging

from django import forms
from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST, require_safe

from .access import admin_page, export_view, json_error
from .audit import Channel, Kind, Outcome, finish_audit, start_audit
from .backup import BackupError, LockHeld, backup_filename, database_status, start_backup
from .locks import lock_status, lock_ttl_ms
from .restore import RestoreUploadHandler, finish_restore_audit, restore_archive, sweep_stale_files
from .streaming import streaming_download

log = logging.getLogger("exports.backup")

# The spec's text, untranslated: clients match on it.
LOCK_HELD_ERROR = "Another admin is performing backup"


class BackupForm(forms.Form):
    mode = forms.ChoiceField(
        label=gettext_lazy("Contents"),
        choices=[
            ("full", gettext_lazy("Everything, usage-log rows included")),
            ("exclude_logs", gettext_lazy("Without usage-log rows (tables kept, rows left out)")),
        ],
        required=False,
        initial="full",
        widget=forms.RadioSelect,
    )

    def clean_mode(self):
        return self.cleaned_data["mode"] or "full"


class RestoreForm(forms.Form):
    file = forms.FileField(label=gettext_lazy("Backup file (.dump)"))
    clean = forms.TypedChoiceField(
        label=gettext_lazy("Drop existing objects first"),
        choices=[("yes", gettext_lazy("Yes (recommended)")), ("no", gettext_lazy("No"))],
        coerce=lambda v: v == "yes",
        initial="yes",
        widget=forms.RadioSelect,
    )
    confirm = forms.BooleanField(
        label=gettext_lazy("I understand that this replaces the data of this hub's database.")
    )


def backup_error_response(exc: BackupError):
    if isinstance(exc, LockHeld):
        response = json_error(409, LOCK_HELD_ERROR, detail=_("Wait for it to finish, then try again."))
        remaining = lock_status().ttl_ms or lock_ttl_ms()
        response["Retry-After"] = str(max(1, remaining // 1000))
        return response
    return json_error(exc.status, str(exc))


def backup_download(request, *, exclude_logs: bool, channel: str):
    """The download behind the dashboard and the admin: 409/503/500 JSON before any byte."""
    mode = "exclude_logs" if exclude_logs else "full"
    audit = start_audit(kind=Kind.DATABASE_BACKUP, channel=channel, user=request.user, request=request, filters={"mode": mode})
    try:
        stream = start_backup(exclude_logs=exclude_logs, actor=request.user.get_username())
    except BackupError as exc:
        finish_audit(audit, outcome=Outcome.FAILED, detail=f"{exc.status}: {exc}")
        return backup_error_response(exc)
    except Exception as exc:  # anything else before the first byte: still JSON, still audited
        log.exception("database_export_error mode=%s status=500", mode)
        finish_audit(audit, outcome=Outcome.FAILED, detail=f"500: {type(exc).__name__}")
        return json_error(500, _("Internal Server Error"))
    return streaming_download(
        request, stream, audit=audit, filename=backup_filename(), content_type="application/octet-stream"
    )


@require_safe
@export_view(Kind.DATABASE_BACKUP)
def database_backup(request):
    form = BackupForm(request.GET)
    if not form.is_valid():
        return json_error(400, _("mode must be full or exclude_logs."), fields=form.errors.get_json_data())
    return backup_download(request, exclude_logs=form.cleaned_data["mode"] == "exclude_logs", channel=Channel.WEB)


# The upload handler must be set before anything reads request.POST, and CsrfViewMiddleware
# does; hence csrf_exempt on the view and csrf_protect on the part that reads the form.
@csrf_exempt
@require_POST
@export_view(Kind.DATABASE_RESTORE)
def database_restore(request):
    limit = RestoreUploadHandler(request).limit
    declared = (request.META.get("CONTENT_LENGTH") or "0").strip()
    if not declared.isascii() or not declared.isdigit():
        return _restore_answer(request, 400, _("Content-Length must be a whole number of bytes."))
    if int(declared) > limit + 1024 * 1024:
        return _restore_answer(request, 413, _("The file is larger than the limit (%(limit)s bytes).") % {"limit": limit})
    handler = RestoreUploadHandler(request)
    request.upload_handlers = [handler]
    try:
        return _restore(request)
    finally:
        handler.discard()  # the temporary file goes now: success, error, or a cancelled upload


@csrf_protect
def _restore(request):
    handler = request.upload_handlers[0]
    form = RestoreForm(request.POST, request.FILES)
    if handler.too_large:
        return _restore_answer(request, 413, _("The file is larger than the limit (%(limit)s bytes).") % {"limit": handler.limit})
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
        return _restore_answer(request, 400, errors)
    upload = form.cleaned_data["file"]
    clean = form.cleaned_data["clean"]
    audit = start_audit(
        kind=Kind.DATABASE_RESTORE,
        channel=Channel.WEB,
        user=request.user,
        request=request,
        filters={"clean": clean, "file": upload.name[:200], "size": upload.size},
    )
    try:
        result = restore_archive(upload.temporary_file_path(), clean=clean, actor=request.user.get_username())
    except BackupError as exc:
        finish_restore_audit(audit, outcome=Outcome.FAILED, bytes=upload.size, detail=f"{exc.status}: {exc}")
        if isinstance(exc, LockHeld):
            return _restore_answer(request, 409, LOCK_HELD_ERROR)
        return _restore_answer(request, exc.status, str(exc))
    except Exception as exc:
        log.exception("database_restore_error status=500")
        finish_restore_audit(audit, outcome=Outcome.FAILED, bytes=upload.size, detail=f"500: {type(exc).__name__}")
        return _restore_answer(request, 500, _("Internal Server Error"))
    finish_restore_audit(audit, outcome=Outcome.OK, bytes=upload.size, detail=f"{result.seconds:.1f}s")
    return _restore_answer(
        request, 200, _("Restored %(name)s in %(seconds).1f s; migrations applied.") % {"name": upload.name, "seconds": result.seconds}
    )


def _restore_answer(request, status: int, message: str):
    """JSON for the page's script (it shows upload progress), a redirect for a plain form."""
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"ok": status == 200, "message": message}, status=status)
    (messages.success if status == 200 else messages.error)(request, message)
    return HttpResponseRedirect(reverse("dashboard:data"))


@require_safe
@admin_page
def data_management(request):
    sweep_stale_files()
    return render(
        request,
        "dashboard/data_management.html",
        {"status": database_status(), "backup_form": BackupForm(), "restore_form": RestoreForm()},
    )
