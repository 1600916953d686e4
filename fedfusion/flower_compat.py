"""The one seam between fedfusion and Flower's non-public API, for the pinned Flower release only.

fedfusion's apps use Flower's public app API (``flwr.app``, ``flwr.clientapp``, ``flwr.serverapp`` and their
``strategy`` / ``mod`` submodules) directly. Everything else it needs from Flower -- internal modules, private
functions, wire formats, URL paths and log lines -- is reached through this module only (a test,
``tests/test_import_boundaries.py``, keeps it so), and ``tests/test_flower_compat.py`` checks every internal used
here against the installed Flower. Those internals change between Flower releases without notice, so importing this
module fails (`FlowerVersionError`) unless the installed Flower is exactly `PINNED_FLOWER_VERSION`. Moving to a new
Flower release means: change the pin (here and in ``pyproject.toml``), run ``tests/test_flower_compat.py`` and fix
what it reports here.

Flower internals used:

- ``flwr.supercore.logger``: ``FLOWER_LOGGER`` (the ``flwr`` logger, also what ``flwr log`` streams in deployment)
  and its ``ConsoleHandler``.
- ``flwr.common.serde`` and ``flwr.proto.message_pb2``: a Message's protobuf wire format.
- ``flwr.supercore.run.Run`` and ``flwr.supercore.task_identity.TaskIdentity``: the run and task identity an
  in-process ServerApp needs.
- ``flwr.clientapp.typing.ClientAppCallable``: the type of a ClientApp mod's ``call_next``.
- ``flwr.common.constant.SYSTEM_TIME_TOLERANCE``: the SuperNode authentication's clock tolerance.
- ``flwr.common.constant`` (``TIMESTAMP_HEADER``, ``TIMESTAMP_TOLERANCE``), ``flwr.supercore.constant``
  (``FLEET_HTTP_PUBLIC_KEY_HEADER``, ``FLEET_HTTP_SIGNATURE_HEADER``) and ``flwr.supercore.primitives.asymmetric``
  (``bytes_to_public_key``, ``verify_signature``): a Fleet request's signed-timestamp headers, checked by the gateway
  before it reads a body as ``flwr.superlink.routers.fleet.node_auth`` checks them after.
- ``flwr.simulation.run_simulation._run_simulation`` (with ``flwr.common.constant``, ``flwr.supercore.constant``,
  ``flwr.supercore.telemetry`` and ``flwr.server.superlink.linkstate.utils``): the simulation engine in this process.
- ``flwr.supernode.runtime.run_clientapp`` (``push_message``, ``push_task_output``, and the steps of
  ``pull_task_input`` with ``flwr.supercore.inflatable``, ``flwr.common.serde`` and a shorter backoff),
  ``flwr.cli.install.install_from_fab``, ``flwr.clientapp.utils.get_load_client_app_fn``, ``flwr.supercore.heartbeat``,
  ``flwr.common.constant`` (``ErrorCode``, ``SubStatus``) and ``flwr.supercore.runtime.tracing``: a ClientApp task as
  ``flwr-clientapp`` runs it, done by the site's long-lived worker one task after another, with the site's app
  approval before the FAB is installed.
- ``flwr.supercore.runtime``, ``.interceptors``, ``.retry``, ``.auth``, ``.app_utils``, ``.constant.TaskType`` and
  ``flwr.proto.runtime_pb2``: a SuperExec's client of the SuperNode's Runtime API.
- ``flwr.supercore.control``, ``flwr.proto.control_pb2``, ``flwr.supercore.constant.NodeStatus`` and
  ``flwr.supercore.primitives.asymmetric.public_key_to_bytes``: the operator's client of the SuperLink's Control API.
- ``flwr.cli.build.build_fab_from_disk``: the FAB ``flwr run`` builds (its hash is what a site approves).
- ``flwr.serverapp.strategy.fedtrimmedavg.trim_mean`` and ``flwr.serverapp.strategy.multikrum.select_multikrum``:
  the coordinate-wise trimmed mean of ``FedTrimmedAvg`` and the (Multi-)Krum selection of ``Krum``/``MultiKrum``,
  which the coordinator's robust aggregation applies to the sites' updates.
- ``flwr.supernode.fleet_http_client.FleetHttpClient``, ``flwr.supernode.node_auth_http_interceptor`` and
  ``flwr.proto.fleet_pb2.DeactivateNodeRequest``: a site marks its node offline after a crash, as its SuperNode
  does when it stops cleanly.
- ``flwr.supernode.start_client_internal`` (its module global ``time``): the SuperNode's loop, whose fixed waits
  (3 s after an empty pull from the SuperLink, 0.5 s while a reply or its objects are not ready yet) a site
  shortens (``shorten_supernode_waits``); its global ``pull_objects``,
  wrapped to tell the site's SuperExec when a message is whole (``notify_when_message_pulled``).
- ``flwr.supercore.inflatable.inflatable_utils.get_num_workers``: how many of a message's objects move at once,
  widened to a packed message's three (``widen_object_transfers``).
- ``flwr.superlink.grid.http_grid.HttpGrid``: the grid a deployed ServerApp gets (it pulls replies every 3 s), which
  the coordinator wraps (``is_superlink_grid``); ``flwr.proto.node_pb2.NodeInfo``: what ``Grid.get_nodes`` yields.
- ``flwr.superlink.main._get_middleware`` and the middleware classes it stacks (``flwr.superlink.routers.control
  .middlewares``, ``.fleet.middlewares``, ``.fleet.node_auth``, ``flwr.supercore.routers.runtime.tracing``): the
  SuperLink's middleware, each layer scoped to the API it acts on (``replace_superlink_middleware``,
  ``superlink_middleware_scopes``); ``flwr.supercore.corestate.sql_corestate.SqlCoreState
  ._cleanup_expired_task_tokens``: the SuperLink's sweep for expired task claims, throttled
  (``throttle_task_token_cleanup``).
- Behaviour, not code: the SuperLink's Fleet API paths (``flwr.superlink.routers.fleet.router``), its ``/health``
  path, the SuperNode's connection-retry log lines (``flwr.supercore.retry.http_retry``) and its node-id line
  (``flwr.supernode.start_client_internal``).

Heavy internals (the simulation engine, the Runtime and Control API clients, the FAB builder) are imported inside
the functions that use them, so importing this module costs little more than ``flwr.app``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import importlib.metadata
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import UnsupportedAlgorithm
from google.protobuf.message import DecodeError as _DecodeError  # type: ignore[import-untyped]  # (Flower's dependency)

from fedfusion.errors import FedfusionError

PINNED_FLOWER_VERSION = "1.41.0"
"""The only Flower release whose internals this module was written against (also pinned in ``pyproject.toml``)."""


class FlowerVersionError(FedfusionError, ImportError):
    """The installed Flower is not the pinned release."""


def check_flower_version(installed: str) -> None:
    """Raise `FlowerVersionError` unless ``installed`` is `PINNED_FLOWER_VERSION` (called at import)."""
    if installed != PINNED_FLOWER_VERSION:
        raise FlowerVersionError(
            f"fedfusion needs Flower (flwr) {PINNED_FLOWER_VERSION}, but flwr {installed} is installed. "
            f"fedfusion's simulation and deployment rely on Flower internals (listed in {__name__}, "
            f"{Path(__file__).name}) that change between Flower releases; install flwr=={PINNED_FLOWER_VERSION}."
        )


check_flower_version(importlib.metadata.version("flwr"))

# The pin is checked before any Flower internal is imported: a different release fails with the message above.
from flwr.app import Context, Message, RecordDict  # noqa: E402
from flwr.clientapp.typing import ClientAppCallable as _ClientAppCallable  # noqa: E402
from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE as _MAX_ARRAY_CHUNK_SIZE  # noqa: E402
from flwr.common.constant import SYSTEM_TIME_TOLERANCE as _SYSTEM_TIME_TOLERANCE  # noqa: E402
from flwr.common.constant import TIMESTAMP_HEADER as _TIMESTAMP_HEADER  # noqa: E402
from flwr.common.constant import TIMESTAMP_TOLERANCE as _TIMESTAMP_TOLERANCE  # noqa: E402
from flwr.common.serde import message_from_proto, message_to_proto, recorddict_from_proto, recorddict_to_proto  # noqa: E402  # noqa: E402
from flwr.proto.fleet_pb2 import PullMessagesRequest as _PullMessagesRequest  # noqa: E402
from flwr.proto.fleet_pb2 import PullMessagesResponse as _PullMessagesResponse  # noqa: E402
from flwr.proto.fleet_pb2 import PushMessagesResponse as _PushMessagesResponse  # noqa: E402
from flwr.proto.message_pb2 import Message as _ProtoMessage  # noqa: E402
from flwr.proto.node_pb2 import NodeInfo as _NodeInfo  # noqa: E402
from flwr.proto.recorddict_pb2 import RecordDict as _ProtoRecordDict  # noqa: E402
from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER as _PUBLIC_KEY_HEADER  # noqa: E402
from flwr.supercore.constant import FLEET_HTTP_SIGNATURE_HEADER as _SIGNATURE_HEADER  # noqa: E402
from flwr.supercore.logger import FLOWER_LOGGER as _FLOWER_LOGGER  # noqa: E402
from flwr.supercore.logger import ConsoleHandler as _ConsoleHandler  # noqa: E402
from flwr.supercore.run import Run as _Run  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity as _TaskIdentity  # noqa: E402

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.runtime import RuntimeHttpClient
    from starlette.middleware import Middleware

__all__ = [
    "CONNECTION_BACK_LOG_TEXT",
    "CONNECTION_LOST_LOG_TEXT",
    "FLEET_API_PREFIX",
    "FLEET_AUTH_HEADERS",
    "FLEET_METHODS",
    "FLEET_PULL_MESSAGES_PATH",
    "FLEET_PUSH_MESSAGES_PATH",
    "FLEET_PUSH_OBJECT_PATH",
    "FLOWER_LOGGER",
    "LOCAL_PULL_BACKOFF_S",
    "MAX_ARRAY_CHUNK_BYTES",
    "OBJECT_PULLERS",
    "OBJECT_TRANSFER_THREADS",
    "PINNED_FLOWER_VERSION",
    "PULL_BACKOFF_S",
    "SERVERAPP_GRID_MODULE",
    "SUPEREXEC_AUTH_METHODS",
    "SUPERLINK_CONTROL_PREFIX",
    "SUPERLINK_HEALTH_PATH",
    "SUPERLINK_RUNTIME_PREFIX",
    "SUPERNODE_IDLE_PULL_WAIT_S",
    "SUPERNODE_ID_LOG_TEXT",
    "SUPERNODE_LOCAL_WAIT_S",
    "SUPERNODE_LOOP_MODULE",
    "SYSTEM_TIME_TOLERANCE",
    "AcquiredTask",
    "ClientAppCallable",
    "FlowerNode",
    "FlowerNodeInfo",
    "FlowerVersionError",
    "Run",
    "TaskInput",
    "acquire_client_app_task",
    "build_fab",
    "check_flower_version",
    "clientapp_runtime_client",
    "control_api_client",
    "deactivate_supernode",
    "empty_run",
    "fleet_request_signer",
    "flower_console_handlers",
    "install_fab",
    "is_empty_pull_response",
    "is_superlink_grid",
    "list_nodes",
    "load_client_app",
    "load_superexec_auth_secret",
    "message_from_bytes",
    "message_to_bytes",
    "multikrum_selection",
    "notify_when_message_pulled",
    "objects_to_push_count",
    "public_key_to_pem",
    "pull_request_node_id",
    "pull_task_input",
    "push_reply",
    "push_task_output",
    "recorddict_from_bytes",
    "recorddict_to_bytes",
    "register_node",
    "replace_superlink_middleware",
    "run_simulation_in_process",
    "runtime_api_client",
    "set_task_identity",
    "shorten_object_pull_backoff",
    "shorten_supernode_waits",
    "start_parent_process_monitor",
    "start_task_heartbeat",
    "superlink_middleware_scopes",
    "task_error_reply",
    "trimmed_mean",
    "unregister_node",
    "widen_object_transfers",
]

# ---- Logging (flwr.supercore.logger) -------------------------------------------------------------------------------

FLOWER_LOGGER: logging.Logger = _FLOWER_LOGGER
"""The standard library's ``flwr`` logger as Flower configures it (level DEBUG, Flower's console handler); its lines
reach the console and, in deployment, ``flwr log`` / ``flwr run --stream`` (``flwr.supercore.logger``)."""


def flower_console_handlers() -> list[logging.Handler]:
    """Flower's console handlers on `FLOWER_LOGGER` (``flwr.supercore.logger.ConsoleHandler``), to filter them."""
    return [handler for handler in FLOWER_LOGGER.handlers if isinstance(handler, _ConsoleHandler)]


