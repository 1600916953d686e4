"""The coordinator service: loopback SuperLink behind a Fleet-only TLS gateway, registry sync, study submission and resume."""
