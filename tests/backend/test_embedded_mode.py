"""The embedded default: no server at all. SQLite, Celery over SQLite, the database channel layer.

`make demo` runs exactly this; here a real worker process picks up a task and an event crosses
from one process to another through the database channel layer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from tests.backend.embedded import ROOT, embedded_env, manage


def test_the_embedded_mode_runs_tasks_and_carries_events_between_processes(tmp_path):
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v0")
    out = manage(env, "demo_data", "--no-images")  # the demo images are tested on their own
    assert "radiologist" in out and "siteadmin" in out
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "backend.config", "worker", "-Q", "cpu,gpu",
         "-c", "1", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # A listener in a second process subscribes to the demo site's group...
        listener_code = textwrap.dedent(
            """
            import asyncio, django, sys
            django.setup()
            from channels.layers import get_channel_layer
            async def main():
                layer = get_channel_layer()
                channel = await layer.new_channel()
                await layer.group_add(sys.argv[1], channel)
                print("listening", flush=True)
                message = await asyncio.wait_for(layer.receive(channel), 60)
                print(message["event"]["kind"], message["event"]["data"]["n"], flush=True)
            asyncio.run(main())
            """
        )
        from_site = manage(
            env, "shell", "-v0", "-c",
            "from backend.accounts.models import Site; print(Site.objects.get(slug='demo').pk)",
        ).strip()  # fmt: skip
        listener = subprocess.Popen(
            [sys.executable, "-c", listener_code, f"site.{from_site}"],
            cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "backend.config.settings"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        # ...and a third process enqueues a task and publishes an event.
        manage(
            env, "shell", "-v0", "-c",
            textwrap.dedent(
                f"""
                from django.db import transaction
                from backend.realtime.services import event_publish
                from backend.studies.services import series_summary_enqueue
                from tests.factories import InstanceFactory, SeriesFactory
                from backend.accounts.models import Site
                series = SeriesFactory(study__site=Site.objects.get(pk={from_site}))
                InstanceFactory.create_batch(2, series=series)
                with transaction.atomic():
                    series_summary_enqueue(series_id=series.pk)
                event_publish(site_id={from_site}, kind="demo.event", data={{"n": 7}})
                """
            ),
        )  # fmt: skip
        out, err = listener.communicate(timeout=90)
        assert out.strip() == "demo.event 7", err
        deadline = time.monotonic() + 90
        done = ""
        while time.monotonic() < deadline:
            done = manage(
                env, "shell", "-v0", "-c",
                "from backend.studies.models import Series; "
                "print(list(Series.objects.exclude(description__endswith='(synthetic)')"
                ".values_list('instance_count', flat=True)))",
            ).strip()  # fmt: skip
            if done == "[2]":
                break
            time.sleep(1)
        assert done == "[2]"
    finally:
        worker.terminate()
        worker.wait(timeout=30)


PLANS = textwrap.dedent(
    """
    import django
    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from backend.accounts.models import Role
    from backend.accounts.services import site_create, user_create
    from backend.studies import selectors

    site = site_create(name="Plans", slug="plans")
    user = user_create(username="plans", password=None, memberships=[(site, Role.RADIOLOGIST)])
    lookups = {
        "instance": lambda: selectors.instance_by_uid(
            user=user, study_uid="1.2", series_uid="1.2.3", sop_uid="1.2.3.4"
        ),
        "series": lambda: selectors.series_by_uid(user=user, study_uid="1.2", series_uid="1.2.3"),
        "instances": lambda: list(
            selectors.instance_search(user=user, study_uid="1.2", series_uid="1.2.3")
        ),
        "qido-sop": lambda: list(selectors.instance_search(user=user, sop_uid="1.2.3.4")),
        "qido-series": lambda: list(selectors.series_search(user=user, series_uid="1.2.3")),
    }
    for name, lookup in lookups.items():
        with CaptureQueriesContext(connection) as queries:
            try:
                lookup()
            except selectors.NotInScope:
                pass
        # The caller's lookup, then (not found) the audit's lookup of the owner in any site.
        found = [q["sql"] for q in queries.captured_queries if "study_uid" in q["sql"]]
        for which, sql in zip(("", "-owner"), found):
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN QUERY PLAN " + sql)
                for row in cursor.fetchall():
                    print(name + which, "|", row[-1])
    """
)


def test_uid_lookups_walk_unique_indexes_not_a_whole_site(tmp_path):
    """SQLite keeps no statistics: constrained only on the object's own site, a WADO-RS frame's
    lookup walked every instance of the site (17 ms at 50,000). The plans now start from the
    study's (site, UID) index and go down one unique index per level; the audit's lookup of a
    UID the caller may not see, from the study's UID index; QIDO-RS by a SOP or series UID
    alone, from that UID's index."""
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v0")
    out = manage(env, "shell", "-v0", "-c", PLANS)
    plans: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, _, step = line.partition(" | ")
        plans.setdefault(name, []).append(step)
    assert set(plans) == {
        "instance",
        "series",
        "instances",
        "instance-owner",
        "series-owner",
        "qido-sop",
        "qido-series",
    }, out
    # QIDO-RS by a SOP or series UID alone (a viewer resolving a reference) walked every
    # instance or series of the caller's sites: now one UID index, then the site check.
    for name, table, index in (
        ("qido-sop", "studies_instance", "instance_sop_uid_site"),
        ("qido-series", "studies_series", "series_uid_site"),
    ):
        steps = plans.pop(name)
        assert any(s.startswith(f"SEARCH {table} USING INDEX {index} ") for s in steps), (
            name,
            steps,
        )
        assert not any(s.startswith("SCAN") for s in steps if "TEMP B-TREE" not in s), (
            name,
            steps,
        )
    # Not found: the audit names the owner of the same UIDs in any site, from the study's UID
    # down or from the object's own UID index (on a SOP or series UID alone without an index,
    # each 404 scanned the whole table).
    for name in ("instance-owner", "series-owner"):
        steps = plans.pop(name)
        assert steps[0].startswith(
            (
                "SEARCH studies_study USING INDEX study_uid ",
                "SEARCH studies_instance USING INDEX instance_sop_uid_site ",
                "SEARCH studies_series USING INDEX series_uid_site ",
            )
        ), (name, steps)
        assert not any(s.startswith("SCAN") for s in steps), (name, steps)
    for name, steps in plans.items():
        assert steps[0].startswith("SEARCH studies_study USING") and (
            "(site_id=? AND study_uid=?)" in steps[0]
        ), (name, steps)
        assert any(
            s.startswith("SEARCH studies_series USING") and "(study_id=? AND series_uid=?)" in s
            for s in steps
        ), (name, steps)
        assert not any("SCAN studies_instance" in s or "instance_site_id" in s for s in steps), (
            name,
            steps,
        )
    assert any("(series_id=? AND sop_uid=?)" in s for s in plans["instance"]), plans["instance"]
