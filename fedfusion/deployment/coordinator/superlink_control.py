"""The operator's client of the SuperLink's Control API, on the coordinator's loopback port only.

Registering and unregistering site keys goes through here (runs are submitted with Flower's own ``flwr run``, see
``fedfusion.deployment.coordinator.study``). The Control API is never exposed to the network: the gateway refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedfusion.flower_compat import control_api_client, list_nodes, public_key_to_pem, register_node, unregister_node
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
        self._client = control_api_client(address, ca_file.read_bytes())

    def nodes(self) -> list[RegisteredNode]:
        """The registered SuperNodes (online, offline or never seen)."""
        return [RegisteredNode(node.node_id, node.name, node.public_key_pem, node.status)
                for node in list_nodes(self._client) if node.registered]

    def register(self, openssh_public_key: str, name: str) -> int:
        """Register a site's key under its name; return the SuperNode id."""
        return register_node(self._client, pem_of(openssh_public_key, name), name)

    def unregister(self, node_id: int) -> None:
        """Unregister a SuperNode: its key is refused from now on."""
        unregister_node(self._client, node_id)

    def close(self) -> None:
        """Close the HTTP connection."""
        self._client.close()


def pem_of(openssh_public_key: str, site: str) -> bytes:
    """The PEM form (what the SuperLink stores) of a site's OpenSSH public key."""
    return public_key_to_pem(parse_openssh_public_key(openssh_public_key, source=f"site {site}"))
