"""The coordinator service: a loopback SuperLink behind a Fleet-only TLS gateway; registry sync; studies."""
