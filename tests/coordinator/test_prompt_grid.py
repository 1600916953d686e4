"""The deployed ServerApp's grid: replies pulled promptly, every message and reply logged with its time.

The inner grid is an in-process grid whose nodes answer after a delay of their own (a reply "arrives" at the
SuperLink then), so the pulls that wait for it are real.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedfusion.array_packing import pack
from fedfusion.coordinator.prompt_grid import (
    MAX_PULL_DELAY_S,
    RECEIVED,
    SENT,
    GridEvent,
    PromptGrid,
    parse_grid_line,
    prompt,
)
from fedfusion.coordinator.push_notice import decode_nodes, push_notifier
from fedfusion.coordinator.reply_notice import FALLBACK_PULL_S, ReplyNotices
from fedfusion.deployment.coordinator.reply_broadcast import ReplyBroadcast
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.protocol import (
    CONFIG_RECORD,
    PACKED_CONTENT_KEY,
    PACKED_RECORD,
    PUSH_NOTICE_SOCKET_ENV,
    SERVER_ROUND_KEY,
    UNREADABLE_REPLY_CODE,
)
from fedfusion.simulation.in_process_grid import InProcessGrid, set_message_id


class SlowNodes(InProcessGrid):
    """Node ``n`` answers ``delays[n]`` seconds after a message is pushed (None: never)."""

    def __init__(self, delays: dict[int, float | None]) -> None:
        super().__init__()
        self.delays = delays
        self.due: dict[str, tuple[float, Message]] = {}
        self.pulls = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.delays)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            set_message_id(message, uuid.uuid4().hex)
            ids.append(message.metadata.message_id)
            if (delay := self.delays[message.metadata.dst_node_id]) is not None:
                reply = Message(RecordDict({"answer": ConfigRecord({"node": message.metadata.dst_node_id})}),
                                reply_to=message)
                self.due[message.metadata.message_id] = (time.monotonic() + delay, reply)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        now = time.monotonic()
        ready = [i for i in message_ids if i in self.due and self.due[i][0] <= now]
        return [self.due.pop(i)[1] for i in ready]


@pytest.fixture
def grid_lines() -> Iterator[list[str]]:
    """The lines logged on Flower's logger during the test."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    FLOWER_LOGGER.addHandler(handler)
    yield lines
    FLOWER_LOGGER.removeHandler(handler)


def messages(grid: SlowNodes, server_round: int) -> list[Message]:
    return [Message(RecordDict({CONFIG_RECORD: ConfigRecord({SERVER_ROUND_KEY: server_round})}), node, "train")
            for node in grid.get_node_ids()]


def test_replies_are_pulled_as_they_come_and_each_message_and_reply_is_logged(grid_lines: list[str]) -> None:
    inner = SlowNodes({11: 0.05, 12: 0.2, 13: 0.4})
    grid = PromptGrid(inner)
    started = time.monotonic()
    replies = list(grid.send_and_receive(messages(inner, 3), timeout=60))
    elapsed = time.monotonic() - started
    assert sorted(r.content.config_records["answer"]["node"] for r in replies) == [11, 12, 13]
    assert elapsed < 2.0, f"{elapsed:.2f} s for replies due within 0.4 s (Flower's grid pulls every 3 s)"
    assert inner.pulls <= 0.4 / MAX_PULL_DELAY_S + 10  # doubling waits, then one pull per MAX_PULL_DELAY_S

    events = [event for line in grid_lines if (event := parse_grid_line(line)) is not None]
    sent = {e.node: e for e in events if e.event == SENT}
    received = {e.node: e for e in events if e.event == RECEIVED}
    assert set(sent) == set(received) == {11, 12, 13} and len(events) == 6
    for node, event in sent.items():
        assert (event.message_type, event.round) == ("train", "3")
        assert received[node].message_id == event.message_id  # the reply names the message it answers
        assert received[node].round == "3"  # the round of the message it answers
        assert received[node].at >= event.at
    assert received[13].at - sent[13].at >= 0.4 - 0.01


def test_a_node_that_never_answers_costs_the_timeout_not_more() -> None:
    inner = SlowNodes({11: 0.0, 12: None})
    started = time.monotonic()
    grid = PromptGrid(inner)
    replies = list(grid.send_and_receive(messages(inner, 1), timeout=0.5))
    elapsed = time.monotonic() - started
    assert [r.metadata.src_node_id for r in replies] == [11]
    assert 0.5 <= elapsed < 2.0
    assert not grid._sent  # the unanswered message is not kept