# ---- Messages on the wire (flwr.common.serde, flwr.proto.message_pb2) ----------------------------------------------


def message_to_bytes(message: Message) -> bytes:
    """A Message serialized as between SuperLink and SuperNode (``flwr.common.serde.message_to_proto``)."""
    return bytes(message_to_proto(message).SerializeToString())


def message_from_bytes(payload: bytes) -> Message:
    """The Message the receiver rebuilds from `message_to_bytes` (``flwr.common.serde.message_from_proto``)."""
    return message_from_proto(_ProtoMessage.FromString(payload))


def recorddict_to_bytes(content: RecordDict) -> bytes:
    """A message's content serialized as Flower puts it in a Message on the wire
    (``flwr.common.serde.recorddict_to_proto``): every record, array and value, in order."""
    return bytes(recorddict_to_proto(content).SerializeToString())


def recorddict_from_bytes(payload: bytes) -> RecordDict:
    """The RecordDict `recorddict_to_bytes` serialized; ``ValueError`` when ``payload`` is not one."""
    try:
        proto = _ProtoRecordDict.FromString(payload)
    except _DecodeError as exc:
        raise ValueError(f"not a serialized RecordDict: {exc}") from None
    return recorddict_from_proto(proto)


MAX_ARRAY_CHUNK_BYTES: int = _MAX_ARRAY_CHUNK_SIZE
"""Flower sends an Array as chunks of at most this many bytes, each its own object and request
(``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``, 5 MiB): the largest object a SuperNode pushes or pulls."""


