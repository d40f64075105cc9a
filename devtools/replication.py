"""Two throwaway OpenLDAP providers that replicate each other, built from the shipped files
the way docs/ldap-servers.md tells an admin: the first set up as usual (devldap.start) with
the replication DN of ldap/replication/replicator.ldif, the second loaded from the first
(slapcat, slapadd -w) with a certificate from the same CA, and ldap/replication/
providers.ldif applied, the same file, on both (the second first). Used by
tests/test_replication.py."""
from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import ldap3

from . import devldap
from .slapd_files import LDAP_DIR, REPLICATOR_DN, shipped_with_passwords, write_config

CONVERGE_TIMEOUT = 60.0


@dataclass
class Pair:
    """The two providers (handles change when one restarts) and a campus-mfa.toml that lists
    both, in the same order as every host would."""

    dir: Path
    providers: list[devldap.DevLdap] = field(default_factory=list)
    config_path: str = ""

    @property
    def uris(self) -> list[str]:
        return [provider.uri for provider in self.providers]

    def admin(self, n: int) -> ldap3.Connection:
        """The rootdn's connection to provider ``n`` (0 or 1), past every ACL."""
        return devldap.admin_connection(self.providers[n])

    def read(self, n: int, dn: str, *attributes: str) -> dict[str, list[str]]:
        """An entry's attributes as provider ``n`` holds them now."""
        conn = self.admin(n)
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=list(attributes))
            raw = conn.response[0]["raw_attributes"]
            return {name: [v.decode() for v in raw.get(name, [])] for name in attributes}
        finally:
            conn.unbind()

    def context_csns(self, n: int) -> list[str]:
        return sorted(self.read(n, devldap.BASE_DN, "contextCSN")["contextCSN"])

    def converged(self, timeout: float = CONVERGE_TIMEOUT) -> float:
        """Wait until both providers hold the same contextCSN; how long that took."""
        started = time.monotonic()
        while True:
            try:
                if self.context_csns(0) == self.context_csns(1):
                    return time.monotonic() - started
            except ldap3.core.exceptions.LDAPException:
                pass  # a provider that is just coming back
            if time.monotonic() - started > timeout:
                raise AssertionError(f"the providers did not converge in {timeout} s: "
                                     f"{self.context_csns(0)} / {self.context_csns(1)}")
            time.sleep(0.05)


def start_pair(dir: str, campus_networks: tuple[str, ...] = devldap.CAMPUS,
               timeout: int = 2) -> Pair:
    """Both providers running and replicating, and the config (ldap.timeout ``timeout``)."""
    pair = Pair(Path(dir))
    try:
        first = devldap.start(str(pair.dir / "p1"), devldap.free_port(), campus_networks,
                              tls=True, debug="sync")
        pair.providers.append(first)
        password = secrets.token_urlsafe(18)
        conn = devldap.admin_connection(first)
        try:
            records = shipped_with_passwords("replication/replicator.ldif",
                                             {REPLICATOR_DN: password})
            attributes = _entry(records)
            assert conn.add(REPLICATOR_DN, attributes=attributes), conn.result
        finally:
            conn.unbind()
        pair.providers.append(devldap.start(str(pair.dir / "p2"), devldap.free_port(),
                                            campus_networks, tls=True, clone_of=first,
                                            debug="sync"))
        ca = Path(first.dir) / "tls" / "ca.pem"
        text = (LDAP_DIR / "replication" / "providers.ldif").read_text(encoding="utf-8")
        for old, new in (("PROVIDER1_URI", first.uri),
                         ("PROVIDER2_URI", pair.providers[1].uri),
                         ("REPLICATOR_PASSWORD", password),
                         ("/etc/ldap/tls/ca.pem", str(ca))):
            assert old in text, old
            text = text.replace(old, new)
        for provider in reversed(pair.providers):  # the second first, as documented
            devldap.apply_ldif(provider, text)
        config = write_config(pair.dir, pair.uris, tuple(campus_networks), ca,
                              secrets_dir=Path(first.dir), timeout=timeout)
        pair.config_path = str(config)
        _replicating(pair)
        return pair
    except BaseException:
        stop_pair(pair)
        raise


def _entry(ldif: str) -> dict[str, list[str]]:
    """The attributes of the one entry in ``ldif`` (comments and the dn line left out)."""
    attributes: dict[str, list[str]] = {}
    for line in ldif.splitlines():
        if line and not line.startswith(("#", "dn:")):
            name, _, value = line.partition(": ")
            attributes.setdefault(name, []).append(value)
    return attributes


def _replicating(pair: Pair) -> None:
    """A change on each provider reaches the other (both syncrepl sessions are up)."""
    for writer in (0, 1):
        marker = f"from {writer} at {time.time()}"
        conn = pair.admin(writer)
        try:
            assert conn.modify(pair.providers[writer].base_dn,
                               {"description": [(ldap3.MODIFY_REPLACE, [marker])]}), conn.result
        finally:
            conn.unbind()
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while pair.read(1 - writer, devldap.BASE_DN, "description")["description"] != [marker]:
            if time.monotonic() > deadline:
                raise AssertionError(f"provider {writer + 1}'s change did not reach the other")
            time.sleep(0.05)


def restart(pair: Pair, n: int, how: int) -> None:
    """Provider ``n`` stopped by ``how`` (SIGTERM, SIGKILL) and started again."""
    pair.providers[n] = devldap.restart(pair.providers[n], how)


def stop_pair(pair: Pair, keep_logs: Path | None = None) -> None:
    """Stop both; with ``keep_logs``, their slapd.log (replication's debug lines) is copied
    there first as provider1-slapd.log, provider2-slapd.log."""
    for n, provider in enumerate(pair.providers, 1):
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(provider.dir) / "slapd.log",
                            keep_logs / f"provider{n}-slapd.log")
        devldap.stop(provider.dir)
    shutil.rmtree(pair.dir, ignore_errors=True)