def test_a_reply_that_cannot_be_unpacked_becomes_its_sites_error_and_the_others_are_unpacked() -> None:
    class Unreadable(SlowNodes):
        """Node 12's reply is a packed record that is not a serialized record dict."""

        def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
            replies = list(super().pull_messages(message_ids))
            for reply in replies:
                reply.content = (RecordDict({PACKED_RECORD: ConfigRecord({PACKED_CONTENT_KEY: b"\xff not a record"})})
                                 if reply.metadata.src_node_id == 12 else pack(reply.content))
            return replies

    inner = Unreadable({11: 0.0, 12: 0.0})
    replies = {r.metadata.src_node_id: r for r in PromptGrid(inner).send_and_receive(messages(inner, 1), timeout=5)}
    assert replies[11].content.config_records["answer"]["node"] == 11
    assert replies[12].has_error() and replies[12].error.code == UNREADABLE_REPLY_CODE
    assert "node 12: unreadable reply" in replies[12].error.reason


def test_only_flowers_http_grid_is_wrapped_and_everything_else_is_delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.superlink.grid import http_grid

    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects)  # restored after the test
    deployed = http_grid.HttpGrid(token="t")
    assert isinstance(prompt(deployed), PromptGrid) and prompt(deployed).inner is deployed  # type: ignore[attr-defined]
    assert http_grid.pull_objects.keywords["initial_backoff"] < 1  # reply objects: Flower's first retry after 1 s
    inner = SlowNodes({21: 0.0})
    assert prompt(inner) is inner  # a simulation's or a test's grid is left as it is
    grid = PromptGrid(inner)
    assert grid.run is inner.run and list(grid.get_node_ids()) == [21]
    assert [node.node_id for node in grid.get_nodes()] == [21]
    message = grid.create_message(RecordDict(), "evaluate", 21, "2")
    assert (message.metadata.dst_node_id, message.metadata.group_id) == (21, "2")


def test_a_grid_line_round_trips_and_other_lines_are_ignored() -> None:
    line = "INFO :      grid received type=query.secagg node=42 round=7 message=ab12 at=1700000000.125"
    assert parse_grid_line(line) == GridEvent(RECEIVED, "query.secagg", 42, "7", "ab12", 1700000000.125)
    assert parse_grid_line("INFO :      [round 2/3] evaluate federation") is None


def test_each_push_notifies_the_gateway_of_its_nodes_on_the_socket_the_environment_names() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gateway:
        path = Path(folder) / "push-notice.sock"
        gateway.bind(str(path))
        gateway.settimeout(10)
        inner = SlowNodes({11: 0.0, 12: 0.0, 13: 0.0})
        grid = PromptGrid(inner, push_notifier({PUSH_NOTICE_SOCKET_ENV: str(path)}))
        list(grid.push_messages(messages(inner, 1)))
        assert decode_nodes(gateway.recv(65536)) == [11, 12, 13]
    push_notifier({})([11])  # no socket named (a simulation): nothing sent, nothing raised


def test_with_reply_notices_the_grid_pulls_when_a_reply_is_announced_not_ten_times_a_second() -> None:
    class AnnouncingNodes(SlowNodes):
        """Each node's reply is announced by the gateway's broadcast when it is due, except node 13's (a lost
        notice)."""

        def __init__(self, delays: dict[int, float | None], broadcast: ReplyBroadcast) -> None:
            super().__init__(delays)
            self.broadcast = broadcast

        def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
            ids = list(super().push_messages(messages))
            for node, delay in self.delays.items():
                if node != 13 and delay is not None:
                    threading.Timer(delay, self.broadcast.notify).start()
            return ids

    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        broadcast = ReplyBroadcast(Path(folder) / "replies")
        notices = ReplyNotices(broadcast.folder)
        inner = AnnouncingNodes({11: 0.3, 12: 0.8, 13: 0.8}, broadcast)
        started = time.monotonic()
        replies = list(PromptGrid(inner, replies=notices).send_and_receive(messages(inner, 2), timeout=60))
        elapsed = time.monotonic() - started
        notices.close()
        broadcast.close()
    assert sorted(r.metadata.src_node_id for r in replies) == [11, 12, 13]  # 13's reply too, without its notice
    assert elapsed < 0.8 + FALLBACK_PULL_S + 2.0
    without_notices = 0.8 / MAX_PULL_DELAY_S
    assert inner.pulls <= 5, f"{inner.pulls} pulls (every {MAX_PULL_DELAY_S} s: about {without_notices:.0f})"
