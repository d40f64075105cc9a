"""Two site processes, one redis (issue 14): the sessions and the rate limits are shared, so
a session signed in on one works on the other, log out on one ends it on both, and the
per-account code limit holds across both. Flask's test client drives two apps of this
process here; tests/test_gate_nginx.py runs two gunicorn behind one nginx."""
from __future__ import annotations

import pytest

from support.site import CAMPUS, OFF_CAMPUS, client_at, enroll, login, post_form, with_cookies_of

ANOTHER_OFF_CAMPUS = "203.0.113.8"


def two_sites(make_app, redis, **web):
    """Two apps with one store for sessions and limits, as two gunicorn processes."""
    settings = {"session_store": redis.session_url, "rate_limit_storage": redis.limits_url,
                **web}
    first, cfg = make_app(**settings)
    second, _ = make_app(**settings)
    return first, second, cfg


def test_a_session_made_by_one_process_is_known_to_the_other(make_app, redis, fresh_user):
    first, second, _ = two_sites(make_app, redis)
    uid, password = fresh_user()
    client = client_at(first, CAMPUS)
    assert login(client, uid, password).status_code == 302
    there = with_cookies_of(client, second)  # the same browser, the other process
    page = there.get("/user-info")
    assert page.status_code == 200 and "User Information Management" in page.get_data(True)
    post_form(there, "/logout", {}, page="/")
    assert client.get("/user-info").status_code == 302  # ended for the first one too


def test_the_code_limit_per_account_holds_across_both(make_app, redis, fresh_user):
    first, second, cfg = two_sites(make_app, redis, code_rate_limit="3 per minute")
    uid, password = fresh_user()
    codes = enroll(client_at(first, CAMPUS), cfg, uid, password)
    # One account from two addresses, one on each process: each address stays under the
    # limit, the account reaches it.
    clients = []
    for app, address in ((first, OFF_CAMPUS), (second, ANOTHER_OFF_CAMPUS)):
        off = client_at(app, address)
        assert login(off, uid, password).status_code == 302
        clients.append(off)
    answers = [post_form(clients[n % 2], "/verify", {"code": codes.wrong()}).status_code
               for n in range(4)]
    assert answers == [200, 200, 200, 429]  # three wrong codes, then refused
    assert post_form(clients[1], "/verify", {"code": codes.next()[0]}).status_code == 429


def test_a_store_that_does_not_answer_is_a_configuration_error(make_app, tmp_path):
    from policy.errors import ConfigError

    with pytest.raises(ConfigError, match=r"web\.session_store = 'unix://.*/none\.sock': no "
                                          r"answer: No such file or directory"):
        make_app(session_store=f"unix://{tmp_path}/none.sock")
