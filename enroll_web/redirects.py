"""Where the portal may send a browser after sign-in: ``rd``, the protected page the user
asked for, only when it names a host of ``web.protected_hosts`` (or the portal itself)
over https. Anything else, however it is spelled, goes to the portal's home page.

The check parses once and rebuilds the URL from the parts it checked, so a browser cannot
read the string the portal returns differently from the way it was checked."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

from policy.config import WebConfig
from policy.config_rules import is_host_name, portal_host

MAX_URL = 2048


def safe_destination(rd: str | None, web: WebConfig) -> str | None:
    """``rd`` rebuilt from its checked parts if the gate may send a browser there, else
    None: https (http only to a loopback address), no user name or password, the default
    port, a host listed in web.protected_hosts (``.example.edu``: any name under it) or
    the portal's own, written plainly (no trailing dot, escape or backslash)."""
    if not rd or len(rd) > MAX_URL or not rd.isascii() or "\\" in rd:
        return None
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in rd):
        return None
    try:
        parts = urlsplit(rd)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if "@" in parts.netloc:  # a user name or password, or a host hidden behind one
        return None
    if parts.scheme == "https":
        if port not in (None, 443):
            return None
    elif parts.scheme != "http" or not _loopback(host) or port is None:
        return None
    if parts.path and not parts.path.startswith("/"):
        return None
    if not _allowed(host, web):
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and parts.scheme == "http":
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def _allowed(host: str, web: WebConfig) -> bool:
    if not (is_host_name(host) or _loopback(host)):
        return False
    if web.portal_url and host == portal_host(web.portal_url):
        return True
    return any(host.endswith(entry) if entry.startswith(".") else host == entry
               for entry in web.protected_hosts)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def form_targets(web: WebConfig) -> list[str]:
    """The CSP ``form-action`` sources besides 'self': the protected hosts. A browser applies
    form-action to the redirects that follow a form, so without them the sign-in's last
    step (to the page the user asked for) would be blocked."""
    sources = []
    for entry in web.protected_hosts:
        if entry.startswith("."):
            sources.append(f"https://*{entry}")
        else:
            sources.append(f"https://{entry}")
            if _loopback(entry):  # the demo's share: http, any port
                sources.append(f"http://{entry}:*")
    return sources
