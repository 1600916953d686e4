"""The site's long-lived worker: its stdin line protocol, its app binding and approval per task (real FABs built
with Flower's builder, installed and loaded by Flower), and the SuperExec's handling of a worker that dies."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.app import Message, RecordDict
from flwr.cli.build import build_fab_from_disk
from flwr.clientapp import ClientApp

from fedfusion.deployment.site.app_approval import approve
from fedfusion.deployment.site.site_exec import SiteWorkers
from fedfusion.deployment.site.site_worker import SiteWorker, TaskLine, parse_task_line
from fedfusion.errors import AppNotApprovedError, ProtocolError
from fedfusion.flower_compat import AcquiredTask, TaskInput, set_task_identity
from fedfusion.study.config import StudyConfig
from fedfusion.study.flower_app import write_flower_app
from fedfusion.study.run_config import StudyRun


def test_a_task_line_carries_token_task_and_acquired_time() -> None:
    line = TaskLine(token="tok-3_x", task_id=42, acquired=1764640000.12345)
    assert line.encode() == b"tok-3_x 42 1764640000.123\n"
    assert parse_task_line(line.encode().decode()) == TaskLine("tok-3_x", 42, 1764640000.123)
    for bad in ("", "secret-token 42", "secret-token x 1.0", "secret-token 1 2 3", "secret-token 1 now"):
        with pytest.raises(ProtocolError, match="a task line must be 'TOKEN TASK_ID ACQUIRED_EPOCH'") as caught:
            parse_task_line(bad)
        assert "secret-token" not in str(caught.value)  # a token never reaches a log


def _fab(tmp_path: Path, rounds: int) -> bytes:
    return build_fab_from_disk(write_flower_app(StudyRun.of(StudyConfig(num_server_rounds=rounds)),
                                                tmp_path / f"app-{rounds}"))


def _task(fab: bytes) -> TaskInput:
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        manifest = tomllib.loads(archive.read("pyproject.toml").decode())
    fab_id = f"{manifest['tool']['flwr']['app']['publisher']}/{manifest['project']['name']}"
    set_task_identity(task_id=1, run_id=7, node_id=1)  # as pull_task_input sets it; a Message needs it
    return TaskInput(message=Message(RecordDict(), dst_node_id=1, message_type="train"), context=None,  # type: ignore[arg-type]
                     fab_id=fab_id, fab_version=manifest["project"]["version"],
                     fab_hash=hashlib.sha256(fab).hexdigest(), fab=fab)


def test_a_worker_runs_one_approved_app_installed_once_and_applies_a_revocation_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    apps = tmp_path / "flwr-home" / "apps"
    allow_list = tmp_path / "approved-apps.txt"
    first, second, unapproved = _fab(tmp_path, 2), _fab(tmp_path, 3), _fab(tmp_path, 4)
    for fab in (first, second):
        approve(allow_list, hashlib.sha256(fab).hexdigest())
    worker = SiteWorker("127.0.0.1:1", allow_list, "site-a", run_id=7)

    unapproved_hash = hashlib.sha256(unapproved).hexdigest()
    with caplog.at_level(logging.INFO, "fedfusion.site"), \
            pytest.raises(AppNotApprovedError, match=f"site site-a has not approved app sha256:{unapproved_hash}"):
        worker.client_app(_task(unapproved))
    assert f"fedfusion site approve {unapproved_hash}" in caplog.text and not apps.exists()  # never installed

    app = worker.client_app(_task(first))
    assert isinstance(app, ClientApp) and worker.app_hash == hashlib.sha256(first).hexdigest()
    installed = sorted(p.name for p in apps.iterdir())
    assert len(installed) == 1
    assert worker.client_app(_task(first)) is app  # loaded once, kept

    second_hash = hashlib.sha256(second).hexdigest()
    with pytest.raises(ProtocolError, match=f"run 7 runs app sha256:{worker.app_hash}, not sha256:{second_hash}"):
        worker.client_app(_task(second))  # approved, but not this run's app: never installed
    assert sorted(p.name for p in apps.iterdir()) == installed

    allow_list.write_text(f"{second_hash}\n")  # the admin revokes the first app while the run goes on
    with pytest.raises(AppNotApprovedError, match=f"has not approved app sha256:{worker.app_hash}"):
        worker.client_app(_task(first))
    allow_list.write_text("not a hash\n")
    with pytest.raises(AppNotApprovedError, match="site site-a cannot read its allow-list; every app is refused"):
        worker.client_app(_task(first))


def test_a_killed_worker_is_logged_and_replaced_and_all_are_stopped_by_pid(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    workers = SiteWorkers("127.0.0.1:1", tmp_path / "approved-apps.txt", "site-a")  # no SuperNode: tasks never end
    try:
        with caplog.at_level(logging.INFO, "fedfusion.site"):
            workers.hand(AcquiredTask(task_id=1, run_id=5, token="t1"), 1.0)
            first = workers.workers[5].process
            workers.hand(AcquiredTask(task_id=2, run_id=5, token="t2"), 2.0)
            assert workers.workers[5].process is first  # one worker per run
            workers.hand(AcquiredTask(task_id=3, run_id=6, token="t3"), 3.0)
            assert workers.workers[6].process.pid != first.pid
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            workers.tend()
            assert 5 not in workers.workers
            assert f"run 5: its site worker (pid {first.pid}) exited with code -9" in caplog.text
            workers.hand(AcquiredTask(task_id=4, run_id=5, token="t4"), 4.0)
            replacement = workers.workers[5].process
            assert replacement.pid != first.pid and replacement.poll() is None
    finally:
        running = [worker.process for worker in workers.workers.values()]
        workers.stop_all()
    assert running and all(process.returncode is not None for process in running)


def test_an_idle_worker_is_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    workers = SiteWorkers("127.0.0.1:1", tmp_path / "approved-apps.txt", "site-a", idle_timeout_s=0.0)
    try:
        workers.hand(AcquiredTask(task_id=1, run_id=5, token="t1"), 1.0)
        process = workers.workers[5].process
        with caplog.at_level(logging.INFO, "fedfusion.site"):
            workers.tend()
        assert not workers.workers and process.returncode is not None
        assert f"run 5: no task for 0 s, stopping its site worker (pid {process.pid})" in caplog.text
    finally:
        workers.stop_all()
