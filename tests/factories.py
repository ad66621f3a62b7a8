"""factory_boy factories for the platform's data."""

from __future__ import annotations

import factory

from backend.accounts.models import Membership, Role, Site, User
from backend.studies.models import Instance, Series, Study


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    name = factory.Sequence(lambda n: f"Hospital {n}")
    slug = factory.Sequence(lambda n: f"hospital-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    site = factory.SubFactory(SiteFactory)
    role = Role.RADIOLOGIST


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study

    site = factory.SubFactory(SiteFactory)
    study_uid = factory.Sequence(lambda n: f"2.25.{1000 + n}")
    description = "MR BRAIN"


class SeriesFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Series

    study = factory.SubFactory(StudyFactory)
    site = factory.SelfAttribute("study.site")
    series_uid = factory.Sequence(lambda n: f"2.25.{5000 + n}")
    series_number = factory.Sequence(lambda n: n)
    description = "T2 TSE AX"
    protocol = "t2_tse_ax"


class InstanceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Instance

    series = factory.SubFactory(SeriesFactory)
    site = factory.SelfAttribute("series.site")
    sop_uid = factory.Sequence(lambda n: f"2.25.{90000 + n}")
    sop_class_uid = "1.2.840.10008.5.1.4.1.1.4"
    instance_number = factory.Sequence(lambda n: n)
    storage_key = factory.Sequence(lambda n: f"instances/{n}.dcm")
    rows = 384
    columns = 512
    field_strength_t = 3.0
    pixel_bandwidth_hz = 130.0
    phase_encode_direction = "ROW"
