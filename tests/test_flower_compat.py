"""Contract of the seam ``fedfusion.flower_compat`` with the installed Flower.

Each Flower internal the seam uses must exist with the attributes and the parameter names the seam passes: when a
Flower upgrade breaks one, a test here names it (instead of a site or a study failing at run time). The version
pin is checked too. Nothing here starts a process or a simulation.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import itertools
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedfusion import flower_compat
from fedfusion.errors import FedfusionError

SEAM_SOURCE = Path(flower_compat.__file__).read_text(encoding="utf-8")


def parameters(function: Callable[..., Any]) -> set[str]:
    return set(inspect.signature(function).parameters)


def flower(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


# ---- the version pin --------------------------------------------------------------------------------------------


def test_the_installed_flower_is_the_pinned_one() -> None:
    assert importlib.metadata.version("flwr") == flower_compat.PINNED_FLOWER_VERSION
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert f"flwr[simulation]=={flower_compat.PINNED_FLOWER_VERSION}" in pyproject
    flower_compat.check_flower_version(flower_compat.PINNED_FLOWER_VERSION)


@pytest.mark.parametrize("installed", ["1.42.0", "1.41.1", "1.40.0", "1.41.0rc1"])
def test_another_flower_version_is_refused_with_a_clear_message(installed: str) -> None:
    with pytest.raises(flower_compat.FlowerVersionError) as refused:
        flower_compat.check_flower_version(installed)
    message = str(refused.value)
    assert f"flwr {installed} is installed" in message
    assert f"Flower (flwr) {flower_compat.PINNED_FLOWER_VERSION}" in message
    assert "Flower internals" in message and "fedfusion.flower_compat" in message
    assert f"flwr=={flower_compat.PINNED_FLOWER_VERSION}" in message
    assert isinstance(refused.value, ImportError) and isinstance(refused.value, FedfusionError)


def test_importing_the_seam_under_another_flower_version_fails() -> None:
    """The check runs at import, before any Flower internal is imported (a fresh interpreter, version faked)."""
    code = ("import importlib.metadata as m; real = m.version; "
            "m.version = lambda name: '9.9.9' if name == 'flwr' else real(name); "
            "import fedfusion.flower_compat")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode != 0
    assert "FlowerVersionError" in result.stderr and "flwr 9.9.9 is installed" in result.stderr


# ---- logging --------------------------------------------------------------------------------------------------------


def test_flower_logger_is_the_flwr_logger_with_flowers_console_handler() -> None:
    assert flower_compat.FLOWER_LOGGER is logging.getLogger("flwr")
    assert flower_compat.FLOWER_LOGGER is flower("flwr.common.logger", "FLOWER_LOGGER")
    console = flower("flwr.supercore.logger", "ConsoleHandler")
    assert issubclass(console, logging.Handler)
    handlers = flower_compat.flower_console_handlers()
    assert handlers and all(isinstance(h, console) for h in handlers)


# ---- messages on the wire -------------------------------------------------------------------------------------------


def test_message_wire_round_trip() -> None:
    flower_compat.set_task_identity(task_id=1, run_id=7, node_id=1)
    message = Message(RecordDict({"config": ConfigRecord({"server-round": 3})}), 5, "train", group_id="1")
    payload = flower_compat.message_to_bytes(message)
    assert payload == flower("flwr.common.serde", "message_to_proto")(message).SerializeToString()
    rebuilt = flower_compat.message_from_bytes(payload)
    assert rebuilt.content["config"]["server-round"] == 3
    assert rebuilt.metadata.dst_node_id == 5 and rebuilt.metadata.message_type == "train"
    assert {"message"} <= parameters(flower("flwr.common.serde", "message_to_proto"))
    assert {"message_proto"} <= parameters(flower("flwr.common.serde", "message_from_proto"))


def test_recorddict_wire_round_trip_and_chunk_size() -> None:
    from flwr.app import Array, ArrayRecord, MetricRecord

    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))}),
                          "config": ConfigRecord({"key": b"\x01", "n": [1, 2]}), "metrics": MetricRecord({"x": 0.5})})
    payload = flower_compat.recorddict_to_bytes(content)
    assert payload == flower("flwr.common.serde", "recorddict_to_proto")(content).SerializeToString()
    rebuilt = flower_compat.recorddict_from_bytes(payload)
    assert list(rebuilt.keys()) == ["arrays", "config", "metrics"]
    assert rebuilt["arrays"]["w"].numpy().tobytes() == content["arrays"]["w"].numpy().tobytes()
    assert dict(rebuilt["config"]) == {"key": b"\x01", "n": [1, 2]} and dict(rebuilt["metrics"]) == {"x": 0.5}
    with pytest.raises(ValueError, match="not a serialized RecordDict"):
        flower_compat.recorddict_from_bytes(b"\xff\xff")
    # Flower cuts an Array into chunks of this size, each its own object (array_packing sizes its record by it)
    assert flower("flwr.common.constant", "FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE") == flower_compat.MAX_ARRAY_CHUNK_BYTES
    big = Array(np.zeros(flower_compat.MAX_ARRAY_CHUNK_BYTES + 1, dtype=np.uint8))
    assert len(big.children) == 2


# ---- run and task identity ------------------------------------------------------------------------------------------


def test_run_and_task_identity() -> None:
    run_class = flower("flwr.supercore.run", "Run")
    assert flower_compat.Run is run_class
    assert {"run_id"} <= parameters(run_class.create_empty)
    run = flower_compat.empty_run(41)
    assert isinstance(run, run_class) and run.run_id == 41
    for attribute in ("primary_task_id", "federation_id"):
        assert hasattr(run, attribute)
    identity = flower("flwr.supercore.task_identity", "TaskIdentity")
    flower_compat.set_task_identity(task_id=2, run_id=41, node_id=1)
    assert (identity.task_id, identity.run_id, identity.node_id) == (2, 41, 1)
    flower_compat.set_task_identity(task_id=1, run_id=7, node_id=1)


# ---- simulation engine ----------------------------------------------------------------------------------------------


def test_run_simulation_internals() -> None:
    run_simulation = flower("flwr.simulation.run_simulation", "_run_simulation")
    assert {"num_supernodes", "exit_event", "server_app_attr", "client_app_attr", "backend_name", "backend_config",
            "app_dir", "run", "server_app_context", "is_app"} <= parameters(run_simulation)
    assert flower("flwr.supercore.telemetry", "EventType").PYTHON_API_RUN_SIMULATION_LEAVE
    for name in ("RUN_ID_NUM_BYTES", "SUPERLINK_NODE_ID", "TASK_ID_NUM_BYTES"):
        assert isinstance(flower("flwr.common.constant", name), int)
    assert flower("flwr.supercore.constant", "NOOP_FEDERATION_ID") is not None
    generate = flower("flwr.server.superlink.linkstate.utils", "generate_rand_int_from_bytes")
    assert {"num_bytes"} <= parameters(generate)
    assert isinstance(generate(8), int)
    assert {"server_app_attr", "client_app_attr", "num_supernodes", "backend_config", "app_dir",
            "run_config"} == parameters(flower_compat.run_simulation_in_process)


# ---- the ClientApp process ------------------------------------------------------------------------------------------


def test_clientapp_task_internals() -> None:
    """The steps of Flower's ``run_clientapp`` that the site worker runs one task after another."""
    module = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    source = inspect.getsource(module.run_clientapp)
    for step in ("pull_task_input(client)", "install_from_fab(fab.content, skip_prompt=True)",
                 "get_load_client_app_fn(", "push_message(client, reply_message, context)", "push_task_output(",
                 "HeartbeatSender(make_task_heartbeat_fn_http(client))", "RuntimeTokenHttpInterceptor(token)",
                 "ErrorCode.CLIENT_APP_RAISED_EXCEPTION", "ErrorCode.LOAD_CLIENT_APP_EXCEPTION",
                 'str(type(ex)) + ":<\'" + str(ex) + "\'>"'):
        assert step in source, step
    pull_source = inspect.getsource(module.pull_task_input)  # the seam's pull_task_input does these steps
    for step in ("client.PullTaskInput(PullTaskInputRequest())", "TaskIdentity.task_id = res.task_id",
                 "TaskIdentity.run_id = res.run.run_id", "TaskIdentity.node_id = res.context.node_id",
                 "context_from_proto(res.context)", "run_from_proto(res.run)", "fab_from_proto(res.fab)",
                 "client.PullMessages(", "object_tree = pull_msg_res.message_object_trees[0]",
                 "pull_and_inflate_object_from_tree(", "make_pull_object_fn_protobuf(client.PullObject, node, run_id)",
                 "make_confirm_message_received_fn_protobuf(",
                 'message.metadata.__dict__["_message_id"] = object_tree.object_id'):
        assert step in pull_source, step
    assert {"initial_backoff", "backoff_cap", "max_tries_per_object", "return_type"} <= parameters(
        flower("flwr.supercore.inflatable.inflatable_utils", "pull_and_inflate_object_from_tree"))
    assert flower("flwr.supercore.constant", "PULL_INITIAL_BACKOFF") > flower_compat.LOCAL_PULL_BACKOFF_S[0]
    assert parameters(module.push_message) == {"client", "message", "context"}
    assert parameters(module.push_task_output) == {"client", "context", "sub_status", "details"}
    assert {"fab_file", "skip_prompt"} <= parameters(flower("flwr.cli.install", "install_from_fab"))
    assert parameters(flower("flwr.clientapp.utils", "get_load_client_app_fn")) == {"default_app_ref", "app_path",
                                                                                    "multi_app"}
    assert {"token"} <= parameters(flower("flwr.supercore.interceptors", "RuntimeTokenHttpInterceptor"))
    sub_status = flower("flwr.common.constant", "SubStatus")
    assert (sub_status.COMPLETED, sub_status.FAILED) == ("completed", "failed")
    from flwr.clientapp.typing import ClientAppCallable

    assert flower_compat.ClientAppCallable == ClientAppCallable


