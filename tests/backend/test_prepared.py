"""Prepared statements (``backend.config.prepared``) give what the ORM gives: the same rows,
the same model instances, the same inserted and updated rows, on PostgreSQL (the test
database) and on SQLite (the embedded defaults, in a process of their own). A value that the
ORM would transform before it reaches the SQL is refused when the statement is compiled, and a
value of the wrong type when it runs."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import F, Model
from django.utils import timezone

from tests.backend.embedded import run_embedded


def _values(obj: Model) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def check_against_the_orm() -> list[str]:
    """Each prepared statement of the product beside the ORM query it stands for, on the
    default database (empty but migrated); returns the names of the checks that ran."""
    from backend.accounts.models import ApiToken, Membership, Role, Site, User
    from backend.accounts.selectors import sender_for, token_get_active
    from backend.accounts.services import token_create
    from backend.audit.models import AuditAction, AuditEvent
    from backend.audit.services import AuditTarget, audit_record
    from backend.config.prepared import PreparedQuery, PreparedUpdate, instance_from
    from backend.dicomweb.metadata import _INSERT_METADATA
    from backend.ingest import services
    from backend.studies.models import Instance, InstanceMetadata, Series, Study

    ran = []
    site = Site.objects.create(name="Prepared A", slug="prepared-a")
    other = Site.objects.create(name="Prepared B", slug="prepared-b")
    user = User.objects.create(username="prepared", first_name="Ann", is_staff=True)
    Membership.objects.create(user=user, site=site, role=Role.OPERATOR)
    Membership.objects.create(user=user, site=site, role=Role.RADIOLOGIST)
    Membership.objects.create(user=user, site=other, role=Role.ANNOTATOR)

    # The token with its user, field for field, as select_related reads them.
    _, raw = token_create(user=user, name="prepared")
    token = token_get_active(raw_key=raw)
    expected = ApiToken.objects.select_related("user").get(key_hash=ApiToken.hash_key(raw))
    assert token is not None and _values(token) == _values(expected)
    assert _values(token.user) == _values(expected.user)
    assert token.user.last_login is None and token.user.date_joined == expected.user.date_joined
    assert not token._state.adding and token._state.db == "default"
    assert token_get_active(raw_key=raw + "x") is None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert token_get_active(raw_key=raw) is None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None, revoked_at=timezone.now())
    assert token_get_active(raw_key=raw) is None
    _, raw = token_create(user=user, name="inactive user")
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert token_get_active(raw_key=raw) is None
    User.objects.filter(pk=user.pk).update(is_active=True)
    ran.append("token")

    # The sender: the only sending site, the roles per site, for the audit.
    user.refresh_from_db()
    sender = sender_for(user=user, requested=None)
    assert sender.site is not None and _values(sender.site) == _values(site)
    assert {k: sorted(v) for k, v in sender.roles_by_site.items()} == {
        site.pk: ["operator", "radiologist"],
        other.pk: ["annotator"],
    }
    assert sender_for(user=user, requested=str(other.pk)).site is None  # an annotator there
    ran.append("sender")

    # The series lookup, with and without whether it holds a slice.
    study = Study.objects.create(site=site, study_uid="2.25.11")
    series = Series.objects.create(study=study, site=site, series_uid="2.25.12", series_number=3)
    Instance.objects.create(
        series=series, site=site, sop_uid="2.25.13", sop_class_uid="1.2", storage_key="k/1",
        rows=2, columns=3,
    )  # fmt: skip
    lookup = services._KNOWN_SERIES_HOLDING
    for sop, holds in (("2.25.13", True), ("2.25.99", False)):
        row = lookup.first(site.pk, "2.25.11", "2.25.12", sop)
        assert row is not None and row[-1] is holds
        found = instance_from(Series, row[:-1])
        assert _values(found) == _values(Series.objects.get(pk=series.pk))
        assert isinstance(found.pk, uuid.UUID)
    assert lookup.first(other.pk, "2.25.11", "2.25.12", "2.25.13") is None
    assert services._KNOWN_SERIES.first(site.pk, "2.25.11", "2.25.12") is not None
    ran.append("series")

    # The arrivals count: one row changed, by the amount.
    assert services._COUNT_ARRIVALS.run(series.pk, 3) == 1
    assert services._COUNT_ARRIVALS.run(uuid.uuid4(), 3) == 0
    assert Series.objects.get(pk=series.pk).instance_count == series.instance_count + 3
    ran.append("update")

    # Inserts: the same row as bulk_create makes, its auto_now_add time set; metadata rows
    # that exist already are skipped; the audit's own ids come from the database.
    before = timezone.now()
    new = Instance(
        series=series, site=site, sop_uid="2.25.14", sop_class_uid="1.2", storage_key="k/2",
        rows=4, columns=5, echo_time_ms=2.5, phase_encode_direction="COL",
    )  # fmt: skip
    with transaction.atomic():
        services._INSERT_INSTANCES.insert([new])
    stored = Instance.objects.get(pk=new.pk)
    assert _values(stored) == _values(new) and stored.received_at >= before
    assert not new._state.adding
    with pytest.raises(IntegrityError), transaction.atomic():
        services._INSERT_INSTANCES.insert([Instance(**{**_values(new), "id": uuid.uuid4()})])
    _INSERT_METADATA.insert([InstanceMetadata(instance=stored, dicom_json='{"a": "b\\"c"}')])
    _INSERT_METADATA.insert([InstanceMetadata(instance=stored, dicom_json="{}")])
    assert InstanceMetadata.objects.get(pk=stored.pk).dicom_json == '{"a": "b\\"c"}'
    many = [
        Instance(series=series, site=site, sop_uid=f"2.25.2{i}", sop_class_uid="1.2",
                 storage_key=f"k/2{i}", rows=1, columns=1)
        for i in range(5)
    ]  # fmt: skip
    services._INSERT_INSTANCES.insert(many)
    assert Instance.objects.filter(sop_uid__startswith="2.25.2").count() == 5
    lots = [
        Instance(series=series, site=site, sop_uid=f"2.25.3{i:03}", sop_class_uid="1.2",
                 storage_key=f"k/3{i}", rows=1, columns=1)
        for i in range(150)
    ]  # fmt: skip
    services._INSERT_INSTANCES.insert(lots)  # in statements of at most 64 rows
    assert Instance.objects.filter(sop_uid__startswith="2.25.3").count() == 150
    sizes = {rows for _, _, rows in services._INSERT_INSTANCES._sql}
    assert {1, 5} < sizes and max(sizes) <= 64  # one statement per row count, none longer
    events = audit_record(
        user=user,
        action=AuditAction.CREATE,
        targets=[AuditTarget("instance", str(stored.pk), site.pk, "2.25.11")] * 2,
    )
    assert [e.pk for e in events] == [None, None]
    written = list(AuditEvent.objects.filter(object_id=str(stored.pk)).order_by("id"))
    assert len(written) == 2 and written[0].pk < written[1].pk
    assert written[0].roles == "operator,radiologist" and written[0].at >= before
    ran.append("insert")

    # What the ORM would transform is refused; so is a value of another type.
    contains = PreparedQuery(
        lambda text: Site.objects.filter(name__icontains=text).values_list("id"), str
    )
    with pytest.raises(ImproperlyConfigured, match="did not reach its SQL unchanged"):
        contains.rows("A")
    with pytest.raises(ImproperlyConfigured, match="values_list"):
        PreparedQuery(lambda pk: Site.objects.filter(pk=pk), int).rows(1)
    by_slug = PreparedQuery(lambda s: Site.objects.filter(slug=s).values_list("name"), str)
    assert by_slug.rows("prepared-b") == [("Prepared B",)]
    with pytest.raises(TypeError):
        by_slug.rows(7)
    with pytest.raises(TypeError):
        by_slug.rows()
    with pytest.raises(ImproperlyConfigured):
        PreparedUpdate(
            lambda pk: (Series.objects.filter(pk=pk), {"instance_count": F("instance_count")}),
            float,
        ).run(1.0)
    ran.append("refusals")
    return ran


@pytest.mark.django_db
def test_prepared_statements_match_the_orm_on_postgresql() -> None:
    from django.db import connection

    assert connection.vendor == "postgresql"
    assert check_against_the_orm() == ["token", "sender", "series", "update", "insert", "refusals"]


def test_prepared_statements_match_the_orm_on_sqlite(tmp_path: Path) -> None:
    script = (
        "from django.db import connection\n"
        "assert connection.vendor == 'sqlite', connection.vendor\n"
        "from tests.backend.test_prepared import check_against_the_orm\n"
        "print(','.join(check_against_the_orm()))\n"
    )
    out = run_embedded(tmp_path, script)
    assert out.split() == ["token,sender,series,update,insert,refusals"]
