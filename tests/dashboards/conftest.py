"""Fixtures of the dashboard tests: a model version, scanners and scored series."""

from __future__ import annotations

import itertools
from functools import partial

import pytest

from backend.scoring.models import ModelVersion
from backend.studies.models import Scanner
from tests.dashboards.factories import scored_series_create

_counter = itertools.count()


@pytest.fixture
def model_version(db):
    return ModelVersion.objects.create(
        name="test", version="1", sha256="d" * 64, weights_key="w", classes=[]
    )


@pytest.fixture
def make_scanner():
    def make(site, label: str) -> Scanner:
        return Scanner.objects.create(site=site, pseudonym=f"p{next(_counter)}", label=label)

    return make


@pytest.fixture
def make_scored(model_version):
    """``make_scored(site=..., scanner=..., week=0, ...)`` -> a scored Series."""
    return partial(scored_series_create, model_version=model_version)


@pytest.fixture(autouse=True)
def _local_webhooks_allowed(settings):
    """The webhook servers of these tests listen on 127.0.0.1, which is refused unless listed."""
    settings.ARTISCAN_WEBHOOK_ALLOW = ["127.0.0.1"]
