"""Provisioning of a consortium: CA, coordinator TLS certificate, site authentication keys, key registry.

Modules, one job each:

    key_files.py     write PEM/OpenSSH files atomically, private keys with mode 0600
    ca.py            the consortium's certificate authority (key + self-signed certificate)
    certificates.py  the coordinator's TLS server certificate, signed by the CA
    site_keys.py     a site's SuperNode-authentication key pair (EC P-384, OpenSSH public key)
    registry.py      ``registry.json``: coordinator address and every site key's fingerprint and status
    site_bundle.py   ``sites/<site>/``: what is handed to one site
    consortium.py    the operator's actions: init, add-site, rotate, revoke
"""
