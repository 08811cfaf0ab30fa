"""The crash boundary shared by the daemon's fetch workers and the worker processes."""

from __future__ import annotations

import pytest

from mirrord.core.errors import InternalError, StoreError
from mirrord.core.model import PackageRef
from mirrord.fetch.download import crash_boundary
from mirrord.fetch.wire import Log, Message
from mirrord.fetch.worker import WireLog
from tests.helpers import LogCapture

REF = PackageRef("busybox-1.36.1-r29.apk", "Q1abc=", 1234)


def test_a_bug_costs_this_package_as_an_internal_error() -> None:
    logs = LogCapture()
    with pytest.raises(InternalError) as caught, crash_boundary(REF, logs.logger()):
        raise KeyError("size")
    assert str(caught.value) == "busybox-1.36.1-r29.apk: KeyError('size')"
    (record,) = logs.events("fetch.package.crashed")
    assert record["package"] == REF.filename


def test_a_mirrord_error_passes_unchanged_and_unlogged() -> None:
    logs = LogCapture()
    error = StoreError("/srv/mirrord/objects", "disk full")
    with pytest.raises(StoreError) as caught, crash_boundary(REF, logs.logger()):
        raise error
    assert caught.value is error
    assert logs.events("fetch.package.crashed") == []


def test_in_a_worker_process_the_crash_goes_to_the_daemon_with_its_traceback() -> None:
    sent: list[Message] = []
    with pytest.raises(InternalError), crash_boundary(REF, WireLog(sent.append, "warning")):
        raise KeyError("size")
    WireLog(sent.append, "warning").debug("fetch.package.retry", attempt=1)  # below the level
    (log,) = sent
    assert isinstance(log, Log) and (log.level, log.event) == ("error", "fetch.package.crashed")
    assert log.fields["package"] == REF.filename
    assert "Traceback" in log.fields["exception"] and "KeyError: 'size'" in log.fields["exception"]
