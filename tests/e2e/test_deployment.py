"""End to end on loopback: a real coordinator (`fedfusion coordinator run`: SuperLink + Fleet gateway) and three
real site daemons (`fedfusion site run`: SuperNode + gated app launcher), each a separate process, with TLS and
SuperNode authentication; a 2-round study of the fusion model on generated site data; and the holes closed
around Flower: an unregistered key, an outsider registering or submitting, plaintext, an unapproved app, a
revoked site. Every server binds to 127.0.0.1; every process is stopped by PID and /proc is checked afterwards.
Slow: deselect with -m "not slow"."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.runtime import RuntimeHttpClient
from process_scan import processes_with_marker

from fedfusion.data.synthetic import generate_cohort
from fedfusion.deployment.coordinator.state import DAEMON_FILE
from fedfusion.deployment.coordinator.superlink_control import SuperLinkControl, pem_of
from fedfusion.deployment.processes import descendants
from fedfusion.deployment.site.app_approval import APPROVED_APPS_FILE
from fedfusion.flower_compat import SUPERNODE_ID_LOG_TEXT
from fedfusion.privacy.ledger import LedgerRound, PrivacyLedger, ledgers_in
from fedfusion.privacy.site_policy import POLICY_FILE_NAME
from fedfusion.provisioning.consortium import init_consortium
from fedfusion.provisioning.site_keys import keygen

pytestmark = pytest.mark.slow
SITES = ("site-a", "site-b", "site-c")
START_TIMEOUT_S = 120.0
STUDY = ["--set", "hidden-dim=8", "--set", "local-epochs=1", "--set", "batch-size=4", "--set", "tiles-per-patient=4",
         "--set", "noise-multiplier=1.0"]


def _entries(ledger: PrivacyLedger, study: str, server_round: int) -> list[LedgerRound]:
    """The ledger's entries of one study round (more than one when it was charged again)."""
    return [r for r in ledger.rounds() if (r.study_id, r.server_round) == (study, server_round)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fedfusion(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedfusion.cli", *args]


@dataclass
class Deployment:
    """The running coordinator and sites of the module, and their folders."""

    work: Path
    env: dict[str, str]
    marker: str
    consortium: Path
    coordinator_state: Path
    gateway_port: int
    coordinator: subprocess.Popen[bytes]
    sites: dict[str, subprocess.Popen[bytes]]
    cohort: Path
    study_hash: str
    runtime_ports: dict[str, int]
    superlink_port: int = 0
    """The coordinator's SuperLink port (kept across its restarts)."""
    stranger: subprocess.Popen[bytes] | None = None
    """A site daemon with a key the coordinator never registered, started with the others."""

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run a fedfusion command to completion."""
        return subprocess.run(_fedfusion(*args), env=self.env, cwd=self.work, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a fedfusion daemon in its own process group, output to WORK/NAME.out."""
        with (self.work / f"{name}.out").open("ab") as out:
            return subprocess.Popen(_fedfusion(*args), env=self.env, cwd=self.work, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start_coordinator(self) -> None:
        """Start `fedfusion coordinator run` on this deployment's state folder and wait until it serves."""
        self.superlink_port = self.superlink_port or _free_port()
        self.coordinator = self.start("coordinator", "coordinator", "run", "--consortium-dir", str(self.consortium),
                                      "--state-dir", str(self.coordinator_state), "--host", "127.0.0.1",
                                      "--superlink-port", str(self.superlink_port))
        process = self.coordinator
        daemon_file = self.coordinator_state / DAEMON_FILE
        _wait_for(lambda: (daemon_file.is_file() and json.loads(daemon_file.read_text())["pid"] == process.pid)
                  or process.poll() is not None, "the coordinator")
        assert process.poll() is None, (self.work / "coordinator.out").read_text()

    def site_args(self, site: str, bundle: Path | None = None, runtime_port: int | None = None) -> list[str]:
        """`fedfusion site run` arguments for a site (its own bundle unless another is given; a free runtime port
        unless one is given)."""
        state = self.work / "sites" / site
        self.runtime_ports[site] = runtime_port or _free_port()
        return ["site", "run", str(bundle or self.consortium / "sites" / site), "--state-dir", str(state),
                "--data-dir", str(self.cohort / site),
                "--cache-dir", str(state / "cache"), "--ledger-dir", str(state / "ledger"), "--device", "cpu",
                "--runtime-port", str(self.runtime_ports[site]), "--superlink", f"127.0.0.1:{self.gateway_port}"]

    def control(self) -> SuperLinkControl:
        """The operator's loopback Control API client."""
        info = json.loads((self.coordinator_state / DAEMON_FILE).read_text())
        return SuperLinkControl(info["superlink_address"], Path(info["loopback_ca_file"]))


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM a daemon by PID and wait; SIGKILL its group if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return int(process.returncode)



def _wait_for(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Coordinator + 3 site daemons on loopback, the study prepared and approved at every site, and every site's
    slide features prepared (`fedfusion site prepare` into the daemon's cache folder)."""
    work = tmp_path_factory.mktemp("deploy")
    cohort = generate_cohort(work / "cohort", num_sites=3, seed=3, patients_per_site=[24, 20, 20],
                             slide_size_px=1024)
    for site in SITES:  # 4-6 held-out patients each: the default policy's min-eval-patients (20) would refuse
        (cohort / site / POLICY_FILE_NAME).write_text("min-eval-patients = 1\n")
    gateway_port = _free_port()
    consortium = work / "consortium"
    init_consortium(consortium, "coordinator", ["127.0.0.1", "localhost"], list(SITES), port=gateway_port)
    marker = uuid.uuid4().hex
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "FEDFUSION_TEST_MARKER": marker, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FLWR_HOME": str(work / "operator-flwr-home")}
    state = work / "coordinator"
    dep = Deployment(work, env, marker, consortium, state, gateway_port, None, {}, cohort, "", {})  # type: ignore[arg-type]
    try:
        dep.start_coordinator()
        prepared = dep.run("study", "prepare", "--state-dir", str(state), "--study-id", "s1", "--rounds", "2", *STUDY)
        assert prepared.returncode == 0, prepared.stderr
        dep.study_hash = prepared.stdout.split("app sha256 ")[1].split()[0]
        for site in SITES:
            approved = dep.run("site", "approve", dep.study_hash, "--state-dir", str(work / "sites" / site))
            assert approved.returncode == 0, approved.stderr
            prepared_site = dep.run("site", "prepare", str(cohort / site), "--cache-dir",
                                    str(work / "sites" / site / "cache"), "--device", "cpu")
            assert prepared_site.returncode == 0 and "OK: features of" in prepared_site.stdout, prepared_site.stdout
            dep.sites[site] = dep.start(site, *dep.site_args(site))
        stranger_bundle = work / "stranger-bundle"
        shutil.copytree(consortium / "sites" / "site-a", stranger_bundle)
        for key_file in ("supernode.key", "supernode.pub"):
            (stranger_bundle / key_file).unlink()
        keygen(stranger_bundle)  # a fresh key pair the coordinator never registered
        dep.stranger = dep.start("stranger", *dep.site_args("stranger", stranger_bundle))
        control = dep.control()
        _wait_for(lambda: sum(n.status == "online" for n in control.nodes()) == len(SITES), "3 sites online")
        control.close()
        yield dep
    finally:
        started = [p for p in (dep.coordinator, *dep.sites.values(), dep.stranger) if p is not None]
        codes = {process.pid: _stop(process) for process in reversed(started)}
        leftovers = processes_with_marker(marker)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"processes left running: {leftovers}"
        for name, process in (("the coordinator", dep.coordinator), ("site-a's daemon", dep.sites.get("site-a"))):
            assert process is None or codes[process.pid] == 0, f"{name} did not stop cleanly on SIGTERM"


def test_plaintext_connection_is_refused(deployment: Deployment) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", deployment.gateway_port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/health")
        plain.getresponse()
    plain.close()


def test_site_check_verifies_certificates_reachability_and_clock(deployment: Deployment) -> None:
    bundle = deployment.consortium / "sites" / "site-a"
    ok = deployment.run("site", "check", "--bundle", str(bundle), "--superlink",
                        f"127.0.0.1:{deployment.gateway_port}")
    assert ok.returncode == 0, ok.stdout
    assert "certificate verified by the bundle's CA" in ok.stdout and "clock: this site's clock is" in ok.stdout
    init_consortium(deployment.work / "other-consortium", "coordinator", ["127.0.0.1"], ["site-x"])
    wrong_ca = deployment.run("site", "check", "--bundle", str(deployment.work / "other-consortium" / "sites" /
                                                                 "site-x"),
                              "--superlink", f"127.0.0.1:{deployment.gateway_port}")
    assert wrong_ca.returncode == 1 and "not valid for this address under the bundle's CA" in wrong_ca.stdout


def test_outsider_can_neither_register_a_key_nor_submit_a_run(deployment: Deployment, tmp_path: Path) -> None:
    home = tmp_path / "outsider-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink.outsider]\naddress = "127.0.0.1:{deployment.gateway_port}"\n'
        f'root-certificates = "{deployment.consortium / "ca" / "ca.crt"}"\n')
    keygen(tmp_path / "outsider-key")
    env = {**deployment.env, "FLWR_HOME": str(home)}
    flwr = str(Path(sys.executable).parent / "flwr")
    register = subprocess.run([flwr, "supernode", "register", str(tmp_path / "outsider-key" / "supernode.pub"),
                               "outsider"], env=env, capture_output=True, text=True, timeout=120)
    assert register.returncode != 0 and "403" in register.stdout + register.stderr
    app = deployment.coordinator_state / "studies" / "s1" / "app"
    submit = subprocess.run([flwr, "run", str(app), "outsider"], env=env, capture_output=True, text=True, timeout=120)
    assert submit.returncode != 0 and "403" in submit.stdout + submit.stderr
    control = deployment.control()
    try:
        assert {node.name for node in control.nodes()} == set(SITES)
    finally:
        control.close()


def test_only_the_site_launcher_can_take_a_sites_tasks(deployment: Deployment) -> None:
    client = RuntimeHttpClient.from_server_address(
        server_address=f"127.0.0.1:{deployment.runtime_ports['site-a']}", insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")])
    try:
        with pytest.raises(Exception, match=r"(?i)401|403|auth"):
            client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
    finally:
        client.close()


def test_site_with_an_unregistered_key_is_refused(deployment: Deployment) -> None:
    assert deployment.stranger is not None
    code = deployment.stranger.wait(timeout=START_TIMEOUT_S)
    assert code != 0
    assert "Failed to activate" in (deployment.work / "sites" / "stranger" / "logs" / "supernode.log").read_text()


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _sigkill_and_wait_for_the_tree(process: subprocess.Popen[bytes], what: str) -> list[int]:
    """SIGKILL only the daemon ``process`` (no clean-up code runs); its whole tree must be gone within 10 s."""
    tree = [process.pid, *descendants(process.pid)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = time.monotonic()
    deadline = killed_at + 10
    while (left := [pid for pid in tree if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"{what}: processes of its tree still running 10 s after SIGKILL: {left}"
    print(f"{what}: {len(tree)} processes gone {time.monotonic() - killed_at:.1f} s after SIGKILL")
    return tree


def _restart_site_and_wait_online(deployment: Deployment, site: str, name: str) -> str:
    """Start ``site``'s daemon again on its state folder and runtime port; wait until its new SuperNode is activated
    (Flower logs the node id); return the daemon's log."""
    state = deployment.work / "sites" / site
    supernode_log = state / "logs" / "supernode.log"
    activations = supernode_log.read_text().count(SUPERNODE_ID_LOG_TEXT)
    started = time.monotonic()
    deployment.sites[site] = restarted = deployment.start(
        name, *deployment.site_args(site, runtime_port=deployment.runtime_ports[site]))
    _wait_for(lambda: supernode_log.read_text().count(SUPERNODE_ID_LOG_TEXT) > activations
              or restarted.poll() is not None, f"{name}'s SuperNode to activate", 60)
    site_log = (state / "logs" / "site.log").read_text()
    assert restarted.poll() is None, site_log[-3000:] + supernode_log.read_text()[-3000:]
    print(f"{name}: online {time.monotonic() - started:.1f} s after its start")
    return site_log


def test_killed_site_daemon_leaves_nothing_and_restarts_at_once(deployment: Deployment) -> None:
    """kill -9 of `fedfusion site run`: its tree is gone within 10 s, and a restart on the same state folder and
    runtime port comes online at once (before, the orphaned SuperNode held the port). Then the whole tree killed at
    once (as systemd or the OOM killer may): the restart marks the old node offline at the coordinator, which would
    otherwise refuse the key for up to a minute (Flower's 305)."""
    site = "site-a"
    tree = _sigkill_and_wait_for_the_tree(deployment.sites[site], "site-a's daemon")
    assert len(tree) >= 5  # the daemon, two supervisors, the SuperNode, the launcher
    site_log = _restart_site_and_wait_online(deployment, site, "site-a-restarted")
    assert "the previous site daemon of site-a on" in site_log
    assert "did not stop cleanly; none of its processes is left" in site_log
    assert "of the previous daemon is already offline" in site_log  # its SuperNode said goodbye on SIGTERM

    daemon = deployment.sites[site]
    tree = [daemon.pid, *descendants(daemon.pid)]
    for pid in reversed(tree):  # leaves first: no process runs any clean-up, the SuperNode stays online there
        os.kill(pid, signal.SIGKILL)
    daemon.wait(timeout=30)
    site_log = _restart_site_and_wait_online(deployment, site, "site-a-restarted-again")
    assert "of the previous daemon marked offline at the coordinator" in site_log
    control = deployment.control()
    try:
        _wait_for(lambda: {n.name: n.status for n in control.nodes()}.get(site) == "online", "site-a online", 30)
    finally:
        control.close()
    # a second daemon on the same runtime port is refused, with the port named, before anything starts
    clash = deployment.run(*deployment.site_args("clash", deployment.consortium / "sites" / "site-b",
                                                 runtime_port=deployment.runtime_ports[site]), timeout=120)
    assert clash.returncode == 2
    assert f"port 127.0.0.1:{deployment.runtime_ports[site]} is in use by another process (set by --runtime-port)" \
        in clash.stderr


def test_study_runs_on_three_site_daemons(deployment: Deployment) -> None:
    started = time.monotonic()
    result = deployment.run("study", "start", "--state-dir", str(deployment.coordinator_state), "--study-id", "s1")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    print(f"2-round deployed study: {time.monotonic() - started:.0f} s")
    study = json.loads((deployment.coordinator_state / "studies" / "s1" / "study.json").read_text())
    assert study["status"] == "finished" and study["fab_hash"] == deployment.study_hash
    results = Path(study["results_dir"])
    sites = pd.read_csv(results / "site_metrics.csv")
    assert set(sites["round"]) == {1, 2} and set(sites["site"]) == set(SITES)
    train = sites[sites["phase"] == "train"]
    assert (train["epsilon"] > 0).all()
    for site in SITES:  # each site kept its own privacy ledger, outside the coordinator's results
        assert any((deployment.work / "sites" / site / "ledger").iterdir())


def test_site_refuses_an_unapproved_app(deployment: Deployment) -> None:
    result = deployment.run("study", "start", "--state-dir", str(deployment.coordinator_state), "--study-id", "s2",
                            "--rounds", "1", "--set", "seed=7", *STUDY)
    study = json.loads((deployment.coordinator_state / "studies" / "s2" / "study.json").read_text())
    unapproved = study["fab_hash"]
    assert result.returncode == 1 and study["status"] == "failed"  # every site refused: nothing was trained
    assert unapproved != deployment.study_hash
    assert f"has not approved app sha256:{unapproved}" in result.stdout  # the operator sees the refusal
    for site in SITES:
        log = (deployment.work / "sites" / site / "logs" / "site-exec.log").read_text()
        assert f"REFUSED: site {site} has not approved app sha256:{unapproved}" in log
        assert f"fedfusion site approve {unapproved}" in log
        apps = deployment.work / "sites" / site / "flwr-home" / "apps"
        installed = [p.name for p in apps.iterdir()] if apps.exists() else []
        assert unapproved[:8] not in " ".join(installed)  # never installed
        assert APPROVED_APPS_FILE in log


def _completed_round(results: Path) -> int:
    try:
        return int(json.loads((results / "checkpoint" / "state.json").read_text())["completed_round"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_coordinator_restarts_and_resumes_the_study(deployment: Deployment) -> None:
    """SIGKILL the coordinator daemon (only it) after round 1 of 3: its SuperLink, SuperExec and ServerApp are gone
    within 10 s; a restart on the same state folder and ports resumes at round 2 with the same site daemons."""
    state = deployment.coordinator_state
    prepared = deployment.run("study", "prepare", "--state-dir", str(state), "--study-id", "s3", "--rounds", "3",
                              "--round-timeout", "240", *STUDY)  # a lost message fails the test in minutes
    assert prepared.returncode == 0, prepared.stderr
    fab_hash = prepared.stdout.split("app sha256 ")[1].split()[0]
    for site in SITES:
        assert deployment.run("site", "approve", fab_hash, "--state-dir",
                              str(deployment.work / "sites" / site)).returncode == 0
    site_pids = {site: process.pid for site, process in deployment.sites.items()}
    results, study_file = state / "studies" / "s3" / "results", state / "studies" / "s3" / "study.json"
    follower = deployment.start("follower-s3", "study", "start", "--state-dir", str(state), "--study-id", "s3")
    try:
        _wait_for(lambda: _completed_round(results) >= 1 or follower.poll() is not None, "round 1's checkpoint", 600)
        assert _completed_round(results) == 1, (deployment.work / "follower-s3.out").read_text()[-3000:]
        killed = _sigkill_and_wait_for_the_tree(deployment.coordinator, "the coordinator")
        assert len(killed) >= 5  # the daemon, its supervisor, the SuperLink, its SuperExec, the ServerApp
        # the operator's follower sees its run end with the coordinator and leaves the study to the restart
        assert follower.wait(timeout=120) == 1
        assert json.loads(study_file.read_text())["status"] == "running"
        assert "the coordinator stopped during the study" in (deployment.work / "follower-s3.out").read_text()

        # every site daemon notices the lost coordinator before it comes back (a fast restart could fall between
        # two SuperNode polls, and then there would be nothing to report)
        site_logs = [deployment.work / "sites" / site / "logs" / "site.log" for site in SITES]
        _wait_for(lambda: all("does not answer; the SuperNode keeps retrying" in log.read_text() for log in site_logs),
                  "every site to notice the coordinator is gone", 120)
        killed_at = time.monotonic()
        deployment.start_coordinator()  # same state folder: it resubmits s3 itself
        coordinator_log = state / "logs" / "coordinator.log"
        _wait_for(lambda: "resubmitted study s3 ended" in coordinator_log.read_text(), "s3 to end", 600)
        print(f"coordinator killed after round 1 of 3; restarted, resumed and finished in "
              f"{time.monotonic() - killed_at:.0f} s")
    finally:
        _stop(follower)
    study = json.loads(study_file.read_text())
    study_log = (state / "logs" / "study-s3.log").read_text()
    assert study["status"] == "finished", study_log[-4000:]
    assert study["submissions"] == 2 and study["fab_hash"] == fab_hash  # the same app: no new approval needed
    assert "resubmitting study s3 (interrupted)" in coordinator_log.read_text()
    assert "resubmitted study s3 ended: finished" in coordinator_log.read_text()
    assert "resuming study s3 at round 2 of 3" in study_log and "resuming study s3 at round 1" not in study_log
    rounds = pd.read_csv(results / "round_metrics.csv")
    for phase in ("train", "evaluate"):
        assert sorted(rounds[rounds["phase"] == phase]["round"]) == [1, 2, 3]
    assert (rounds[rounds["phase"] == "train"]["secure-aggregation-sites"] == len(SITES)).all()
    for site in SITES:  # each round's privacy charged once at every site, by daemons that never restarted
        ledgers = ledgers_in(deployment.work / "sites" / site / "ledger")
        assert len(ledgers) == 1
        assert [len(_entries(ledgers[0], "s3", r)) for r in (1, 2, 3)] == [1, 1, 1], site
        assert deployment.sites[site].poll() is None and deployment.sites[site].pid == site_pids[site]
        site_log = (deployment.work / "sites" / site / "logs" / "site.log").read_text()
        assert "does not answer; the SuperNode keeps retrying" in site_log
        assert "reconnected to the coordinator" in site_log
        log = (deployment.work / "sites" / site / "logs" / "site-exec.log").read_text()
        assert f"has not approved app sha256:{fab_hash}" not in log


def _site_workers(deployment: Deployment, site: str) -> set[int]:
    """PIDs of the site workers running under ``site``'s daemon."""
    found = set()
    for pid in descendants(deployment.sites[site].pid):
        try:
            if b"fedfusion.deployment.site.site_worker" in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    return found


def test_killed_site_worker_mid_round_is_replaced_and_each_round_charged_once(deployment: Deployment) -> None:
    """SIGKILL site-b's worker (only it) as soon as it has charged the round of a 1-round study, while it trains: the
    SuperNode answers that message with Flower's crash error once its token expires (a minute), the run's next task
    (the evaluation) starts a new worker, and the study finishes with the round charged once in every site's
    ledger."""
    state, site = deployment.coordinator_state, "site-b"
    prepared = deployment.run("study", "prepare", "--state-dir", str(state), "--study-id", "s4", "--rounds", "1",
                              "--round-timeout", "240", *STUDY)
    assert prepared.returncode == 0, prepared.stderr
    fab_hash = prepared.stdout.split("app sha256 ")[1].split()[0]
    for name in SITES:
        assert deployment.run("site", "approve", fab_hash, "--state-dir",
                              str(deployment.work / "sites" / name)).returncode == 0
    ledger_dir = deployment.work / "sites" / site / "ledger"
    earlier = _site_workers(deployment, site)  # idle workers of earlier studies' runs
    follower = deployment.start("follower-s4", "study", "start", "--state-dir", str(state), "--study-id", "s4")
    try:
        deadline = time.monotonic() + 600
        while not any(_entries(ledger, "s4", 1) for ledger in ledgers_in(ledger_dir)):
            assert follower.poll() is None and time.monotonic() < deadline, "site-b never charged round 1 of s4"
            time.sleep(0.05)
        [worker] = _site_workers(deployment, site) - earlier
        os.kill(worker, signal.SIGKILL)
        assert follower.wait(timeout=600) == 0, (deployment.work / "follower-s4.out").read_text()[-3000:]
    finally:
        _stop(follower)
    exec_log = (deployment.work / "sites" / site / "logs" / "site-exec.log").read_text()
    assert f"site worker (pid {worker}) exited with code -9" in exec_log
    assert len(_site_workers(deployment, site) - earlier) == 1  # its replacement, which evaluated
    results = Path(json.loads((state / "studies" / "s4" / "study.json").read_text())["results_dir"])
    sites = pd.read_csv(results / "site_metrics.csv")
    trained = set(sites[sites["phase"] == "train"]["site"])  # Flower's error reply is named by its node id
    assert site not in trained and set(SITES) - {site} <= trained  # left out of the round's aggregate
    assert site in set(sites[sites["phase"] == "evaluate"]["site"])
    for name in SITES:
        [ledger] = ledgers_in(deployment.work / "sites" / name / "ledger")
        assert len(_entries(ledger, "s4", 1)) == 1, name


def test_rotating_and_revoking_are_applied_by_the_running_coordinator(deployment: Deployment) -> None:
    rotated = deployment.run("provision", "rotate", str(deployment.consortium), "site-b")
    assert rotated.returncode == 0, rotated.stderr
    new_key = pem_of((deployment.consortium / "sites" / "site-b" / "supernode.pub").read_text(), "site-b")
    revoked = deployment.run("provision", "revoke", str(deployment.consortium), "site-c")
    assert revoked.returncode == 0, revoked.stderr
    control = deployment.control()
    try:
        _wait_for(lambda: {(n.name, n.public_key_pem == new_key) for n in control.nodes()}
                  == {("site-a", False), ("site-b", True)}, "site-b's new key only and no site-c", 30)
    finally:
        control.close()
    for site in ("site-b", "site-c"):  # their daemons still hold the old keys: refused, and they say so
        assert deployment.sites[site].wait(timeout=START_TIMEOUT_S) != 0
    assert deployment.sites["site-a"].poll() is None