# ---- Run and task identity (flwr.supercore.run, flwr.supercore.task_identity) --------------------------------------

Run = _Run
"""Flower's record of a run, what ``Grid.run`` returns (``flwr.supercore.run.Run``)."""


def empty_run(run_id: int) -> Run:
    """A run with only its id set (``Run.create_empty``), for a Grid that runs in this process."""
    return Run.create_empty(run_id=run_id)


def set_task_identity(task_id: int, run_id: int, node_id: int) -> None:
    """Set the process-wide identity of the running task (class attributes of
    ``flwr.supercore.task_identity.TaskIdentity``); Flower reads it when it creates a Message, so a ServerApp driven
    in this process needs it set."""
    _TaskIdentity.task_id = task_id
    _TaskIdentity.run_id = run_id
    _TaskIdentity.node_id = node_id


# ---- Simulation engine (flwr.simulation.run_simulation._run_simulation) --------------------------------------------


def run_simulation_in_process(server_app_attr: str, client_app_attr: str, num_supernodes: int,
                              backend_config: Mapping[str, Any], app_dir: Path,
                              run_config: Mapping[str, Any]) -> None:
    """Run a ServerApp and ``num_supernodes`` simulated SuperNodes with Flower's Ray engine, in this process.

    What Flower's ``flower-simulation`` process does for ``flwr run`` against a local connection, minus the detached
    SuperLink: a run with fresh ids (``generate_rand_int_from_bytes``), the task identity of the ServerApp, and
    ``run_config`` in every ``context.run_config``. ``flwr.simulation.run_simulation`` (public) is not used: it is
    deprecated and passes an empty run config. Uses ``flwr.simulation.run_simulation._run_simulation``.
    """
    from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.telemetry import EventType

    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    set_task_identity(task_id=1, run_id=run_id, node_id=SUPERLINK_NODE_ID)
    server_context = Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(),
                             run_config=dict(run_config))
    _run_simulation(
        num_supernodes=num_supernodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        server_app_attr=server_app_attr,
        client_app_attr=client_app_attr,
        backend_name="ray",
        backend_config=dict(backend_config),
        app_dir=str(app_dir),
        run=run,
        server_app_context=server_context,
        is_app=True,
    )


# ---- The ClientApp task (flwr.supernode.runtime.run_clientapp's steps, flwr.clientapp.utils) ----------------------

ClientAppCallable = _ClientAppCallable
"""What a ClientApp mod's ``call_next`` is: ``(Message, Context) -> Message`` (``flwr.clientapp.typing``)."""


@dataclass(frozen=True)
class TaskInput:
    """What a ClientApp task pulls from the SuperNode: the message, the node's context and the run's FAB."""

    message: Message
    context: Context
    fab_id: str
    fab_version: str
    fab_hash: str
    """The FAB's hash as the SuperNode names it (where Flower finds the installed app); a site checks its own."""
    fab: bytes