def test_task_error_reply_is_run_clientapps() -> None:
    flower_compat.set_task_identity(task_id=1, run_id=2, node_id=3)
    message = Message(RecordDict({"config": ConfigRecord({"x": 1})}), dst_node_id=7, message_type="train")
    reply, details = flower_compat.task_error_reply(message, ValueError("no such app"))
    assert details == "<class 'ValueError'>:<'no such app'>"
    error_code = flower("flwr.common.constant", "ErrorCode")
    assert reply.has_error() and reply.error.code == error_code.CLIENT_APP_RAISED_EXCEPTION
    assert reply.error.reason == details
    load_error = flower("flwr.clientapp.client_app", "LoadClientAppError")("detail stays here")
    reply, details = flower_compat.task_error_reply(message, load_error)
    assert reply.error.code == error_code.LOAD_CLIENT_APP_EXCEPTION and "detail" not in details


def test_clientapp_runtime_client_is_built_and_closed() -> None:
    client = flower_compat.clientapp_runtime_client("127.0.0.1:1", "token")
    try:
        assert isinstance(client, flower("flwr.supercore.runtime", "RuntimeHttpClient"))
    finally:
        client.close()


# ---- the SuperExec's Runtime API client -----------------------------------------------------------------------------


def test_runtime_api_internals() -> None:
    client_class = flower("flwr.supercore.runtime", "RuntimeHttpClient")
    assert {"server_address", "insecure", "root_certificates", "interceptors",
            "retry_invoker"} <= parameters(client_class.from_server_address)
    assert callable(client_class.AcquireTask) and callable(client_class.close)
    assert {"component_name"} <= parameters(flower("flwr.supercore.interceptors", "RuntimeVersionHttpInterceptor"))
    assert {"master_secret", "protected_methods"} <= parameters(
        flower("flwr.supercore.interceptors", "SuperExecAuthHttpInterceptor"))
    assert parameters(flower("flwr.supercore.retry", "make_simple_http_retry_invoker")) == set()
    assert {"secret_file"} <= parameters(flower("flwr.supercore.auth", "load_superexec_auth_secret"))
    assert {"parent_pid"} <= parameters(flower("flwr.supercore.app_utils", "start_parent_process_monitor"))
    request = flower("flwr.proto.runtime_pb2", "AcquireTaskRequest")
    client_app = flower("flwr.supercore.constant", "TaskType").CLIENT_APP
    assert list(request(supported_task_types=[client_app]).supported_task_types) == [client_app]
    response = flower("flwr.proto.runtime_pb2", "AcquireTaskResponse")()
    assert not response.HasField("task") and response.token == ""
    assert {"task_id", "run_id"} <= {f.name for f in response.task.DESCRIPTOR.fields}
    signed_by_superexec = inspect.getsource(importlib.import_module("flwr.supercore.superexec.run_superexec"))
    checked_by_supernode = inspect.getsource(importlib.import_module("flwr.supercore.routers.runtime.router"))
    for method in flower_compat.SUPEREXEC_AUTH_METHODS:
        assert f'"{method}"' in signed_by_superexec and f'SuperExecAuthDependency("{method}")' in checked_by_supernode


