"""The operator's client of the SuperLink's Control API, on the coordinator's loopback port only.

Registering and unregistering site keys goes through here (runs are submitted with Flower's own ``flwr run``, see
``fedfusion.deployment.coordinator.study``). The Control API is never exposed to the network: the gateway refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flwr.proto.control_pb2 import (  # pylint: disable=E0611
    ListNodesRequest,
    RegisterNodeRequest,
    UnregisterNodeRequest,
)
from flwr.supercore.constant import NodeStatus
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.primitives.asymmetric import public_key_to_bytes

from fedfusion.provisioning.site_keys import parse_openssh_public_key


@dataclass(frozen=True)
class RegisteredNode:
    """A SuperNode the SuperLink knows (not unregistered)."""

    node_id: int
    name: str
    public_key_pem: bytes
    status: str


class SuperLinkControl:
    """Control API calls to the loopback SuperLink at ``address``, TLS verified with ``ca_file``."""

    def __init__(self, address: str, ca_file: Path) -> None:
        self._client = ControlHttpClient.from_server_address(
            server_address=address, insecure=False, root_certificates=ca_file.read_bytes(),
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
        )

    def nodes(self) -> list[RegisteredNode]:
        """The registered SuperNodes (online, offline or never seen)."""
        response = self._client.ListNodes(ListNodesRequest())
        return [RegisteredNode(node.node_id, node.name, bytes(node.public_key), node.status)
                for node in response.nodes_info if node.status != NodeStatus.UNREGISTERED]

    def register(self, openssh_public_key: str, name: str) -> int:
        """Register a site's key under its name; return the SuperNode id."""
        response = self._client.RegisterNode(RegisterNodeRequest(public_key=pem_of(openssh_public_key, name),
                                                                 name=name))
        return int(response.node_id)

    def unregister(self, node_id: int) -> None:
        """Unregister a SuperNode: its key is refused from now on."""
        self._client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def close(self) -> None:
        """Close the HTTP connection."""
        self._client.close()


def pem_of(openssh_public_key: str, site: str) -> bytes:
    """The PEM form (what the SuperLink stores) of a site's OpenSSH public key."""
    return public_key_to_bytes(parse_openssh_public_key(openssh_public_key, source=f"site {site}"))