def clientapp_runtime_client(runtime_api_address: str, token: str) -> RuntimeHttpClient:
    """A client of the SuperNode's Runtime API for one ClientApp task, built as ``run_clientapp`` builds it: tracing,
    version header (``flwr-clientapp``), the task's token, Flower's HTTP retries; loopback, no TLS. Close it."""
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor

    return RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeTracingInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def start_task_heartbeat(client: RuntimeHttpClient) -> Callable[[], None]:
    """Start the task's heartbeat to the SuperNode, as ``run_clientapp`` does (``HeartbeatSender`` with
    ``make_task_heartbeat_fn_http``; it raises SIGINT in this process when the SuperNode ends the task); return the
    function that stops it."""
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http

    sender = HeartbeatSender(make_task_heartbeat_fn_http(client))
    sender.start()

    def stop() -> None:
        if sender.is_running:
            sender.stop()

    return stop


PULL_BACKOFF_S = (0.02, 0.1)
"""First and longest wait between two tries to pull, over the network, an object its sender has not uploaded yet (the
SuperNode pulling the coordinator's message, the ServerApp's grid a site's reply). Flower's 1 s doubling to 10 s cost
1-3 s per message; doubling up to 0.5 s still noticed an object that came after 0.3 s up to 0.3 s late."""
LOCAL_PULL_BACKOFF_S = (0.01, 0.05)
"""The same for a site worker pulling its task's message from its own SuperNode (loopback, an in-memory lookup there):
the worker asks as soon as the task exists, while the SuperNode still fetches the message from the coordinator
(0.3-0.6 s on a busy host), and notices it within 50 ms (measured with a cap of 0.5 s: up to 0.35 s late)."""


def pull_task_input(client: RuntimeHttpClient) -> TaskInput:
    """The task's message, context, run and FAB, as ``run_clientapp.pull_task_input`` pulls them (and sets the
    task identity), with a shorter backoff (`LOCAL_PULL_BACKOFF_S`) while the SuperNode is still fetching the
    message."""
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree

    response = client.PullTaskInput(PullTaskInputRequest())
    set_task_identity(task_id=response.task_id, run_id=response.run.run_id, node_id=response.context.node_id)
    context, run, fab = context_from_proto(response.context), run_from_proto(response.run), fab_from_proto(response.fab)
    messages = client.PullMessages(PullAppMessagesRequest())
    if not messages.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node, tree = Node(node_id=context.node_id), messages.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=LOCAL_PULL_BACKOFF_S[0], backoff_cap=LOCAL_PULL_BACKOFF_S[1],
        max_tries_per_object=None)  # more, shorter tries: bounded by Flower's time limit only
    message.metadata.__dict__["_message_id"] = tree.object_id  # not part of the deflated message, as Flower does
    return TaskInput(message=message, context=context, fab_id=str(run.fab_id), fab_version=str(run.fab_version),
                     fab_hash=str(fab.hash_str), fab=bytes(fab.content))


def install_fab(fab: bytes) -> Path:
    """Unpack a FAB into ``$FLWR_HOME/apps`` as ``run_clientapp`` does (``flwr.cli.install.install_from_fab``, no
    prompt; an app already there is kept); return its folder. Check the FAB's approval first."""
    from flwr.cli.install import install_from_fab

    return Path(install_from_fab(fab, skip_prompt=True))


def load_client_app(fab_id: str, fab_version: str, fab_hash: str) -> ClientApp:
    """Import the installed app's ClientApp as ``run_clientapp`` does (``get_load_client_app_fn`` of
    ``flwr.clientapp.utils``, multi-app); raises ``LoadClientAppError`` (an ``Exception``) when it cannot."""
    from flwr.clientapp.utils import get_load_client_app_fn

    return get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)(fab_id, fab_version, fab_hash)


def task_error_reply(message: Message, error: Exception) -> tuple[Message, str]:
    """The error reply ``run_clientapp`` sends when a task raises, and the failure details it reports with the
    task's output: ``<class ...>:<'text'>`` with ``CLIENT_APP_RAISED_EXCEPTION``, or a fixed text with
    ``LOAD_CLIENT_APP_EXCEPTION`` when the ClientApp could not be loaded."""
    from flwr.app import Error
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.constant import ErrorCode

    if isinstance(error, LoadClientAppError):
        code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
        reason = "An exception was raised when attempting to load `ClientApp`"
    else:
        code, reason = ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(type(error)) + ":<'" + str(error) + "'>"
    return Message(Error(code=code, reason=reason), reply_to=message), reason


def push_reply(client: RuntimeHttpClient, reply: Message, context: Context) -> None:
    """Send the task's reply to the SuperNode (``run_clientapp.push_message``)."""
    from flwr.supernode.runtime.run_clientapp import push_message

    push_message(client, reply, context)


def push_task_output(client: RuntimeHttpClient, context: Context | None, failure: str | None) -> None:
    """End the task at the SuperNode with the node's context (its ``state`` kept for the next task) and the status
    ``COMPLETED``, or ``FAILED`` with ``failure`` (``run_clientapp.push_task_output``; an HTTP error is logged)."""
    from flwr.common.constant import SubStatus
    from flwr.supernode.runtime.run_clientapp import push_task_output as push

    push(client, context, SubStatus.COMPLETED if failure is None else SubStatus.FAILED, failure or "")


# ---- A SuperExec's Runtime API client (flwr.supercore.runtime and friends) -----------------------------------------

SUPEREXEC_AUTH_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})
"""The Runtime API methods the SuperNode checks the SuperExec's HMAC on (as ``flower-superexec`` signs them)."""


@dataclass(frozen=True)
class AcquiredTask:
    """A ClientApp task the SuperNode handed out, and the token its app process authenticates with."""

    task_id: int
    run_id: int
    token: str


