"""Access alerts (security checklist L-02): a burst of denied attempts on one site's data by
one user raises an alert for that site's QA administrators, once per burst, sent like a quality
alert and without patient data."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone

from backend.audit.models import AuditEvent
from backend.dashboards.access import access_alert_notify, access_alerts_evaluate
from backend.dashboards.models import AccessAlert, AlertSettings
from tests.dashboards.test_alerts import webhook  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db


def _probe(api, persona, study, times: int) -> None:
    """Ask for a study the persona may not see, ``times`` times (each answered 404, and each
    denial on the audit trail against the study's site)."""
    client = api.as_(persona)
    for _ in range(times):
        assert client.get(f"/api/studies/{study.pk}/").status_code == 404


def test_a_burst_of_denials_raises_one_alert_for_the_owning_site(
    api, radiologist_b, admin_b, study_a, site_a, settings
):
    settings.ARTISCAN_DENIED_BURST = 20
    _probe(api, radiologist_b, study_a, 19)
    _probe(api, admin_b, study_a, 5)
    assert AuditEvent.objects.filter(outcome="denied", site_id=site_a.pk).count() == 24
    assert access_alerts_evaluate() == [], "19 is under the threshold, and per user"
    _probe(api, radiologist_b, study_a, 1)
    (alert,) = access_alerts_evaluate()
    assert (alert.site, alert.username, alert.attempts) == (site_a, "rad_b", 20)
    assert alert.user_id == radiologist_b.user.pk and alert.source_ips == "127.0.0.1"
    assert alert.first_at <= alert.last_at
    # The burst goes on: alerted once within the window ...
    _probe(api, radiologist_b, study_a, 5)
    assert access_alerts_evaluate() == []
    # ... and again once the alert is a window old and the burst still goes on.
    window = dt.timedelta(seconds=settings.ARTISCAN_DENIED_BURST_WINDOW_S)
    AccessAlert.objects.update(last_at=timezone.now() - window - dt.timedelta(seconds=1))
    (again,) = access_alerts_evaluate()
    assert again.pk != alert.pk and again.attempts == 25
    # Denials older than the window do not count.
    assert access_alerts_evaluate(now=timezone.now() + window + window) == []
    assert AccessAlert.objects.count() == 2


def test_refusals_on_a_site_the_user_belongs_to_count_towards_an_alert(
    api, annotator_a, site_a, settings, scratch_store
):
    """An annotator of site A who tries, over and over, to review the model's findings (a 403:
    they see the series but may not review) is a burst of denied attempts on site A too."""
    from backend.scoring.models import Finding
    from tests.review.helpers import scored_series

    settings.ARTISCAN_DENIED_BURST = 20
    series = scored_series(site_a, slices=2)
    client = api.as_(annotator_a)
    for finding in list(Finding.objects.filter(run=series.current_run)) * 5:
        answer = client.post(f"/api/findings/{finding.pk}/reviews/", {"action": "reject"})
        assert answer.status_code == 403
    (alert,) = access_alerts_evaluate()
    assert (alert.site, alert.username, alert.attempts) == (site_a, "annotator_a", 20)


def test_an_access_alert_goes_out_by_mail_and_webhook_without_patient_data(
    api,
    radiologist_b,
    study_a,
    site_a,
    settings,
    webhook,  # noqa: F811
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ARTISCAN_DENIED_BURST = 3
    url, received = webhook
    AlertSettings.objects.create(site=site_a, emails="security@example.org", webhook_url=url)
    _probe(api, radiologist_b, study_a, 3)
    (alert,) = access_alerts_evaluate()
    access_alert_notify(alert_id=alert.pk)
    (message,) = mail.outbox
    assert message.to == ["security@example.org"]
    assert "3 denied attempts by rad_b" in message.subject
    assert "revoke" in message.body and "127.0.0.1" in message.body
    (payload,) = received
    assert payload["kind"] == "artiscan.access_alert" and payload["attempts"] == 3
    assert set(payload) == {
        "kind", "id", "site", "user_id", "username", "attempts", "first_at", "last_at",
        "source_ips", "audit_trail",
    }  # fmt: skip
    text = message.body + str(payload)
    assert study_a.study_uid not in text and str(study_a.pk) not in text
    access_alert_notify(alert_id=alert.pk)  # once only
    assert len(mail.outbox) == 1 and len(received) == 1


def test_only_the_sites_qa_administrators_see_and_acknowledge_its_access_alerts(
    api, radiologist_b, admin_a, admin_b, radiologist_a, study_a, site_a, settings
):
    settings.ARTISCAN_DENIED_BURST = 2
    _probe(api, radiologist_b, study_a, 2)
    (alert,) = access_alerts_evaluate()
    mine = api.as_(admin_a).get("/api/dashboards/access-alerts/").json()["rows"]
    assert [(r["id"], r["username"], r["attempts"]) for r in mine] == [(alert.pk, "rad_b", 2)]
    assert api.as_(admin_b).get("/api/dashboards/access-alerts/").json()["rows"] == []
    listed = api.as_(radiologist_a).get("/api/dashboards/access-alerts/")
    assert listed.status_code == 403 or listed.json()["rows"] == []
    url = f"/api/dashboards/access-alerts/{alert.pk}/acknowledge/"
    assert api.as_(admin_b).post(url).status_code == 404
    acknowledged = api.as_(admin_a).post(url)
    assert acknowledged.status_code == 200 and acknowledged.json()["acknowledged_by"] == "admin_a"
    still_open = api.as_(admin_a).get("/api/dashboards/access-alerts/?open=true").json()["rows"]
    assert still_open == []
    assert AuditEvent.objects.filter(object_type="access_alert", username="admin_a").exists()
