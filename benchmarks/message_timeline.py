"""Where a deployed message's time goes, from the coordinator's and the sites' log lines (deployment_overhead.py).

The coordinator's grid logs each message it sent and each reply it received with its time
(``fedfusion.coordinator.prompt_grid``); a site logs, per message, a ``timeline`` line (logger
``fedfusion.site.worker``) with the times its SuperExec acquired the task, its worker started it, had the message in
hand (pulled), had the ClientApp's answer (handled) and had pushed the reply. Matched per message (same site and
type, the site's span inside the coordinator's round trip), they give, per message type, the mean over rounds and
sites of:

- queue wait: coordinator sent -> site acquired (the SuperNode's pull interval, the SuperExec's poll);
- process start: acquired -> started; pull: started -> pulled; handler: pulled -> handled;
- reply: handled -> coordinator received (push, the SuperLink, the coordinator's pull interval);
- round trip: sent -> received (from the coordinator's lines alone, also without site lines);
- slowest round trip: per round, the slowest site's round trip, averaged over rounds (what a round waits).

The three ``query.secagg`` messages of a round are told apart by their order: share keys, masked input, unmask.
All processes run on one host in the benchmark, so their clocks agree.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import mean
from typing import Any

from fedfusion.coordinator.prompt_grid import RECEIVED, SENT, GridEvent, parse_grid_line
from fedfusion.coordinator.secure_stages import MESSAGE_TYPE as SECAGG_MESSAGE_TYPE
from fedfusion.flower_compat import SUPERNODE_ID_LOG_TEXT
from fedfusion.protocol import STAGE_MASKED_INPUT, STAGE_SHARE_KEYS, STAGE_UNMASK

SITE_TIMELINE = re.compile(r"timeline task=(?P<task>\d+) run=(?P<run>\d+) type=(?P<type>\S+) "
                           r"acquired=(?P<acquired>[\d.]+) started=(?P<started>[\d.]+) pulled=(?P<pulled>[\d.]+) "
                           r"handled=(?P<handled>[\d.]+) pushed=(?P<pushed>[\d.]+)")
SECAGG_STAGES = (STAGE_SHARE_KEYS, STAGE_MASKED_INPUT, STAGE_UNMASK)
SEGMENTS = ("queue_wait", "process_start", "pull", "handler", "reply")
CLOCK_SLACK_S = 0.05
"""Slack for the clocks of the processes (all on one host). A span is matched from the coordinator's push start
(``at`` of its ``sent`` line) to the reply's arrival, by the site's ``acquired`` and ``handled``: the coordinator may
get the reply before the worker has ended the task (``pushed``)."""


@dataclass(frozen=True)
class SiteSpan:
    """One ``timeline`` line of a site."""

    message_type: str
    acquired: float
    started: float
    pulled: float
    handled: float
    pushed: float


def node_ids(supernode_log: str) -> list[int]:
    """Every node id a site's SuperNode log names (one per start)."""
    return [int(n) for n in re.findall(re.escape(SUPERNODE_ID_LOG_TEXT) + r"(\d+)", supernode_log)]


def site_spans(log_text: str) -> list[SiteSpan]:
    """The ``timeline`` lines in a site's log text, by the time the task was acquired."""
    spans = [SiteSpan(m["type"], *(float(m[k]) for k in ("acquired", "started", "pulled", "handled", "pushed")))
             for m in SITE_TIMELINE.finditer(log_text)]
    return sorted(spans, key=lambda span: span.acquired)


def message_timeline(coordinator_lines: Iterable[str], site_of_node: Mapping[int, str],
                     spans_of_site: Mapping[str, list[SiteSpan]], rounds: Iterable[int]) -> dict[str, Any]:
    """Per message type: the mean segments (see the module docstring) over the messages of ``rounds``."""
    events = [e for line in coordinator_lines if (e := parse_grid_line(line)) is not None]
    wanted = {str(r) for r in rounds}
    received = {e.message_id: e for e in events if e.event == RECEIVED}
    sent = sorted((e for e in events if e.event == SENT and e.round in wanted and e.message_id in received),
                  key=lambda e: e.at)
    used: set[tuple[str, int]] = set()
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    slowest: dict[tuple[str, str], float] = {}
    for label, message in _labelled(sent):
        reply = received[message.message_id]
        row = {"round_trip": reply.at - message.at}
        site = site_of_node.get(message.node)
        span = _span_of(message, reply, spans_of_site.get(site, []) if site else [], site, used)
        if span is not None:
            row.update(queue_wait=span.acquired - message.at, process_start=span.started - span.acquired,
                       pull=span.pulled - span.started, handler=span.handled - span.pulled,
                       reply=reply.at - span.handled)
        rows[label].append(row)
        key = (label, message.round)
        slowest[key] = max(slowest.get(key, 0.0), row["round_trip"])
    table: dict[str, Any] = {}
    for label, label_rows in rows.items():
        timed = [r for r in label_rows if "handler" in r]
        table[label] = {
            "messages": len(label_rows), "with_site_timeline": len(timed),
            "round_trip_s": mean(r["round_trip"] for r in label_rows),
            "slowest_round_trip_s": mean(v for (lbl, _), v in slowest.items() if lbl == label),
            **{f"{segment}_s": (mean(r[segment] for r in timed) if timed else None) for segment in SEGMENTS},
        }
    return {"site_timeline": any(v["with_site_timeline"] for v in table.values()), "per_message": table}


def format_timeline(timeline: Mapping[str, Any]) -> str:
    """The timeline as a text table (seconds)."""
    columns = ("round_trip_s", "slowest_round_trip_s", *(f"{s}_s" for s in SEGMENTS))
    names = ("round trip", "slowest site", *(s.replace("_", " ") for s in SEGMENTS))
    header = f"{'message':<26}{'n':>4}" + "".join(f"{name:>15}" for name in names)
    lines = [header]
    for label, row in timeline["per_message"].items():
        cells = "".join(f"{'-' if row[c] is None else format(row[c], '.3f'):>15}" for c in columns)
        lines.append(f"{label:<26}{row['messages']:>4}{cells}")
    if not timeline["site_timeline"]:
        lines.append("no site timeline (the sites logged no `timeline` lines): coordinator round trips only")
    return "\n".join(lines)


def _labelled(sent: list[GridEvent]) -> Iterable[tuple[str, GridEvent]]:
    """Each message with its label: its type, or for a secure-aggregation stage, the stage by its order."""
    stage_count: dict[tuple[int, str], int] = defaultdict(int)
    for message in sent:
        label = message.message_type
        if label == SECAGG_MESSAGE_TYPE:
            index = stage_count[(message.node, message.round)]
            stage_count[(message.node, message.round)] += 1
            label = f"{label} {SECAGG_STAGES[index] if index < len(SECAGG_STAGES) else index + 1}"
        yield label, message


def _span_of(message: GridEvent, reply: GridEvent, spans: list[SiteSpan], site: str | None,
             used: set[tuple[str, int]]) -> SiteSpan | None:
    """The site's first unused span of the message's type that lies inside its round trip."""
    for index, span in enumerate(spans):
        if ((str(site), index) not in used and span.message_type == message.message_type
                and message.at - CLOCK_SLACK_S <= span.acquired and span.handled <= reply.at + CLOCK_SLACK_S):
            used.add((str(site), index))
            return span
    return None