def start_parent_process_monitor(parent_pid: int) -> None:
    """Raise SIGINT in this process when ``parent_pid`` is gone (``flwr.supercore.app_utils``)."""
    from flwr.supercore.app_utils import start_parent_process_monitor as start_monitor

    start_monitor(parent_pid)


def load_superexec_auth_secret(secret_file: str | None) -> bytes | None:
    """The SuperExec HMAC secret from its file, as Flower reads it (``flwr.supercore.auth``); None without a file."""
    from flwr.supercore.auth import load_superexec_auth_secret as load_secret

    return load_secret(secret_file)


def runtime_api_client(runtime_api_address: str, auth_secret: bytes | None) -> RuntimeHttpClient:
    """A client of the SuperNode's Runtime API on loopback, configured as ``flower-superexec``'s: version header,
    HMAC on `SUPEREXEC_AUTH_METHODS` when there is a secret, Flower's HTTP retries. Close it with ``close()``."""
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                      *([SuperExecAuthHttpInterceptor(master_secret=auth_secret,
                                                      protected_methods=SUPEREXEC_AUTH_METHODS)]
                        if auth_secret else [])],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def acquire_client_app_task(client: RuntimeHttpClient) -> AcquiredTask | None:
    """Ask the SuperNode for one ClientApp task (``AcquireTask`` for ``TaskType.CLIENT_APP`` only); None if none."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    response = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
    if not (response.HasField("task") and response.token):
        return None
    return AcquiredTask(task_id=int(response.task.task_id), run_id=int(response.task.run_id),
                        token=str(response.token))


# ---- The operator's Control API client (flwr.supercore.control, flwr.proto.control_pb2) ----------------------------


@dataclass(frozen=True)
class FlowerNode:
    """A SuperNode as the SuperLink's Control API lists it."""

    node_id: int
    name: str
    public_key_pem: bytes
    status: str
    registered: bool
    """False once unregistered (``NodeStatus.UNREGISTERED``): its key is refused."""


def control_api_client(address: str, root_certificates: bytes) -> ControlHttpClient:
    """A client of the SuperLink's Control API over TLS, with the version header the ``flwr`` CLI sends
    (``flwr.supercore.control.ControlHttpClient``). Close it with ``close()``."""
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    return ControlHttpClient.from_server_address(
        server_address=address, insecure=False, root_certificates=root_certificates,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
    )


def deactivate_supernode(superlink: str, root_certificates: Path, private_key: Path, node_id: int) -> None:
    """Tell the SuperLink (through the Fleet API, signed with the site's key) that node ``node_id`` is offline, as a
    SuperNode does when it stops cleanly. Until then the SuperLink refuses the same key's next activation (Flower's
    305) for up to two heartbeat intervals (60 s). Raises ``httpx.HTTPError`` when refused or unreachable.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.proto.fleet_pb2 import DeactivateNodeRequest
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    key = load_ssh_private_key(private_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{private_key} is not an EC private key")
    with FleetHttpClient.from_server_address(
            superlink, insecure=False, root_certificates=str(root_certificates),
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperNode"),
                          NodeAuthHttpInterceptor(key, key.public_key())]) as client:
        client.DeactivateNode(DeactivateNodeRequest(node_id=node_id))


def list_nodes(client: ControlHttpClient) -> list[FlowerNode]:
    """Every SuperNode the SuperLink knows, unregistered ones included (``ListNodes``)."""
    from flwr.proto.control_pb2 import ListNodesRequest
    from flwr.supercore.constant import NodeStatus

    response = client.ListNodes(ListNodesRequest())
    return [FlowerNode(int(node.node_id), str(node.name), bytes(node.public_key), str(node.status),
                       registered=node.status != NodeStatus.UNREGISTERED) for node in response.nodes_info]


def register_node(client: ControlHttpClient, public_key_pem: bytes, name: str) -> int:
    """Register a SuperNode's public key (PEM) under ``name`` (``RegisterNode``); return its node id."""
    from flwr.proto.control_pb2 import RegisterNodeRequest

    return int(client.RegisterNode(RegisterNodeRequest(public_key=public_key_pem, name=name)).node_id)


def unregister_node(client: ControlHttpClient, node_id: int) -> None:
    """Unregister a SuperNode (``UnregisterNode``): its key is refused from then on."""
    from flwr.proto.control_pb2 import UnregisterNodeRequest

    client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))


def public_key_to_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """A public key in the form the SuperLink stores and compares (``flwr.supercore.primitives.asymmetric``)."""
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    return public_key_to_bytes(public_key)


FLEET_AUTH_HEADERS = (_PUBLIC_KEY_HEADER, _TIMESTAMP_HEADER, _SIGNATURE_HEADER)
"""The headers a SuperNode signs every Fleet call with: its public key (base64 of the PEM), the time, the signature
(``flwr.supernode.node_auth_http_interceptor``)."""


def fleet_request_signer(headers: Mapping[str, str], now: datetime.datetime | None = None) -> bytes | None:
    """The public key (PEM) whose valid signature of a current timestamp a Fleet request's headers carry, else None.

    The SuperLink's own check (``flwr.superlink.routers.fleet.node_auth.authenticate_node``) with the same window
    and primitives, less its last step (the node id in the body belongs to that key), which needs the body.
    """
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key, verify_signature

    try:
        public_key = base64.b64decode(headers[_PUBLIC_KEY_HEADER], validate=True)
        signature = base64.b64decode(headers[_SIGNATURE_HEADER], validate=True)
        timestamp = headers[_TIMESTAMP_HEADER]
        signed_at = datetime.datetime.fromisoformat(timestamp)
        age = ((now or datetime.datetime.now(datetime.UTC)) - signed_at).total_seconds()
        if not -_SYSTEM_TIME_TOLERANCE < age < _TIMESTAMP_TOLERANCE + _SYSTEM_TIME_TOLERANCE:
            return None
        valid = verify_signature(bytes_to_public_key(public_key), timestamp.encode("ascii"), signature)
    except (KeyError, ValueError, TypeError, UnicodeError, binascii.Error, UnsupportedAlgorithm):
        return None
    return public_key if valid else None