def test_runtime_api_client_is_built_and_closed() -> None:
    client = flower_compat.runtime_api_client("127.0.0.1:1", b"secret")
    try:
        assert isinstance(client, flower("flwr.supercore.runtime", "RuntimeHttpClient"))
    finally:
        client.close()


def test_acquire_client_app_task_reads_the_response() -> None:
    runtime = importlib.import_module("flwr.proto.runtime_pb2")
    sent = []

    class FakeClient:
        def __init__(self, response: Any) -> None:
            self.response = response

        def AcquireTask(self, request: Any) -> Any:
            sent.append(request)
            return self.response

    empty = runtime.AcquireTaskResponse()
    assert flower_compat.acquire_client_app_task(FakeClient(empty)) is None  # type: ignore[arg-type]
    full = runtime.AcquireTaskResponse(token="tok")
    full.task.task_id, full.task.run_id = 3, 4
    task = flower_compat.acquire_client_app_task(FakeClient(full))  # type: ignore[arg-type]
    assert task == flower_compat.AcquiredTask(task_id=3, run_id=4, token="tok")
    assert list(sent[0].supported_task_types) == [flower("flwr.supercore.constant", "TaskType").CLIENT_APP]


def test_load_superexec_auth_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"\x01\x02")
    assert flower_compat.load_superexec_auth_secret(str(tmp_path / "secret")) == b"\x01\x02"
    assert flower_compat.load_superexec_auth_secret(None) is None


