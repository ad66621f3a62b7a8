"""A database error raised inside a transaction and handled does not keep the request it
happened in alive. Django keeps such an error on its connection (``rollback_exc``) for good,
and the error's traceback holds the frames it went through with their locals: after a
``get_or_create`` lost a race to a concurrent sender of the same series, a whole STOW-RS
request, its 20 MB body included, stayed in the web process until the thread's next error."""

from __future__ import annotations

import gc
import weakref

import pytest
from django.core.signals import request_finished
from django.db import IntegrityError, close_old_connections, connection, transaction

from backend.accounts.models import Site
from backend.ingest.services import series_ingest

pytestmark = pytest.mark.django_db


class Payload:
    """Stands for a request's body: alive while a frame that holds it is."""


def _lose_a_race(site: Site) -> weakref.ref[Payload]:
    payload = Payload()  # a local of the frame the error goes through
    assert payload is not None
    try:
        with transaction.atomic():
            Site.objects.create(name="Twin", slug=site.slug)  # the unique slug is taken
    except IntegrityError:
        pass  # handled, as get_or_create handles a lost race
    return weakref.ref(payload)


@pytest.fixture
def collector_off():
    """Only reference counting: what is freed is freed at once, not at a collection."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_django_keeps_a_handled_error_and_with_it_the_frames_locals(site_a, collector_off):
    """What the fix is for (Django's behaviour, checked so the tests below cannot pass
    vacuously): without it the payload outlives its frame through the connection."""
    payload = _lose_a_race(site_a)
    assert connection.rollback_exc is not None
    assert payload() is not None


def _finish_request() -> None:
    """``request_finished`` as a server sends it, without Django's ``close_old_connections``
    (as Django's test client does: inside the test's transaction it would close the
    connection and mark the transaction for rollback)."""
    request_finished.disconnect(close_old_connections)
    try:
        request_finished.send(sender=None)
    finally:
        request_finished.connect(close_old_connections)


def test_the_end_of_a_request_lets_go_of_a_handled_error(site_a, collector_off):
    payload = _lose_a_race(site_a)
    _finish_request()
    assert connection.rollback_exc is None
    assert payload() is None  # freed by reference counting: no cycle left for the collector


def test_series_ingest_lets_go_of_a_handled_error(site_a, collector_off):
    """The C-STORE and Orthanc processes serve no requests: ``series_ingest`` itself forgets."""
    payload = _lose_a_race(site_a)
    series_ingest(site=site_a, files=[], source="stow")
    assert payload() is None


def test_an_error_the_transaction_still_rolls_back_for_is_kept(site_a):
    """Inside a transaction marked for rollback the error is what Django will report: kept."""
    with transaction.atomic():
        try:
            Site.objects.create(name="Twin", slug=site_a.slug)
        except IntegrityError:
            _finish_request()
            assert connection.needs_rollback and connection.rollback_exc is not None
            transaction.set_rollback(True)
