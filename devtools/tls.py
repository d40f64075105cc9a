"""A throwaway CA and a server certificate it signed, for a slapd that offers StartTLS and
for an nginx that terminates HTTPS."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .commands import run


@dataclass(frozen=True)
class Tls:
    ca: Path      # the throwaway CA's certificate (clients trust it)
    cert: Path    # the server's certificate for ``host``, signed by the CA
    key: Path
    host: str


def make_tls(directory: Path, host: str) -> Tls:
    """A CA and a certificate for ``host`` (a name, or an IP address), P-256, valid two days,
    in ``directory`` (made 0700)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / f"{host}.pem", directory / f"{host}.key", directory / "host.csr"
    ext = directory / "host.ext"
    try:
        ipaddress.ip_address(host)
        san = f"IP:{host}"
    except ValueError:
        san = f"DNS:{host}"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=campus-mfa test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return Tls(ca=ca, cert=cert, key=key, host=host)
