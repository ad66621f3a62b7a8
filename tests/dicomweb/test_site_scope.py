"""Every DICOMweb read route, from the route table: the site's own user gets the answer, another
site's user a 404 (or an empty search), as for the REST API (tests/backend/test_site_isolation.py
walks only api/ routes; a new DICOMweb route cannot slip past this one either)."""

from __future__ import annotations

import pytest
from django.urls import URLResolver, get_resolver, reverse

from backend.ingest.services import series_ingest
from tests.deid.builders import mr_dataset, to_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scratch_store")]

SEARCHES = {"dicomweb-studies", "qido-all-series", "qido-all-instances"}
"""Searches over the caller's sites: another site's user finds nothing (200, [])."""
# ``stow-study`` is read here by its GET (WADO-RS retrieve of the study); its POST, STOW-RS into
# the study, stores into the sender's own site (tests/dicomweb/test_stow.py).


def _dicomweb_routes(patterns=None, prefix=""):
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _dicomweb_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif pattern.name and (prefix + str(pattern.pattern)).startswith("dicomweb/"):
            yield pattern.name, pattern


ROUTES = sorted({name for name, _ in _dicomweb_routes()})


def test_the_route_table_is_the_one_tested_here():
    assert len(ROUTES) == 17 and SEARCHES <= set(ROUTES)


@pytest.fixture
def stored(site_a):
    [outcome] = series_ingest(site=site_a, files=[to_bytes(mr_dataset(1))], source="upload")
    assert outcome.status == "accepted"
    return outcome


def _url(name: str, stored) -> str:
    """The route's URL for the stored instance (its UIDs as the route takes them)."""
    converters = dict(_dicomweb_routes())[name].pattern.converters
    values = {
        "study_uid": stored.study_uid,
        "series_uid": stored.series_uid,
        "sop_uid": stored.sop_uid,
        "frames": "1",
    }
    return reverse(name, kwargs={k: v for k, v in values.items() if k in converters})


@pytest.mark.parametrize("name", ROUTES)
def test_the_sites_user_gets_it_and_another_sites_user_does_not(
    api, radiologist_a, radiologist_b, stored, name
):
    url = _url(name, stored)
    ours = api.as_(radiologist_a).get(url, HTTP_ACCEPT="*/*")
    assert ours.status_code == 200, (url, ours.content[:200])
    theirs = api.as_(radiologist_b).get(url, HTTP_ACCEPT="*/*")
    if name in SEARCHES:
        assert (theirs.status_code, theirs.json()) == (200, [])
        assert ours.json(), url
    else:
        assert theirs.status_code == 404, url
        assert stored.study_uid not in theirs.content.decode(errors="replace")