def pull_request_node_id(body: bytes) -> int | None:
    """The node id a Fleet ``pull-messages`` request body (``flwr.proto.fleet_pb2.PullMessagesRequest``) names, or
    None when the body is not one."""
    try:
        return int(_PullMessagesRequest.FromString(body).node.node_id)
    except _DecodeError:
        return None


def is_empty_pull_response(body: bytes) -> bool:
    """Whether a ``pull-messages`` answer body (``PullMessagesResponse``) holds no message and no reconnect order
    (False for a body that is not one)."""
    try:
        response = _PullMessagesResponse.FromString(body)
    except _DecodeError:
        return False
    return not response.messages_list and not response.HasField("reconnect")


def objects_to_push_count(body: bytes) -> int | None:
    """How many objects a ``push-messages`` answer body (``PushMessagesResponse``) asks the SuperNode to upload next
    (None for a body that is not one)."""
    try:
        return len(_PushMessagesResponse.FromString(body).objects_to_push)
    except _DecodeError:
        return None


# ---- FABs (flwr.cli.build) -----------------------------------------------------------------------------------------


def build_fab(app_dir: Path) -> bytes:
    """The FAB (zipped app) ``flwr run`` builds from ``app_dir``: deterministic, so its SHA-256 names the app
    (``flwr.cli.build.build_fab_from_disk``)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(app_dir)


# ---- Robust aggregation (flwr.serverapp.strategy.fedtrimmedavg, .multikrum) --------------------------------------


def trimmed_mean(stacked: npt.NDArray[Any], cut_fraction: float) -> npt.NDArray[Any]:
    """The mean over axis 0 after cutting ``int(cut_fraction * n)`` of the ``n`` values from each end of every
    coordinate: ``FedTrimmedAvg``'s ``trim_mean`` (``cut_fraction`` in [0, 0.5))."""
    from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

    return trim_mean(stacked, cut_fraction)


def multikrum_selection(updates: Sequence[Mapping[str, npt.NDArray[Any]]], byzantine: int, select: int) -> list[int]:
    """Indices of the ``select`` updates with the lowest Krum scores (each one's summed squared L2 distance to its
    ``n - byzantine - 2`` nearest others), best first: ``select_multikrum`` of ``Krum`` (1) and ``MultiKrum``."""
    from flwr.app import Array, ArrayRecord
    from flwr.serverapp.strategy.multikrum import select_multikrum

    records = [RecordDict({"arrays": ArrayRecord({name: Array(np.asarray(values)) for name, values in update.items()})})
               for update in updates]
    index = {id(record): i for i, record in enumerate(records)}
    return [index[id(record)] for record in select_multikrum(records, byzantine, select)]


# ---- Flower behaviour fedfusion relies on: constants, URL paths, log lines -----------------------------------------

SYSTEM_TIME_TOLERANCE: int = _SYSTEM_TIME_TOLERANCE
"""Seconds a SuperNode's signed timestamp may differ from the SuperLink's clock (``flwr.common.constant``)."""
FLEET_API_PREFIX = "/v1/fleet/"
"""Where the SuperLink serves the Fleet API over HTTP (``flwr.superlink.routers.fleet.router``)."""
FLEET_METHODS = frozenset({
    "activate-node", "deactivate-node", "send-node-heartbeat", "pull-messages", "push-messages", "get-run",
    "get-fab", "push-object", "pull-object", "confirm-message-received",
})
"""Fleet API methods a registered SuperNode calls; ``register-node``/``unregister-node`` (self-registration) are left
out on purpose."""
FLEET_PULL_MESSAGES_PATH = f"{FLEET_API_PREFIX}pull-messages"
"""Where a SuperNode asks for its next message (``PullMessagesRequest`` in, ``PullMessagesResponse`` out)."""
FLEET_PUSH_MESSAGES_PATH = f"{FLEET_API_PREFIX}push-messages"
"""Where a SuperNode hands in a reply (its objects follow with ``push-object``)."""
FLEET_PUSH_OBJECT_PATH = f"{FLEET_API_PREFIX}push-object"
"""Where a SuperNode uploads one object of a reply."""
SUPERLINK_HEALTH_PATH = "/health"
"""The SuperLink's health check (``flwr.supercore.routers.health``)."""
CONNECTION_LOST_LOG_TEXT = "Connection attempt failed"
"""In the SuperNode's log line before each retry (``flwr.supercore.retry.http_retry``)."""
CONNECTION_BACK_LOG_TEXT = "Connection successful after"
"""In the SuperNode's log line when a try succeeds after failed ones (``flwr.supercore.retry.http_retry``)."""
SUPERNODE_ID_LOG_TEXT = "SuperNode ID: "
"""Before the node id in the SuperNode's log once the SuperLink activated it
(``flwr.supernode.start_client_internal``)."""


# ---- The SuperLink's middleware (flwr.superlink.main._get_middleware) ----------------------------------------------

SUPERLINK_CONTROL_PREFIX = "/v1/control/"
SUPERLINK_RUNTIME_PREFIX = "/v1/runtime/"


