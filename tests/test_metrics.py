"""The Prometheus endpoint of a running daemon, checked by the real promtool."""

from __future__ import annotations

import subprocess

from mirrord.core.model import ArchKey
from mirrord.demo.origin import Fault
from mirrord.demo.repogen import simple_specs
from tests.daemon_harness import ctl, daemon_config, running_daemon, synced
from tests.helpers import REPO_ROOT, Mirror
from tests.prom import promtool, samples, scrape, value

KEY = ArchKey("v3.20", "main", "x86_64")
LABELS = {"branch": "v3.20", "repo": "main", "arch": "x86_64"}


async def test_a_running_daemon_exposes_valid_and_truthful_metrics(mirror: Mirror) -> None:
    specs = simple_specs("a", 7, payload=3000)
    mirror.tree.put(KEY, specs)
    victim = specs[0].filename
    mirror.origin.add_fault(f"{KEY}/{victim}", Fault.http(503), Fault.corrupt())
    async with running_daemon(mirror, daemon_config(mirror, KEY)) as daemon:
        await synced(daemon, 1)
        listen = daemon.config.metrics.listen
        text = await scrape(f"http://{listen}")

        check = subprocess.run(
            [promtool(), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        found = samples(text)
        total = sum(len(p.data) for p in mirror.tree.packages(KEY))
        assert value(found, "mirrord_published_packages", **LABELS) == 7
        assert value(found, "mirrord_published_bytes", **LABELS) == total
        assert value(found, "mirrord_fetched_files_total", **LABELS, outcome="stored") == 7
        assert value(found, "mirrord_fetched_bytes_total", **LABELS, outcome="received") >= total
        assert value(found, "mirrord_verification_failures_total", reason="datahash") == 1
        assert value(found, "mirrord_fetch_retries_total", reason="http_503") == 1
        assert value(found, "mirrord_fetch_retries_total", reason="verification") == 1
        assert value(found, "mirrord_mirror_lag_seconds", **LABELS) == 0
        assert value(found, "mirrord_arch_failing", **LABELS) == 0
        assert value(found, "mirrord_store_objects") == 8
        assert value(found, "mirrord_rate_limit_bytes_per_second") == float("inf")
        assert value(found, "mirrord_publish_duration_seconds_count") == 1
        assert value(found, "mirrord_sync_duration_seconds_count") == 1
        assert value(found, "mirrord_downloads_in_flight") == 0
        assert value(found, "mirrord_build_info", version="0.1.0") == 1
        assert value(found, "mirrord_log_lines_dropped_total") == 0
        # No fleet configured: no fleet metrics (an "etcd up" of 0 would page someone).
        assert [name for name, _ in found if name.startswith("mirrord_fleet")] == []
        origin_index = mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz"
        assert value(found, "mirrord_published_index_last_modified_seconds", **LABELS) == int(
            origin_index.stat().st_mtime
        )
        assert value(found, "mirrord_last_success_timestamp_seconds", **LABELS) > 0

        # A failing sync shows up at once.
        (mirror.tree.arch_dir(KEY) / "APKINDEX.tar.gz").write_bytes(b"not an index")
        mirror.tree.write_index(KEY, b"garbage")
        await ctl(daemon, "sync")
        await synced(daemon, 2)
        found = samples(await scrape(f"http://{listen}"))
        assert value(found, "mirrord_arch_failing", **LABELS) == 1
        assert value(found, "mirrord_verification_failures_total", reason="index_format") == 1
        assert value(found, "mirrord_mirror_lag_seconds", **LABELS) > 0


def test_alerting_rules_are_valid_and_fire_as_intended() -> None:
    rules = REPO_ROOT / "config" / "mirrord-alerts.yml"
    checked = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    defined = rules.read_text().count("- alert: ")
    assert f"{defined} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool(), "test", "rules", "mirrord-alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT / "tests",
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