# ---- the operator's Control API client ------------------------------------------------------------------------------


def test_control_api_internals() -> None:
    client_class = flower("flwr.supercore.control", "ControlHttpClient")
    assert {"server_address", "insecure", "root_certificates", "interceptors"} <= parameters(
        client_class.from_server_address)
    for method in ("ListNodes", "RegisterNode", "UnregisterNode", "close"):
        assert callable(getattr(client_class, method))
    control = importlib.import_module("flwr.proto.control_pb2")
    assert control.RegisterNodeRequest(public_key=b"k", name="n").name == "n"
    assert control.UnregisterNodeRequest(node_id=3).node_id == 3
    assert {"node_id"} <= {f.name for f in control.RegisterNodeResponse.DESCRIPTOR.fields}
    assert {"nodes_info"} <= {f.name for f in control.ListNodesResponse.DESCRIPTOR.fields}
    node_type = control.ListNodesResponse.DESCRIPTOR.fields_by_name["nodes_info"].message_type
    node_fields = {f.name for f in node_type.fields}
    assert {"node_id", "name", "public_key", "status"} <= node_fields
    assert isinstance(flower("flwr.supercore.constant", "NodeStatus").UNREGISTERED, str)


def test_fleet_deactivation_internals() -> None:
    client_class = flower("flwr.supernode.fleet_http_client", "FleetHttpClient")
    assert {"server_address", "insecure", "root_certificates", "interceptors"} <= parameters(
        client_class.from_server_address)
    assert callable(client_class.DeactivateNode) and callable(client_class.__enter__)
    interceptor = flower("flwr.supernode.node_auth_http_interceptor", "NodeAuthHttpInterceptor")
    assert {"private_key", "public_key"} <= parameters(interceptor)
    assert flower("flwr.proto.fleet_pb2", "DeactivateNodeRequest")(node_id=2**64 - 1).node_id == 2**64 - 1
    supernode = inspect.getsource(importlib.import_module("flwr.supernode.start_client_internal"))
    assert f'"{flower_compat.SUPERNODE_ID_LOG_TEXT}%s", node_id' in supernode


