"""One authentication in a fresh process, as the PAM module does it: load
pam_module/pam_campus_mfa.py by path (its imports), then policy.login.login() with a
scripted conversation that types CODE. With --authd SOCKET, the module's authd path
instead: policy.authd.client.ask_authd() (what the adapter calls) asks the resident
authd at SOCKET to run the login and relays the same scripted conversation.
bench/imports.py runs this under ``-X importtime`` and, with --profile, under cProfile.

    /usr/bin/python3 -I bench/login_once.py [--profile] [--authd SOCKET] CONFIG USER RHOST CODE
"""
import importlib.util
import sys

MARK = "bench: imports start here"
MODULE = __file__.rsplit("/bench/", 1)[0] + "/pam_module/pam_campus_mfa.py"


class Scripted:
    """policy.login's Conversation: answers every prompt with the same code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def ask(self, prompt: str, digits: int = 0) -> str:
        return self.code

    def error(self, text: str) -> None:
        pass


def load_module():
    spec = importlib.util.spec_from_file_location("pam_campus_mfa", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authenticate(config_path: str, user: str, rhost: str, code: str) -> str:
    load_module()
    from policy.config import load_config
    from policy.login import login

    return login(load_config(config_path), user, rhost, "bench", Scripted(code)).outcome


def authenticate_via_authd(socket: str, config_path: str, user: str, rhost: str,
                            code: str) -> str:
    load_module()
    from policy.authd.client import ask_authd

    # The request the adapter sends: config, user, service, rhost, tty, tries, combined.
    outcome = ask_authd(socket, (config_path, user, "bench", rhost, None, "3", "0"),
                        Scripted(code))
    if outcome is None:
        raise SystemExit(f"no authd answered at {socket}")
    return outcome


def main(argv: list[str]) -> int:
    profile = argv[:1] == ["--profile"]
    args = argv[1:] if profile else argv
    run = authenticate
    if args[:1] == ["--authd"]:
        socket, args = args[1], args[2:]

        def run(*rest):
            return authenticate_via_authd(socket, *rest)
    print(MARK, file=sys.stderr, flush=True)
    if not profile:
        outcome = run(*args)
    else:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        outcome = profiler.runcall(run, *args)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(45)
    print(outcome, file=sys.stderr)
    return 0 if outcome == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
