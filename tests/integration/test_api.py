"""herald-api over real HTTP (SPEC §9): bearer tokens (heraldctl token
create/list/revoke; only hashes in Redis), org scoping (404 outside it, as
for an unknown id), the list of §6.2 with cursor and CSV, one record, the
account's inbox without bcc, resend (202, 403 without the right, 409 with
attachments), /healthz, /metrics, and bad input answered with a clear 4xx,
never a crash. Real redis-server, the real herald-api, worker and SMTP
server; a SQLite store filled by the worker and by bin/test_libherald."""
import csv
import io
import json
import socket
import time
import urllib.error
import urllib.request

import harness
from harness import check, make_job, mc_show, push, run, wait_until


def api(t, env):
    port = harness.free_port()
    env = dict(env, HERALD_API_LISTEN="127.0.0.1:%d" % port)
    w = t.worker(env, binary="herald-api")
    wait_until(lambda: _open(port), 10, "herald-api listening")
    return "http://127.0.0.1:%d" % port, w


def _open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def call(base, path, token=None, method="GET", body=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def jcall(*a, **kw):
    st, h, b = call(*a, **kw)
    return st, (json.loads(b) if b and h.get("Content-Type", "").startswith(
        "application/json") else b)


def token(env, name, role, *orgs, resend=False):
    args = ["token", "create", "--name", name, "--role", role]
    for o in orgs:
        args += ["--org", o]
    if resend:
        args.append("--resend")
    cp = run("heraldctl", *args, env=env)
    check(cp.returncode == 0, cp.stderr)
    return cp.stdout.strip()


def populate(t, env):
    now = time.time()
    recs = []
    for i in range(8):
        org = "acme" if i % 2 == 0 else "globex"
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 100 + i)) + "Z"
        recs.append({"job": make_job(id="m-%d" % i, org=org, account="fam-%d" % (i % 3),
                                     subject="Receipt %d" % i,
                                     to=["ann@example.test"], bcc=["audit@acme.test"]),
                     "created_at": at, "status": "sent", "path": "relay"})
    cp = run("test_libherald", "populate-mc", env["HERALD_MC"], env=env,
             input="".join(json.dumps(x) + "\n" for x in recs))
    check(cp.returncode == 0, cp.stderr)