def test_control_calls_build_flowers_requests() -> None:
    control = importlib.import_module("flwr.proto.control_pb2")
    unregistered = flower("flwr.supercore.constant", "NodeStatus").UNREGISTERED
    sent: list[Any] = []

    class FakeControl:
        def ListNodes(self, request: Any) -> Any:
            sent.append(request)
            response = control.ListNodesResponse()
            for node_id, status in ((1, "online"), (2, unregistered)):
                response.nodes_info.add(node_id=node_id, name=f"site-{node_id}", public_key=b"pem", status=status)
            return response

        def RegisterNode(self, request: Any) -> Any:
            sent.append(request)
            return control.RegisterNodeResponse(node_id=12)

        def UnregisterNode(self, request: Any) -> Any:
            sent.append(request)
            return control.UnregisterNodeResponse()

    fake: Any = FakeControl()
    nodes = flower_compat.list_nodes(fake)
    assert [(n.node_id, n.name, n.public_key_pem, n.registered) for n in nodes] == [
        (1, "site-1", b"pem", True), (2, "site-2", b"pem", False)]
    assert flower_compat.register_node(fake, b"pem", "site-3") == 12
    assert (sent[-1].public_key, sent[-1].name) == (b"pem", "site-3")
    flower_compat.unregister_node(fake, 12)
    assert sent[-1].node_id == 12


def test_public_key_to_pem_is_what_the_superlink_stores() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = flower_compat.public_key_to_pem(key)
    assert pem == key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pem == flower("flwr.supercore.primitives.asymmetric", "public_key_to_bytes")(key)


# ---- FABs -----------------------------------------------------------------------------------------------------------


def test_build_fab_is_deterministic(tmp_path: Path) -> None:
    assert {"app"} <= parameters(flower("flwr.cli.build", "build_fab_from_disk"))
    from fedfusion.study.config import StudyConfig
    from fedfusion.study.flower_app import write_flower_app
    from fedfusion.study.run_config import StudyRun

    app = write_flower_app(StudyRun.of(StudyConfig()), tmp_path / "app")
    first = flower_compat.build_fab(app)
    assert first[:2] == b"PK" and flower_compat.build_fab(app) == first


# ---- Flower behaviour: constants, paths, log lines ------------------------------------------------------------------


def test_system_time_tolerance() -> None:
    assert flower("flwr.common.constant", "SYSTEM_TIME_TOLERANCE") == flower_compat.SYSTEM_TIME_TOLERANCE
    assert flower_compat.SYSTEM_TIME_TOLERANCE > 1


def test_fleet_api_paths_are_the_superlinks() -> None:
    router = flower("flwr.superlink.routers.fleet.router", "router")
    served = {route.path for route in router.routes}
    ours = {f"{flower_compat.FLEET_API_PREFIX}{method}" for method in flower_compat.FLEET_METHODS}
    assert ours <= served
    assert served - ours == {f"{flower_compat.FLEET_API_PREFIX}register-node",
                             f"{flower_compat.FLEET_API_PREFIX}unregister-node"}
    health = flower("flwr.supercore.routers.health.router", "router")
    assert flower_compat.SUPERLINK_HEALTH_PATH in {route.path for route in health.routes}


def test_connection_log_lines_are_flowers() -> None:
    retry = inspect.getsource(importlib.import_module("flwr.supercore.retry.http_retry"))
    assert re.search(re.escape(flower_compat.CONNECTION_LOST_LOG_TEXT) + r", retrying in", retry)
    assert f'"{flower_compat.CONNECTION_BACK_LOG_TEXT} ' in retry


def test_every_export_is_documented_in_the_seam() -> None:
    for name in flower_compat.__all__:
        assert hasattr(flower_compat, name), name
        value = getattr(flower_compat, name)
        if inspect.isfunction(value) or (inspect.isclass(value) and value.__module__ == flower_compat.__name__):
            assert inspect.getdoc(value), f"{name} has no docstring"
        else:
            assert re.search(rf"^{name}\b.*=.*\n(\s*.*\n)*?\"\"\"", SEAM_SOURCE, re.MULTILINE), name


