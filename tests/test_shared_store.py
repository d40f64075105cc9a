"""Two site processes, one redis (issue 14): the sessions and the rate limits are shared, so
a session signed in on one works on the other, log out on one ends it on both, and the
per-account code limit holds across both. Flask's test client drives two apps of this
process here; tests/test_gate_nginx.py runs two gunicorn behind one nginx."""
from __future__ import annotations

import pytest

from support.site import CAMPUS, OFF_CAMPUS, client_at, enroll, login, post_form


def two_sites(make_app, redis, **web):
    """Two apps with one store for sessions and limits, as two gunicorn processes."""
    settings = {"session_store": redis.session_url, "rate_limit_storage": redis.limits_url,
                **web}
    first, cfg = make_app(**settings)
    second, _ = make_app(**settings)
    return first, second, cfg


def move(client, app):
    """The same browser (its cookies), now answered by the other process."""
    other = client_at(app, client.environ_base["REMOTE_ADDR"])
    for cookie in client.cookie_jar:
        other.set_cookie(cookie.domain.lstrip(".") or "localhost", cookie.name, cookie.value)
    return other


def test_a_session_made_by_one_process_is_known_to_the_other(make_app, redis, fresh_user):
    first, second, _ = two_sites(make_app, redis)
    uid, password = fresh_user()
    client = client_at(first, CAMPUS)
    assert login(client, uid, password).status_code == 302
    there = move(client, second)
    page = there.get("/user-info")
    assert page.status_code == 200 and "User Information Management" in page.get_data(True)
    post_form(there, "/logout", {}, page="/")
    assert client.get("/user-info").status_code == 302  # ended for the first one too


def test_the_code_limit_per_account_holds_across_both(make_app, redis, fresh_user):
    first, second, cfg = two_sites(make_app, redis, code_rate_limit="3 per minute")
    uid, password = fresh_user()
    codes = enroll(client_at(first, CAMPUS), cfg, uid, password)
    clients = []
    for app in (first, second):
        off = client_at(app, OFF_CAMPUS)
        login(off, uid, password)
        clients.append(off)
    answers = [post_form(clients[n % 2], "/verify", {"code": codes.wrong()}).status_code
               for n in range(4)]
    assert answers == [200, 200, 200, 429]  # three wrong codes, one on each, then refused
    assert post_form(clients[1], "/verify", {"code": codes.next()[0]}).status_code == 429


def test_a_store_that_does_not_answer_is_a_configuration_error(make_app, tmp_path):
    from policy.errors import ConfigError

    with pytest.raises(ConfigError, match=r"web\.session_store = 'unix://.*/none\.sock': no "
                                          r"answer: No such file or directory"):
        make_app(session_store=f"unix://{tmp_path}/none.sock")