def test_tokens_scoping_lists_and_records(t):
    r = t.redis()
    env = t.env(r, None)
    populate(t, env)
    base, w = api(t, env)
    sup = token(env, "support-all", "support")
    app = token(env, "app-acme", "app", "acme")

    # tokens: shown once, kept as hashes, listed without the token
    check(sup.startswith("hrld_") and len(sup) == 48, sup)
    stored = json.dumps([x.decode() for x in r.cmd("HGETALL", t.prefix + ":tokens")])
    check(sup not in stored and app not in stored, "a token is kept in clear")
    cp = run("heraldctl", "token", "list", "--json", env=env)
    lst = json.loads(cp.stdout)
    check([x["name"] for x in lst] == ["app-acme", "support-all"], lst)
    check(sup not in cp.stdout, "token list shows a token")
    cp = run("heraldctl", "token", "create", "--name", "app-acme", "--role", "app",
             "--org", "x", env=env)
    check(cp.returncode == 2 and "exists" in cp.stderr, cp.stderr)
    for args in (("--name", "a", "--role", "app"), ("--name", "b", "--role", "boss"),
                 ("--name", "c d", "--role", "support"),
                 ("--name", "e", "--role", "app", "--org", "acme", "--resend")):
        cp = run("heraldctl", "token", "create", *args, env=env)
        check(cp.returncode == 2, "%r: %d %s" % (args, cp.returncode, cp.stderr))

    # 401 without a valid token
    for tok in (None, "nope", "hrld_" + "x" * 43):
        st, b = jcall(base, "/v1/messages", tok)
        check(st == 401 and "error" in b, (tok, st, b))

    # support: everything, newest first, without bodies, paged
    st, b = jcall(base, "/v1/messages?limit=5", sup)
    check(st == 200 and [m["id"] for m in b["messages"]] == ["m-7", "m-6", "m-5", "m-4", "m-3"],
          b)
    check("text" not in b["messages"][0] and "html" not in b["messages"][0], b["messages"][0])
    st, b2 = jcall(base, "/v1/messages?limit=5&cursor=" + b["next_cursor"], sup)
    check([m["id"] for m in b2["messages"]] == ["m-2", "m-1", "m-0"] and b2["next_cursor"] is None,
          b2)
    # the app token: its org only; another org's message is 404 like an unknown one
    st, b = jcall(base, "/v1/messages?limit=50", app)
    check(st == 200 and [m["id"] for m in b["messages"]] == ["m-6", "m-4", "m-2", "m-0"], b)
    st, b = jcall(base, "/v1/messages?org=globex", app)
    check(st == 200 and b["messages"] == [], b)
    st, own = jcall(base, "/v1/messages/m-0", app)
    check(st == 200 and own["id"] == "m-0" and own["text"], own)
    st, other = jcall(base, "/v1/messages/m-1", app)
    st2, unknown = jcall(base, "/v1/messages/no-such", app)
    check(st == 404 and st2 == 404 and other == unknown, (other, unknown))
    # record as heraldctl mc show --json prints it
    st, rec = jcall(base, "/v1/messages/m-3", sup)
    check(rec == mc_show(env, "m-3"), "the API's record differs from mc show --json")

    # filters and CSV
    st, b = jcall(base, "/v1/messages?q=receipt%205&to=ANN%40example.test", sup)
    check([m["id"] for m in b["messages"]] == ["m-5"], b)
    st, h, raw = call(base, "/v1/messages?format=csv&org=acme", sup)
    check(st == 200 and h["Content-Type"].startswith("text/csv"), h)
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    check(rows[0][0] == "id" and [x[0] for x in rows[1:]] == ["m-6", "m-4", "m-2", "m-0"], rows)

    # the inbox of one account: no bcc anywhere
    st, b = jcall(base, "/v1/orgs/acme/accounts/fam-0/messages", app)
    check(st == 200 and [m["id"] for m in b["messages"]] == ["m-6", "m-0"], b)
    for m in b["messages"]:
        check("bcc" not in m and all(x["kind"] != "bcc" for x in m["recipients"]), m)
    st, b = jcall(base, "/v1/orgs/globex/accounts/fam-1/messages", app)
    check(st == 404, (st, b))
    st, b = jcall(base, "/v1/orgs/acme/accounts/fam-0/messages?status=sent", app)
    check(st == 400 and b["field"] == "status", b)

    # revoked: refused within a second (SPEC §9), though every thread of
    # herald-api had just found the token (each remembers it half a second)
    for _ in range(8):
        st, b = jcall(base, "/v1/messages", app)
        check(st == 200, (st, b))
    cp = run("heraldctl", "token", "revoke", "app-acme", env=env)
    check(cp.returncode == 0, cp.stderr)
    time.sleep(1.0)
    for _ in range(8):
        st, b = jcall(base, "/v1/messages", app)
        check(st == 401, (st, b))
    cp = run("heraldctl", "token", "revoke", "app-acme", env=env)
    check(cp.returncode == 1, cp.stderr)
    check(w.stop() == 0, "exit code")


