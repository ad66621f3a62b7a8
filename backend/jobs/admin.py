from django.contrib import admin

from backend.jobs.models import JobRecord


@admin.register(JobRecord)
class JobRecordAdmin(admin.ModelAdmin[JobRecord]):
    list_display = ["name", "subject", "state", "attempts", "started_at", "finished_at"]
    list_filter = ["state", "name"]
    readonly_fields = [f.name for f in JobRecord._meta.fields]
