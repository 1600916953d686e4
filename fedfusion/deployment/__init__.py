"""Running fedfusion for real: the coordinator service and the site daemons around Flower's SuperLink/SuperNode.

Coordinator: ``coordinator`` (daemon) -> ``fleet_gateway`` (the only network-facing port) -> the loopback
SuperLink; ``registry_sync`` keeps its registered keys equal to the consortium registry; ``study`` submits.
Site: ``site_daemon`` -> ``flower-supernode`` + ``site_exec`` -> one ``site_worker`` per run (checks
``app_approval`` for every task) -> ``fedfusion.site.client_app``.
"""