def test_bad_input_gets_a_clear_4xx_and_the_api_goes_on(t):
    r = t.redis()
    env = t.env(r, None)
    populate(t, env)
    base, w = api(t, env)
    sup = token(env, "s", "support")
    cases = [
        ("/v1/messages?limit=0", "limit"), ("/v1/messages?limit=501", "limit"),
        ("/v1/messages?limit=abc", "limit"), ("/v1/messages?status=sentt", "status"),
        ("/v1/messages?since=yesterday", "since"), ("/v1/messages?cursor=%21%21", "cursor"),
        ("/v1/messages?org=a%20b", "org"), ("/v1/messages?to=nobody", "to"),
        ("/v1/messages?q=%20--%20", "q"), ("/v1/messages?frmo=x", "frmo"),
        ("/v1/messages?org=acme&org=globex", "org"), ("/v1/messages?format=xml", "format"),
        ("/v1/messages?org", "org"), ("/v1/messages?path=smtp", "path"),
        # until before since: both derived from now, a day apart
        ("/v1/messages?since=%s&until=%s" % (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400)),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2 * 86400))),
         "until"),
    ]
    for path, field in cases:
        st, b = jcall(base, path, sup)
        check(st == 400 and b.get("field") == field and b.get("error"), (path, st, b))
    for path, method, want in (("/v1/nothing", "GET", 404), ("/nothing", "GET", 404),
                               ("/", "POST", 405),
                               ("/v1/messages", "POST", 405), ("/v1/messages/m-0", "DELETE", 405),
                               ("/v1/messages/m-0/resend", "GET", 405),
                               ("/v1/orgs/acme/suppressions", "GET", 501)):
        st, h, b = call(base, path, sup, method=method)
        check(st == want, (path, method, st, b))
        if want == 405:
            check("Allow" in h, h)
    # a huge query string and a huge body: refused, no crash
    st, h, b = call(base, "/v1/messages?q=" + "a" * 100000, sup)
    check(400 <= st < 500, st)
    st, h, b = call(base, "/v1/messages/m-0/resend", sup, method="POST", body="x" * 100000)
    check(st in (403, 413), (st, b))
    # raw garbage on the socket
    port = int(base.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), 2)
    s.sendall(b"\x00\xffGARBAGE / HTTP/9\r\n\r\n")
    s.settimeout(2)
    try:
        s.recv(100)
    except OSError:
        pass
    s.close()
    check(w.alive(), "herald-api died")
    st, b = jcall(base, "/healthz")
    check(st == 200 and b == {"status": "ok"}, b)
    st, h, m = call(base, "/metrics")
    text = m.decode()
    check(st == 200 and 'herald_api_requests_total{route="messages",code="400"}' in text, text[:500])
    check('herald_api_request_duration_seconds_bucket{route="messages",le="+Inf"}' in text, text[:500])
    check(w.stop() == 0, "exit code")


def test_resend_over_the_api(t):
    r = t.redis()
    s = t.smtp()
    env = t.env(r, s)
    wk = t.worker(env)
    base, w = api(t, env)
    push(r, t.prefix, make_job(id="orig-1", org="acme"))
    push(r, t.prefix, make_job(id="att-1", org="acme", attachments=[{
        "filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]))
    push(r, t.prefix, make_job(id="other-1", org="globex"))
    for i in ("orig-1", "att-1", "other-1"):
        wait_until(lambda: (mc_show(env, i) or {}).get("status") == "sent", 15, i)
    can = token(env, "sup-resend", "support", resend=True)
    cannot = token(env, "sup-read", "support")
    scoped = token(env, "acme-resend", "support", "acme", resend=True)
    st, b = jcall(base, "/v1/messages/orig-1/resend", cannot, method="POST")
    check(st == 403, (st, b))
    st, b = jcall(base, "/v1/messages/other-1/resend", scoped, method="POST")
    check(st == 404, (st, b))
    st, b = jcall(base, "/v1/messages/att-1/resend", can, method="POST")
    check(st == 409 and "attachment" in b["error"], b)
    st, b = jcall(base, "/v1/messages/orig-1/resend", can, method="POST",
                  body='{"to": ["elsewhere@example.test"]}',
                  headers={"Content-Type": "application/json"})
    check(st == 202 and b["id"] != "orig-1", b)
    new = b["id"]
    wait_until(lambda: new in s.ids(), 15, "the resend delivered")
    env2 = [m for m in s.messages() if b"X-Herald-Id: " + new.encode() in m[1]][0][0]
    check(env2["rcpt_tos"] == ["elsewhere@example.test"], env2)
    rec = wait_until(lambda: mc_show(env, new), 10, "its record")
    check(rec["resend_of"] == "orig-1", rec)
    for body, field in (('{"to": "x"}', "to"), ('{"to": ["nope"]}', "to[0]"),
                        ('{"cc": []}', ""), ("[1]", ""), ("{", "")):
        st, b = jcall(base, "/v1/messages/orig-1/resend", can, method="POST", body=body)
        check(st == 400 and b["field"] == field, (body, st, b))
    check(w.stop() == 0, "exit code")
    check(wk.stop() == 0, "worker exit code")
