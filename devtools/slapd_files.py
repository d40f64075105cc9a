"""The files a throwaway slapd is built from (devldap.py): its cn=config with Debian's
defaults, the example tree with real passwords, the config campus-mfa reads, and the LDIF
of a directory of a university's size."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from .tls import Tls
from .toml import dump_toml

LDAP_DIR = Path(__file__).resolve().parents[1] / "ldap"
BASE_DN = "dc=example,dc=edu"
ADMIN_DN = f"cn=admin,{BASE_DN}"
SERVICE_DN = f"cn=campus-mfa,ou=services,{BASE_DN}"
ENROLL_DN = f"cn=campus-mfa-enroll,ou=services,{BASE_DN}"
REPLICATOR_DN = f"cn=replicator,ou=services,{BASE_DN}"
PEOPLE_DN = f"ou=people,{BASE_DN}"
TOKENS_DN = f"ou=tokens,{BASE_DN}"
ROLE_GROUP_DN = f"cn=mfa-users,ou=groups,{BASE_DN}"
DEMO_USERS = (("alice", "alice-pass"), ("bob", "bob-pass"))
PLACEHOLDER = "userPassword: {SSHA}REPLACE_WITH_SLAPPASSWD_OUTPUT"


def write(path: Path, text: str, mode: int = 0o600) -> None:
    """Create ``path`` with ``mode`` before any content is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def bootstrap_ldif(root: Path, admin_password: str, tls: Tls | None) -> str:
    """cn=config for slapadd -n0: Debian's layout, default ACL and indexes
    (/usr/share/slapd/slapd.init.ldif), root's EXTERNAL manage of cn=config over ldapi, and
    paths of its own. The shipped files are applied on top (devldap.start)."""
    schemas = "".join(f"include: file:///etc/ldap/schema/{name}.ldif\n\n"
                      for name in ("core", "cosine", "nis", "inetorgperson"))
    tls_lines = (f"olcTLSCACertificateFile: {tls.ca}\nolcTLSCertificateFile: {tls.cert}\n"
                 f"olcTLSCertificateKeyFile: {tls.key}\n") if tls else ""
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
{tls_lines}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth
  manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {root / "db"}
