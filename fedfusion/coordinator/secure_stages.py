"""The coordinator's side of SecAgg+ on Flower's Message API: stages 2-4 as ``query.secagg`` round trips.

`secure_round` starts from the train replies (each carrying a site's stage-1 public keys), drives
`SecAggServer` through share-keys, masked-input and unmask with ``grid.send_and_receive``, and returns the
patient-weighted average of the sites' updates. A site that does not answer a stage, or answers with an error,
is a dropout from then on; fewer than the threshold at any stage raises `PrivacyError` and nothing is unmasked.
A site whose answer is unreadable or fails one of `SecAggServer`'s integrity checks (weight above the study's cap,
bad keys, bad masked words, a masked input of another round, an altered share) is dropped the same way and
logged with its name and the reason; the round goes on without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedfusion.errors import PrivacyError, ProtocolError
from fedfusion.flower_compat import FLOWER_LOGGER
from fedfusion.protocol import CONFIG_RECORD, SECAGG_MESSAGE_TYPE, SECAGG_RECORD, SERVER_ROUND_KEY
from fedfusion.secure_aggregation.config import SecAggConfig
from fedfusion.secure_aggregation.integer_noise import DistributedNoise
from fedfusion.secure_aggregation.messages import SecureAverage
from fedfusion.secure_aggregation.quantize import Layout
from fedfusion.secure_aggregation.server import SecAggServer
from fedfusion.secure_aggregation.wire_records import (
    masked_input_request,
    read_encrypted_shares,
    read_masked_input,
    read_public_keys,
    read_unmask_shares,
    share_keys_request,
    unmask_request,
)

MESSAGE_TYPE = SECAGG_MESSAGE_TYPE
logger = FLOWER_LOGGER
"""Flower's ``flwr`` logger: these warnings reach the study's console and, in deployment, ``flwr log``."""


class FromSite(Protocol):
    """A stage answer: it names the site that sent it."""

    @property
    def site_id(self) -> int:
        """The sending site's id in the round."""


Parsed = TypeVar("Parsed", bound=FromSite)


class StageRunner:
    """Sends one stage's requests to the sites; keeps the well-formed answers from the site each was sent to."""

    def __init__(self, grid: Grid, server_round: int, node_of_site: Mapping[int, int], timeout: float,
                 site_names: Mapping[int, str]) -> None:
        self.grid = grid
        self.server_round = server_round
        self.node_of_site = dict(node_of_site)
        self.timeout = timeout
        self._names = {node: site_names.get(site, f"#{site}") for site, node in node_of_site.items()}

    def name(self, node: int) -> str:
        """``site NAME (node N)``: how the log names the site on ``node``."""
        return f"site {self._names.get(node, '?')} (node {node})"

    def ask(self, requests: Mapping[int, ConfigRecord], parse: Callable[[RecordDict], Parsed]) -> list[Parsed]:
        """Send each site its request; return the parsed answers (see `accept`)."""
        messages = [
            Message(RecordDict({SECAGG_RECORD: record,
                                CONFIG_RECORD: ConfigRecord({SERVER_ROUND_KEY: self.server_round})}),
                    dst_node_id=self.node_of_site[site], message_type=MESSAGE_TYPE)
            for site, record in requests.items()
        ]
        return self.accept(self.grid.send_and_receive(messages, timeout=self.timeout), parse)

    def accept(self, replies: Iterable[Message], parse: Callable[[RecordDict], Parsed]) -> list[Parsed]:
        """The parsed replies without error that ``parse`` can read and whose site id is their sender's.

        Any other reply is logged and its site counts as dropped out from this stage on.
        """
        accepted = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                logger.warning("secure aggregation, round %s: %s answered with an error: %s", self.server_round,
                    self.name(node), reply.error.reason)
                continue
            try:
                parsed = parse(reply.content)
            except (ProtocolError, PrivacyError, KeyError, TypeError, ValueError) as exc:
                logger.warning("secure aggregation, round %s: %s dropped: it sent an unreadable answer (%s: %s)",
                    self.server_round, self.name(node), type(exc).__name__, exc)
                continue
            site = parsed.site_id
            if self.node_of_site.get(site) != node:
                logger.warning("secure aggregation, round %s: %s dropped: it answered for site %r",
                    self.server_round, self.name(node), site)
                continue
            accepted.append(parsed)
        return accepted


@dataclass(frozen=True)
class RoundChecks:
    """What the coordinator checks a secure round's answers against: the study's weight cap, the global model's
    layout, the digests of the study's earlier masked inputs (one set per study, grown each round) and the sites'
    names (for the log)."""

    max_weight: int
    layout: Layout
    seen_inputs: set[bytes]
    site_names: Mapping[int, str]


def secure_round(
    grid: Grid, server_round: int, config: SecAggConfig, node_of_site: Mapping[int, int],
    train_replies: Iterable[Message], timeout: float, checks: RoundChecks, noise: DistributedNoise | None = None,
) -> SecureAverage:
    """Run stages 2-4 after the train replies; return the weighted average of the surviving sites' updates.

    ``node_of_site`` maps each site id given in the train messages to its Flower node id. With ``noise`` (a
    distributed-DP round) it returns the noisy sum of the survivors' clipped gradient sums instead, and sends no
    unmask request unless at least n - t sites sent their masked input. Each site dropped by a check is logged,
    also when the round then fails.
    """
    stages = StageRunner(grid, server_round, node_of_site, timeout, checks.site_names)
    server = SecAggServer(config, max_weight=checks.max_weight, layout=checks.layout,
                          seen_inputs=checks.seen_inputs)
    try:
        keys = server.collect_public_keys(stages.accept(train_replies, read_public_keys))

        broadcast = share_keys_request(keys)
        routed = server.route_shares(stages.ask({site: broadcast for site in keys}, read_encrypted_shares))

        masked = stages.ask({site: masked_input_request(ciphertexts) for site, ciphertexts in routed.items()},
                            read_masked_input)
        request = server.collect_masked_inputs(masked)
        if noise is not None:
            server.require_noise_shares(noise)

        query = unmask_request(request)
        answers = stages.ask({site: query for site in request.survivors}, read_unmask_shares)
        return server.aggregate(answers) if noise is None else server.noisy_sum(answers, noise)
    finally:
        for site, reason in server.rejected.items():
            logger.warning("secure aggregation, round %s: %s dropped: it %s", server_round,
                           stages.name(node_of_site[site]), reason)