def test_trimmed_mean_is_scipys_trim_mean_over_sites() -> None:
    """``FedTrimmedAvg``'s ``trim_mean`` cuts ``int(fraction * n)`` sites from each end, as scipy does."""
    from scipy.stats import trim_mean

    stacked = np.random.default_rng(3).normal(size=(7, 4, 3))
    stacked[2, 0, 0] = 1e9
    np.testing.assert_allclose(flower_compat.trimmed_mean(stacked, 0.2), trim_mean(stacked, 0.2, axis=0))


def test_multikrum_selection_returns_the_indices_of_the_closest_cluster() -> None:
    """``select_multikrum`` on updates given as name -> array mappings: the outliers are never chosen."""
    rng = np.random.default_rng(4)
    updates = [{"w": rng.normal(scale=0.01, size=(3, 2)), "b": rng.normal(scale=0.01, size=2)} for _ in range(5)]
    updates.insert(1, {"w": np.full((3, 2), 50.0), "b": np.zeros(2)})
    updates.append({"w": np.zeros((3, 2)), "b": np.full(2, -80.0)})
    chosen = flower_compat.multikrum_selection(updates, 2, 5)
    assert sorted(chosen) == [0, 2, 3, 4, 5]
    assert flower_compat.multikrum_selection(updates, 2, 1)[0] in chosen


def test_fleet_request_signer_accepts_what_a_supernode_sends_and_nothing_else() -> None:
    import base64
    import datetime

    import httpx
    from cryptography.hazmat.primitives.asymmetric import ec

    interceptor_class = flower("flwr.supernode.node_auth_http_interceptor", "NodeAuthHttpInterceptor")
    context_class = flower("flwr.supercore.protobuf.client", "ProtobufRequestContext")
    key, stranger = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    request = httpx.Request("POST", "https://127.0.0.1/v1/fleet/pull-messages")
    interceptor_class(key, key.public_key()).intercept(context_class(rpc_method="PullMessages", message=None,
                                                                     request=request),
                                                       lambda context: httpx.Response(200))
    headers = dict(request.headers)
    assert set(flower_compat.FLEET_AUTH_HEADERS) <= set(headers)
    assert flower_compat.fleet_request_signer(headers) == flower_compat.public_key_to_pem(key.public_key())
    key_header, time_header, _ = flower_compat.FLEET_AUTH_HEADERS
    claimed = {**headers,
               key_header: base64.b64encode(flower_compat.public_key_to_pem(stranger.public_key())).decode("ascii")}
    assert flower_compat.fleet_request_signer(claimed) is None  # another key's name on this signature
    later = datetime.datetime.fromisoformat(headers[time_header]) + datetime.timedelta(hours=1)
    assert flower_compat.fleet_request_signer(headers, now=later) is None  # an old signature
    assert flower_compat.fleet_request_signer({}) is None


# ---- the SuperNode's waits and the ServerApp's grid -----------------------------------------------------------------