def superlink_middleware_scopes() -> dict[type, tuple[str, ...]]:
    """The path prefixes of the one API each of the SuperLink's middleware layers acts on; a request outside them
    passes the layer unchanged (read from each layer's ``dispatch``).

    The Control API's layers test ``path.startswith("/v1/control/")`` first (``_is_control_path``), or, for
    ``ControlSensitiveResponseMiddleware``, only change the answers of Control routes; the Fleet's node
    authentication and event log test ``path.startswith("/v1/fleet/")``; the Runtime's tracing only reads the answers
    of the Runtime's ``acquire-task`` and ``pull-task-input``.
    ``tests/deployment/coordinator/test_superlink_middleware.py`` sends requests through the real app to check each.
    """
    from flwr.supercore.routers.runtime.tracing import RuntimeTracingMiddleware
    from flwr.superlink.routers.control.middlewares import (
        ControlAuthenticationMiddleware,
        ControlEventLogMiddleware,
        ControlLicenseMiddleware,
        ControlSensitiveResponseMiddleware,
    )
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware

    control, fleet, runtime = (SUPERLINK_CONTROL_PREFIX,), (FLEET_API_PREFIX,), (SUPERLINK_RUNTIME_PREFIX,)
    return {ControlSensitiveResponseMiddleware: control, ControlAuthenticationMiddleware: control,
            ControlLicenseMiddleware: control, ControlEventLogMiddleware: control,
            NodeAuthMiddleware: fleet, FleetEventLogMiddleware: fleet, RuntimeTracingMiddleware: runtime}


def replace_superlink_middleware(transform: Callable[[list[Middleware]], list[Middleware]]) -> None:
    """Make every SuperLink app this process creates (``flwr.superlink.main.create_app``) use
    ``transform(Flower's middleware stack)``, outermost layer first, in place of Flower's stack.

    Flower 1.41 builds the stack in ``flwr.superlink.main._get_middleware`` with no option; the module's function is
    replaced by one that transforms what Flower's returns. Call it before the SuperLink starts.
    """
    import flwr.superlink.main as superlink_main

    flower_stack: Callable[[], list[Middleware]] = superlink_main._get_middleware
    superlink_main._get_middleware = lambda: transform(flower_stack())


TASK_TOKEN_CLEANUP_INTERVAL_S = 1.0
"""How often, at most, the SuperLink looks for task claims whose heartbeat expired (Flower: on every run-status
read, heartbeat and stored task message, i.e. several times per request); a claim expires after 60 s without a
heartbeat (``HEARTBEAT_PATIENCE * HEARTBEAT_DEFAULT_INTERVAL``)."""


def throttle_task_token_cleanup(interval_s: float = TASK_TOKEN_CLEANUP_INTERVAL_S) -> None:
    """Make the SuperLink's SQL state (``SqlCoreState``, which ``SqlLinkState`` extends) run
    ``_cleanup_expired_task_tokens`` at most once every `interval_s` seconds per state object.

    Flower 1.41 runs it, two ``UPDATE`` statements, on every run-status read (each Fleet object transfer reads one),
    every task heartbeat and every stored task message: measured 1.2 ms of CPU a call, about a sixth of the
    SuperLink's busy time in the deployment benchmark. The cleanup is housekeeping: a task whose heartbeat expired is
    marked failed (or retried) there, while a task token, a heartbeat and a claim are each checked against their
    own ``active_until`` where they are used (``get_task_by_token``, ``acknowledge_task_heartbeat``), so running it
    up to `interval_s` later changes no answer but when a 60-s expiry is noticed. The class's method is replaced;
    ``tests/test_flower_compat.py`` fails when Flower's callers or checks change.
    """
    if interval_s <= 0:
        raise ValueError(f"the task-token cleanup interval must be positive, got {interval_s}")
    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    cleanup: Callable[[SqlCoreState], None] = inspect.unwrap(SqlCoreState._cleanup_expired_task_tokens)
    last_run: dict[int, float] = {}

    @functools.wraps(cleanup)
    def throttled(state: SqlCoreState) -> None:
        current = time.monotonic()
        if current - last_run.get(id(state), -interval_s) >= interval_s:
            last_run[id(state)] = current
            cleanup(state)

    SqlCoreState._cleanup_expired_task_tokens = throttled  # type: ignore[method-assign,assignment]


# ---- The SuperNode's waits (flwr.supernode.start_client_internal) and the ServerApp's grid (flwr.superlink.grid) ----

SUPERNODE_IDLE_PULL_WAIT_S = 3
"""Flower's SuperNode waits this long after a pull from the SuperLink that brought no message (``time.sleep(3)``
in ``start_client_internal``): a message sent to an idle site waits 1.5 s on average before it is even pulled."""
SUPERNODE_LOCAL_WAIT_S = 0.5
"""Flower's SuperNode checks this often whether the reply to the message in hand, or an object of it, is in its
own state yet (``time.sleep(0.5)`` in ``_push_messages``): a local check, without the network."""

FlowerNodeInfo = _NodeInfo
"""What ``Grid.get_nodes`` yields (``flwr.proto.node_pb2.NodeInfo``)."""


class _ShortenedWaits:
    """The ``time`` module as ``start_client_internal`` sees it once shortened: ``sleep`` of one of Flower's fixed
    waits sleeps the site's wait instead; everything else is the time module's."""

    def __init__(self, waits: Mapping[float, float]) -> None:
        self._waits = dict(waits)

    def sleep(self, seconds: float) -> None:
        """Sleep the site's wait for Flower's wait ``seconds`` (any other duration unchanged)."""
        time.sleep(self._waits.get(seconds, seconds))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def shorten_supernode_waits(idle_pull_s: float, local_s: float) -> None:
    """Make this process's SuperNode loop wait ``idle_pull_s`` after an empty pull from the SuperLink (Flower: 3 s)
    and ``local_s`` between checks for a reply or an object in its own state (Flower: 0.5 s).

    Flower 1.41 hard-codes both as ``time.sleep(3)`` and ``time.sleep(0.5)`` in
    ``flwr.supernode.start_client_internal``, with no option. The module's global ``time`` is replaced by a view of
    the time module whose ``sleep`` maps those two durations (``tests/test_flower_compat.py`` fails when the loop's
    sleeps change). Call it before the SuperNode starts (``fedfusion.deployment.site.supernode_launch``); calling it
    again replaces the waits.
    """
    if idle_pull_s <= 0 or local_s <= 0:
        raise ValueError(f"SuperNode waits must be positive, got {idle_pull_s} and {local_s}")
    import flwr.supernode.start_client_internal as supernode_loop

    supernode_loop.time = _ShortenedWaits(  # type: ignore[assignment,attr-defined]
        {SUPERNODE_IDLE_PULL_WAIT_S: idle_pull_s, SUPERNODE_LOCAL_WAIT_S: local_s})


