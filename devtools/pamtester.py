"""pamtester, the PAM client the tests and the benchmark drive the module with (python-pam
cannot load a stack that holds pam_python.so in its own process)."""
from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass

from policy.messages import PROMPT as CODE_PROMPT

# pamtester's result line, in its words.
SUCCESS = "pamtester: successfully authenticated"
AUTH_ERR = "pamtester: Authentication failure"
UNAVAIL = "pamtester: Authentication service cannot retrieve authentication info"


@dataclass(frozen=True)
class PamRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def verdict(self) -> str:
        """pamtester's one result line: the PAM result in words."""
        found = re.findall(r"pamtester: [^\n]*", self.output)
        assert len(found) == 1, self.output
        return found[0]

    @property
    def prompts(self) -> int:
        return self.stderr.count(CODE_PROMPT)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def pamtester_args(service: str, user: str, rhost: str | None,
                   operation: str = "authenticate") -> list[str]:
    args = ["pamtester"]
    if rhost is not None:
        args += ["-I", f"rhost={rhost}"]
    return [*args, service, user, operation]


def clean_env(**extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def run_pamtester(service: str, user: str, rhost: str | None, answers: list[str] = (),
                  *, env: dict[str, str] | None = None, operation: str = "authenticate",
                  timeout: float = 30) -> PamRun:
    started = time.monotonic()
    done = subprocess.run(pamtester_args(service, user, rhost, operation),
                          input="".join(a + "\n" for a in answers), capture_output=True,
                          text=True, env=env or clean_env(), timeout=timeout, check=False)
    return PamRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