def sleeps_in(function: Callable[..., Any]) -> list[Any]:
    """The arguments of every ``time.sleep(...)`` call in ``function``'s source, in order."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return [ast.literal_eval(node.args[0]) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "time.sleep"]


def test_the_supernode_loop_still_waits_where_the_seam_shortens_it() -> None:
    module = importlib.import_module("flwr.supernode.start_client_internal")
    assert sleeps_in(module.start_client_internal) == [flower_compat.SUPERNODE_IDLE_PULL_WAIT_S]
    assert sleeps_in(module._push_messages) == [flower_compat.SUPERNODE_LOCAL_WAIT_S] * 2
    assert sorted(sleeps_in(module)) == [flower_compat.SUPERNODE_LOCAL_WAIT_S] * 2 + [
        flower_compat.SUPERNODE_IDLE_PULL_WAIT_S]  # no other wait in the loop's module
    assert re.search(r"^import time$", inspect.getsource(module), re.MULTILINE)  # the module global replaced
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="flower-supernode")
    assert script.value == "flwr.supernode.cli:flower_supernode"  # what the site's launcher runs
    assert "start_client_internal(" in inspect.getsource(script.load())


def test_shorten_supernode_waits_maps_only_flowers_two_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module("flwr.supernode.start_client_internal")
    monkeypatch.setattr(module, "time", module.time)  # restored after the test
    flower_compat.shorten_supernode_waits(0.01, 0.002)
    started = time.monotonic()
    module.time.sleep(3)
    module.time.sleep(0.5)
    assert time.monotonic() - started < 1.0  # Flower's own waits: 3.5 s
    started = time.monotonic()
    module.time.sleep(0.2)
    assert time.monotonic() - started >= 0.2  # another duration is not touched
    assert module.time.monotonic is time.monotonic and abs(module.time.time() - time.time()) < 1
    with pytest.raises(ValueError, match="positive"):
        flower_compat.shorten_supernode_waits(0, 0.1)


def test_the_deployed_serverapp_gets_flowers_http_grid_which_pulls_every_3_seconds() -> None:
    http_grid = flower("flwr.superlink.grid.http_grid", "HttpGrid")
    assert "HttpGrid(" in inspect.getsource(importlib.import_module("flwr.superlink.runtime.run_serverapp"))
    assert sleeps_in(http_grid.send_and_receive) == [3]
    assert flower_compat.is_superlink_grid(http_grid(token="t"))
    in_memory_grid = flower("flwr.superlink.grid", "InMemoryGrid")  # the simulation's
    assert not flower_compat.is_superlink_grid(in_memory_grid.__new__(in_memory_grid))
    assert flower_compat.FlowerNodeInfo is flower("flwr.serverapp.grid.grid", "NodeInfo")  # what get_nodes yields


@pytest.mark.parametrize("module_name", flower_compat.OBJECT_PULLERS)
def test_object_pulls_are_shortened_where_flower_calls_pull_objects_without_a_backoff(
        module_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(module_name)
    flowers = flower("flwr.supercore.inflatable.inflatable_utils", "pull_objects")
    monkeypatch.setattr(module, "pull_objects", module.pull_objects)  # restored after the test
    assert module.pull_objects is flowers  # the module's global, imported by name
    calls = [node for node in ast.walk(ast.parse(inspect.getsource(module)))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "pull_objects"]
    assert len(calls) == 1 and not {"initial_backoff", "backoff_cap"} & {k.arg for k in calls[0].keywords}
    assert {"initial_backoff", "backoff_cap", "max_tries_per_object"} <= parameters(flowers)
    flower_compat.shorten_object_pull_backoff(module_name)
    tries: list[float] = []

    def pull(object_id: str) -> bytes:  # unavailable twice, as while its sender is still uploading it
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise flower("flwr.supercore.inflatable.inflatable_utils", "ObjectUnavailableError")(object_id)
        return b"content"

    assert module.pull_objects(["id"], pull_object_fn=pull) == {"id": b"content"}
    assert tries[-1] - tries[0] < 1.0  # Flower's own: 1 s, then 2 s
    with pytest.raises(ValueError, match="not one of"):
        flower_compat.shorten_object_pull_backoff("flwr.serverapp.grid.grid")


def test_the_supernode_is_woken_after_it_pulled_a_messages_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(flower_compat.SUPERNODE_LOOP_MODULE)
    monkeypatch.setattr(module, "pull_objects", module.pull_objects)  # restored after the test
    source = inspect.getsource(module._pull_and_store_message)
    steps = [source.index(step) for step in ("state.create_task(", "pull_objects(", "object_store.put(",
                                             "confirm_message_received(")]
    assert steps == sorted(steps)  # the task exists before the objects are pulled, which are stored, then confirmed
    flower_compat.shorten_object_pull_backoff(flower_compat.SUPERNODE_LOOP_MODULE)
    woken: list[int] = []
    flower_compat.notify_when_message_pulled(lambda: woken.append(len(tries)))
    tries: list[str] = []

    def pull(object_id: str) -> bytes:  # unavailable once: the shortened retry still applies under the wrapper
        tries.append(object_id)
        if len(tries) < 2:
            raise flower("flwr.supercore.inflatable.inflatable_utils", "ObjectUnavailableError")(object_id)
        return b"content"

    assert module.pull_objects(["id"], pull_object_fn=pull) == {"id": b"content"}
    assert woken == [2]  # once, after the object came


def test_object_transfers_move_a_packed_messages_three_objects_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    transfers = importlib.import_module("flwr.supercore.inflatable.inflatable_utils")
    monkeypatch.setattr(transfers, "get_num_workers", transfers.get_num_workers)  # restored after the test
    for function in (transfers.pull_objects, transfers.push_object_contents_from_iterable):
        source = inspect.getsource(function)  # the pool of every pull and push is sized by the module's global
        assert re.search(r"num_workers = get_num_workers\(max_concurrent_\w+\)", source), function.__name__
        assert "ThreadPoolExecutor(max_workers=num_workers)" in source, function.__name__
    # Flower's own sizing, read from its source (another test of this process may have widened the global already)
    assert re.search(r"def get_num_workers\(max_concurrent: int\) -> int:.*?return min\(max_concurrent, num_cores\)",
                     inspect.getsource(transfers), re.S)
    flower_compat.widen_object_transfers()
    assert transfers.get_num_workers(2) == flower_compat.OBJECT_TRANSFER_THREADS == 3
    assert transfers.get_num_workers(8) == 8
    barrier = threading.Barrier(3, timeout=10)

    def pull(object_id: str) -> bytes:  # passes only when all three pulls are in flight together
        barrier.wait()
        return object_id.encode()

    assert transfers.pull_objects(["a", "b", "c"], pull_object_fn=pull) == {"a": b"a", "b": b"b", "c": b"c"}


# ---- the SuperLink's SQL state (flwr.supercore.corestate.sql_corestate) -------------------------------------------


def calls_to(function: Callable[..., Any], name: str) -> int:
    """How many calls of ``self.<name>(...)`` ``function``'s source makes."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return sum(isinstance(node, ast.Call) and ast.unparse(node.func) == f"self.{name}" for node in ast.walk(tree))


