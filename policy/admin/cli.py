"""campus-mfa: the helpdesk's and the sysadmin's command line.

Exit codes: 0 done; 1 refused (no such user, nothing to do, a doctor check failed);
2 usage; 3 configuration error; 4 directory error.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Callable

from ..config import DEFAULT_PATH, Config, load_config
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..directory.service import ServiceDirectory
    from ..rules.state import UserState

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_CONFIG, EXIT_DIRECTORY = 0, 1, 2, 3, 4


class Refused(Exception):
    """The command cannot do what was asked; the message says why."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..errors import DirectoryError, UserNotFound

    try:
        config = load_config(args.config)
        return args.command(config, args)
    except ConfigError as err:
        print(f"campus-mfa: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except UserNotFound as err:
        print(f"campus-mfa: {args.user}: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except Refused as err:
        print(f"campus-mfa: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except DirectoryError as err:
        print(f"campus-mfa: directory error: {err}", file=sys.stderr)
        return EXIT_DIRECTORY


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campus-mfa", description="Off-campus 2-step verification: admin commands.")
    parser.add_argument("--config", default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, function: Callable, help_: str, user: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(command=function, user=None)
        if user:
            sub.add_argument("user")
        return sub

    check = command("check", cmd_check, "what a login of USER from ADDRESS would meet "
                    "(the PAM module's own decision, directory included)")
    check.add_argument("--from", dest="address", required=True, metavar="ADDRESS",
                       help="the source address as PAM_RHOST would carry it ('' for none: "
                            "a login whose session is unknown, off campus)")
    check.add_argument("--service", default="sshd",
                       help="PAM service name (default sshd); it does not change the decision")
    command("status", cmd_status, "show USER's role, 2-step verification and failures")
    command("grant-role", cmd_grant_role, "give USER the Multifactor Authentication role")
    command("revoke-role", cmd_revoke_role, "take the role away (the token stays)")
    command("reset", cmd_reset, "remove USER's token: 2-step verification Off (lost phone)")
    command("unlock", cmd_unlock, "clear USER's failure counter and back-off")
    imp = command("import", cmd_import, "create and link a token from an existing secret "
                  "(migration, e.g. from google-authenticator files)")
    imp.add_argument("--secret", required=True, metavar="BASE32",
                     help="the secret in base32, or - to read it from standard input")
    purge = command("purge-pending", cmd_purge_pending, "delete set-ups never confirmed "
                    "(tokens no user links to)", user=False)
    purge.add_argument("--older-than", type=float, default=24, metavar="HOURS",
                       help="only tokens made at least this long ago (default 24)")
    doctor = command("doctor", cmd_doctor, "check the configuration, the directory, the "
                     "schema and the ACL", user=False)
    doctor.add_argument("--test-user", metavar="USER", help="also bind as USER (password "
                        "from standard input) and check that USER cannot read any token")
    return parser


def _directory(config: Config, write: bool = False):
    """The enrollment DN's connection for changes, the service DN's for reading."""
    if write:
        from ..directory.enrollment import EnrollmentDirectory

        return EnrollmentDirectory(config.ldap)
    from ..directory.service import ServiceDirectory

    return ServiceDirectory(config.ldap)


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from ..login import check

    evaluation = check(config, args.user, args.address)
    print(f"{evaluation.decision.outcome}: {evaluation.decision.reason}")
    return EXIT_OK


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from ..rules.verify import backoff_until, stricter

    with _directory(config) as directory:
        state = directory.read_state(args.user, (config.ldap.role_group,))
    token = state.token and stricter(state.token, config.totp)
    print(f"user: {state.username} ({state.dn})")
    print(f"Multifactor Authentication role: {'yes' if state.in_group(config.ldap.role_group) else 'no'}")
    print(f"2-step verification: {'On' if token else 'Off'}")
    if token:
        until = backoff_until(token)
        print(f"token: {token.dn}")
        print(f"consecutive failures: {token.failures} of {token.max_failures}")
        if token.failures >= token.max_failures:
            print("locked: yes (campus-mfa unlock)")
        elif until is not None and until > time.time():
            print(f"back-off until: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(until))}")
    return EXIT_OK


def cmd_grant_role(config: Config, args: argparse.Namespace) -> int:
    return _set_role(config, args.user, True)


def cmd_revoke_role(config: Config, args: argparse.Namespace) -> int:
    return _set_role(config, args.user, False)


def _set_role(config: Config, user: str, member: bool) -> int:
    with _directory(config, write=True) as directory:
        dn, _ = directory.find_user(user)
        directory.set_role(dn, member)
    print(f"{user}: Multifactor Authentication role {'granted' if member else 'revoked'}")
    return EXIT_OK


def _with_token(directory: ServiceDirectory, user: str, refusal: str) -> UserState:
    """``user``'s state, which has a linked token; Refused(``refusal``) if it has none."""
    state = directory.read_state(user)
    if state.token is None:
        raise Refused(f"{user}: {refusal}")
    return state


def cmd_reset(config: Config, args: argparse.Namespace) -> int:
    with _directory(config, write=True) as directory:
        directory.unlink_token(_with_token(directory, args.user,
                                           "2-step verification is already Off"))
    print(f"{args.user}: token removed, 2-step verification Off")
    return EXIT_OK


def cmd_unlock(config: Config, args: argparse.Namespace) -> int:
    with _directory(config, write=True) as directory:
        state = _with_token(directory, args.user,
                            "2-step verification is Off; nothing to unlock")
        directory.reset_failures(state.token.dn)  # type: ignore[union-attr]
    print(f"{args.user}: unlocked")
    return EXIT_OK


def cmd_import(config: Config, args: argparse.Namespace) -> int:
    from ..rules.totp import from_base32

    text = sys.stdin.readline() if args.secret == "-" else args.secret
    try:
        secret = from_base32(text)
    except ValueError as err:
        raise Refused(f"--secret: {err}") from None
    totp = config.totp
    params = totp.new_token_params()
    with _directory(config, write=True) as directory:
        state = directory.read_state(args.user)
        if state.token is not None:
            raise Refused(f"{args.user}: already has a token; run 'campus-mfa reset' first")
        token_dn = directory.create_pending_token(secret, params, totp.max_failures, time.time())
        directory.link_token(state, token_dn, 0)
    print(f"{args.user}: token imported, 2-step verification On")
    return EXIT_OK


def cmd_purge_pending(config: Config, args: argparse.Namespace) -> int:
    with _directory(config, write=True) as directory:
        stale = directory.stale_pending_tokens(time.time() - args.older_than * 3600)
        for dn in stale:
            directory.delete_token(dn)
    print(f"{len(stale)} unconfirmed token(s) deleted")
    return EXIT_OK


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    from .doctor import FAIL, run_checks

    password = sys.stdin.readline().rstrip("\n") if args.test_user else None
    failed = 0
    for status, line in run_checks(config, args.test_user, password):
        print(f"{status:4} {line}")
        failed += status == FAIL
    return EXIT_OK if failed == 0 else EXIT_REFUSED