olcSuffix: {BASE_DN}
olcRootDN: {ADMIN_DN}
olcRootPW: {admin_password}
olcDbIndex: objectClass eq
olcDbIndex: cn,uid eq
olcDbIndex: uidNumber,gidNumber eq
olcDbIndex: member,memberUid eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to attrs=shadowLastChange by self write by * read
olcAccess: {{2}}to * by * read
"""


def user_ldif(uid: str, password: str) -> str:
    return (f"dn: uid={uid},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid}\nsn: {uid}\nuserPassword: {password}\n")


def shipped_with_passwords(name: str, passwords: dict[str, str]) -> str:
    """A shipped LDIF of entries (ldap/NAME) with a real password for each placeholder."""
    records = (LDAP_DIR / name).read_text(encoding="utf-8").split("\n\n")
    out = []
    for record in records:
        for dn, password in passwords.items():
            if f"dn: {dn}\n" in record:
                record = record.replace(PLACEHOLDER, f"userPassword: {password}")
        if PLACEHOLDER in record:
            raise RuntimeError(f"{name}: a password placeholder was not replaced")
        out.append(record.strip("\n"))
    return "\n\n".join(out) + "\n"


def tree_ldif(service_password: str, enroll_password: str, members: str = "") -> str:
    """The shipped example tree with real service passwords, plus the demo users; with
    ``members`` (member lines) added to the role group."""
    tree = shipped_with_passwords("example-tree.ldif", {SERVICE_DN: service_password,
                                                        ENROLL_DN: enroll_password})
    anchor = f"dn: {ROLE_GROUP_DN}\n"
    records = tree.split("\n\n")
    tree = "\n\n".join(r.rstrip("\n") + "\n" + members if r.startswith(anchor) and members
                       else r for r in records)
    return tree.rstrip("\n") + "\n\n" + "\n".join(user_ldif(uid, pw) for uid, pw in DEMO_USERS)


def write_config(root: Path, uris: list[str], campus_networks: tuple[str, ...],
                 ca: Path | None, secrets_dir: Path | None = None, timeout: int = 3) -> Path:
    """Write DIR/campus-mfa.toml (and the site's key); validate it with load_config. The
    bind password files are those in ``secrets_dir`` (default DIR); ``timeout``:
    ldap.timeout."""
    from policy.config import load_config

    secrets_dir = secrets_dir or root
    write(root / "web.secret", secrets.token_hex(32) + "\n")
    path = root / "campus-mfa.toml"
    write(path, dump_toml({
        "ldap": {"uris": uris, "base_dn": BASE_DN, "user_base": PEOPLE_DN,
                 "user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
                 "token_base": TOKENS_DN, "role_group": ROLE_GROUP_DN,
                 "bind_dn": SERVICE_DN, "bind_password_file": str(secrets_dir / "ldap.secret"),
                 "write_bind_dn": ENROLL_DN,
                 "write_bind_password_file": str(secrets_dir / "ldap-write.secret"),
                 "timeout": timeout, "start_tls": ca is not None,
                 "ca_file": str(ca) if ca else ""},
        "policy": {"campus_networks": list(campus_networks)},
        "audit": {"syslog_socket": str(root / "syslog.sock")},
        "web": {"secret_key_file": str(root / "web.secret"),
                "session_dir": str(root / "sessions"), "cookie_secure": False}}), 0o644)
    load_config(str(path))
    return path


def bulk_secret(seed: str, n: int) -> bytes:
    """The TOTP secret of bulk user s``n``'s token: derived from the directory's own random
    ``seed`` (DIR/bulk.secret), so a test can compute any user's codes."""
    return hmac.new(seed.encode(), f"s{n}".encode(), hashlib.sha1).digest()


def bulk_ldif(users: int, members: int, tokens: int, password: str,
              seed: str) -> tuple[str, str]:
    """A directory of a university's size, for slapadd on top of the example tree:
    ``users`` people s0, s1 ... (password ``password``), the first ``tokens`` of them with a
    linked token (one params entry for all; secrets from bulk_secret); and the ``member``
    lines that put the first ``members`` of them in the role group. Returns (entries,
    member lines)."""
    from policy.directory.entries import gentime, params_attributes
    from policy.rules.totp import TotpParams

    params_dn = f"cn=totp-bulk,{TOKENS_DN}"
    params = "".join(f"{name}: {value}\n"
                     for name, value in params_attributes(TotpParams(), 10).items())
    out = [f"dn: {params_dn}\nobjectClass: device\nobjectClass: oathTOTPParams\n"
           f"cn: totp-bulk\n{params}"]
    made = gentime(0)
    for n in range(users):
        person = user_ldif(f"s{n}", password)
        if n < tokens:
            token = f"cn=bulk{n},{TOKENS_DN}"
            secret = base64.b64encode(bulk_secret(seed, n)).decode("ascii")
            out.append(f"dn: {token}\nobjectClass: device\nobjectClass: oathTOTPToken\n"
                       f"cn: bulk{n}\noathTokenIdentifier: bulk{n}\noathSecret:: {secret}\n"
                       f"oathSecretTime: {made}\noathTOTPParams: {params_dn}\n"
                       "oathTOTPLastTimeStep: 0\noathFailureCount: 0\n")
            person = person.replace("objectClass: inetOrgPerson\n",
                                    "objectClass: inetOrgPerson\nobjectClass: oathTOTPUser\n"
                                    f"oathTOTPToken: {token}\n")
        out.append(person)
    return "\n".join(out), "".join(f"member: uid=s{n},{PEOPLE_DN}\n" for n in range(members))
