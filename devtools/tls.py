"""A throwaway CA and server certificates it signed, for a slapd that offers StartTLS (two
providers share one CA) and for an nginx that terminates HTTPS for several names."""
from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from .commands import run


@dataclass(frozen=True)
class Tls:
    ca: Path      # the throwaway CA's certificate (clients trust it)
    cert: Path    # the server's certificate for ``host`` (and more names), signed by the CA
    key: Path
    host: str


def make_tls(directory: Path, host: str, *more: str, ca_from: Path | None = None) -> Tls:
    """A certificate for ``host`` and ``more`` names (names or IP addresses), P-256, valid
    two days, in ``directory`` (made 0700), signed by a new CA, or by the CA of the
    directory ``ca_from`` (an earlier make_tls) so that both servers trust each other."""
    directory.mkdir(mode=0o700, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / f"{host}.pem", directory / f"{host}.key", directory / "host.csr"
    ext = directory / "host.ext"
    names = []
    for name in (host, *more):
        try:
            ipaddress.ip_address(name)
            names.append(f"IP:{name}")
        except ValueError:
            names.append(f"DNS:{name}")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    if ca_from is not None:
        shutil.copy(ca_from / "ca.pem", ca)
        shutil.copy(ca_from / "ca.key", ca_key)
    else:
        run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
            "-days", "2", "-subj", "/CN=campus-mfa test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    ext.write_text(f"subjectAltName={','.join(names)}\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return Tls(ca=ca, cert=cert, key=key, host=host)