def test_task_tokens_are_checked_where_used_not_only_by_the_cleanup_the_seam_throttles() -> None:
    core = flower("flwr.supercore.corestate.sql_corestate", "SqlCoreState")
    link = flower("flwr.server.superlink.linkstate.sql_linkstate", "SqlLinkState")
    assert issubclass(link, core)
    cleanup = "_cleanup_expired_task_tokens"
    for owner, method in ((link, "get_run_status"), (link, "get_run_info"), (core, "acknowledge_task_heartbeat"),
                          (core, "store_task_message")):
        assert calls_to(getattr(owner, method), cleanup) == 1, method  # Flower's callers of the cleanup
    for method in ("get_task_by_token", "acknowledge_task_heartbeat"):  # each checks the claim's own expiry
        assert "active_until" in inspect.getsource(getattr(core, method)), method


def test_the_task_token_cleanup_runs_at_most_once_an_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = flower("flwr.supercore.corestate.sql_corestate", "SqlCoreState")
    factories = flower("flwr.superlink.main", "get_objectstore_linkstate_factories")
    federations = flower("flwr.superlink.config_loader", "get_federation_manager")
    runs: list[float] = []
    flowers = core._cleanup_expired_task_tokens

    def flowers_cleanup(state: Any) -> None:  # Flower's own, counted
        runs.append(time.monotonic())
        flowers(state)

    monkeypatch.setattr(core, "_cleanup_expired_task_tokens", flowers_cleanup)  # Flower's back after the test
    _, linkstate = factories(str(tmp_path / "state.db"), federations())
    state = linkstate.state()
    interval = 0.5
    flower_compat.throttle_task_token_cleanup(interval)
    flower_compat.throttle_task_token_cleanup(interval)  # again: still one throttle around Flower's cleanup
    started = time.monotonic()
    for _ in range(20):
        assert state.get_run_status({7}) == {}
    calls_s = time.monotonic() - started
    assert 1 <= len(runs) <= 1 + calls_s / interval and runs[0] >= started  # once, however loaded the host
    time.sleep(interval + 0.05)
    state.get_run_status({7})
    assert len(runs) >= 2 and all(later - earlier >= interval for earlier, later in itertools.pairwise(runs))
    with pytest.raises(ValueError, match="positive"):
        flower_compat.throttle_task_token_cleanup(0)