SUPERNODE_LOOP_MODULE = "flwr.supernode.start_client_internal"
"""The SuperNode's loop: a site pulls the coordinator's message (and its objects) here."""
SERVERAPP_GRID_MODULE = "flwr.superlink.grid.http_grid"
"""The deployed ServerApp's grid: the coordinator pulls a site's reply (and its objects) here."""
OBJECT_PULLERS = (SUPERNODE_LOOP_MODULE, SERVERAPP_GRID_MODULE)
"""The modules whose ``pull_objects`` `shorten_object_pull_backoff` replaces."""


def shorten_object_pull_backoff(module_name: str) -> None:
    """Make ``module_name`` (one of `OBJECT_PULLERS`) retry an object that is not uploaded yet after
    `PULL_BACKOFF_S` (first and longest wait) instead of Flower's 1 s, doubling to 10 s.

    Flower's SuperLink hands out a message as soon as its sender announced it, before the sender has uploaded its
    objects (the arrays, the records). Measured: the SuperNode, and the ServerApp's grid pulling a reply, asked for
    an object too early almost every time, and then waited 1 s (a train message's model 1 s and then 2 s more).
    Flower passes no backoff to these calls; the module's global ``pull_objects`` is replaced by Flower's own with
    the shorter backoff and no limit on the number of tries (Flower's limit on the total time, 2 h, still holds).
    ``tests/test_flower_compat.py`` fails when these modules stop calling ``pull_objects`` without a backoff.
    """
    if module_name not in OBJECT_PULLERS:
        raise ValueError(f"{module_name} is not one of the modules whose object pulls fedfusion shortens")
    from flwr.supercore.inflatable.inflatable_utils import pull_objects

    module = importlib.import_module(module_name)
    module.pull_objects = functools.partial(  # type: ignore[attr-defined]
        pull_objects, initial_backoff=PULL_BACKOFF_S[0], backoff_cap=PULL_BACKOFF_S[1], max_tries_per_object=None)


OBJECT_TRANSFER_THREADS = 3
"""Objects of a message moved at once, at least, whatever the host's core count: a packed message is three objects
(``fedfusion.array_packing``), so all three go in one round trip."""


def widen_object_transfers() -> None:
    """Make this process move `OBJECT_TRANSFER_THREADS` objects at once, at least, when it pulls or pushes a
    message's objects (every ``pull_objects`` and ``push_object_contents_from_iterable`` of Flower's
    ``flwr.supercore.inflatable.inflatable_utils``).

    Flower moves at most ``FLWR_PRIVATE_MAX_CONCURRENT_OBJ_PULLS`` / ``_PUSHES`` objects at once (2 by default) and
    never more than the host has cores (``get_num_workers``): on a 2-core host a message of three objects took two
    round trips at each of its five transfers (the grid's push, the SuperNode's pull, the worker's pull and push, the
    SuperNode's push, the grid's pull). Each transfer thread waits on a request, not on a core. The module's global
    ``get_num_workers`` is replaced; ``tests/test_flower_compat.py`` fails when Flower sizes its pools otherwise.
    """
    import flwr.supercore.inflatable.inflatable_utils as transfers

    transfers.get_num_workers = _object_transfer_threads


def _object_transfer_threads(max_concurrent: int) -> int:
    return max(max_concurrent, OBJECT_TRANSFER_THREADS)


def notify_when_message_pulled(notify: Callable[[], None]) -> None:
    """Make this process's SuperNode loop call ``notify()`` each time it has pulled a message's objects from the
    SuperLink: the message is then whole in the SuperNode, its task already created (``create_task`` comes first).

    Flower's ``_pull_and_store_message`` (``flwr.supernode.start_client_internal``) lists the message, creates its
    task, pulls every object with the module's global ``pull_objects``, puts the objects in its store and confirms
    the receipt to the SuperLink. That global is wrapped to call ``notify()`` once it returned (a few dict puts before
    the store holds them: a ClientApp that asks that instant retries after `LOCAL_PULL_BACKOFF_S`), before the
    confirmation's round trip. Call it after `shorten_object_pull_backoff` for the same module (``notify`` wraps the
    shortened pull); ``tests/test_flower_compat.py`` fails when the loop stops pulling this way.
    """
    module = importlib.import_module(SUPERNODE_LOOP_MODULE)
    pull = module.pull_objects

    @functools.wraps(pull)
    def pull_then_notify(*args: Any, **kwargs: Any) -> Any:
        contents = pull(*args, **kwargs)
        notify()
        return contents

    module.pull_objects = pull_then_notify  # type: ignore[attr-defined]


def is_superlink_grid(grid: Grid) -> bool:
    """Whether ``grid`` is the one a deployed ServerApp gets from the SuperLink (``flwr.superlink.grid.HttpGrid``,
    which sleeps 3 s between pulls for replies), not a simulation's in-memory grid or an in-process test grid."""
    from flwr.superlink.grid.http_grid import HttpGrid

    return isinstance(grid, HttpGrid)
