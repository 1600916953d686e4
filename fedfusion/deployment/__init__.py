"""Running fedfusion for real: the coordinator service and the site daemons around Flower's SuperLink/SuperNode.

Coordinator: ``coordinator`` (daemon) -> ``fleet_gateway`` (the only network-facing port) -> the loopback
SuperLink; ``registry_sync`` keeps its registered keys equal to the consortium registry; ``study`` submits.
Site: ``site_daemon`` -> ``flower-supernode`` + ``site_exec`` -> ``app_gate`` (checks ``app_approval``) ->
Flower's ClientApp process -> ``fedfusion.site.client_app``.
"""
