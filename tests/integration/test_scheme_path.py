"""SPEC §4 path 1 in the worker: jobs from an address with an Email
Sending Scheme go through the organisation's own server (STARTTLS
required, certificate verified through HERALD_CA_FILE, AUTH), From and
envelope sender the organisation's address; the relay sees nothing. A
refused login marks the scheme auth_failed and the job falls back to the
relay (or waits, with "hold"); a scheme change reaches the running worker
within about a second. Real servers: redis-server, the recording relay,
tests/integration/tls_smtpd.py for the organisation, the real worker and
heraldctl."""
import email
import email.policy
import json
import os
import time

import harness
from harness import check, wait_until, mc_show, run
from test_tls import TlsSmtp, make_ca

ORG, ADDR = "acme", "billing@acme.test"


def job(id, frm=ADDR, org=ORG, **kw):
    j = {"id": id, "type": "receipt", "org": org, "account": "a1", "from": frm,
         "from_name": "Acme Billing", "to": ["alice@example.test"],
         "subject": "Receipt " + id, "text": "Thanks.\n"}
    j.update(kw)
    return json.dumps(j)


def keyfile(t):
    p = t.path("herald.key")
    with open(p, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(p, 0o600)
    return p


def setup(t, password="right-pw", on_auth="fallback", add=True, worker_key=True,
          server_pw="right-pw"):
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:" + server_pw)
    r = t.redis()
    relay = t.smtp()
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    if add:
        add_scheme(e, org.port, password, on_auth)
    we = dict(e)
    if not worker_key:
        we.pop("HERALD_SECRET_KEY_FILE")
    w = t.worker(we)
    return r, relay, org, e, w


def add_scheme(e, port, password, on_auth="fallback"):
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", port, "--username", "orguser",
             "--password-stdin", "--tls", "starttls", "--on-auth-failure", on_auth,
             env=e, input=password + "\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)


def scheme_state(e):
    cp = run("heraldctl", "scheme", "list", "--json", env=e)
    check(cp.returncode == 0, "scheme list: %s" % cp.stderr)
    rows = json.loads(cp.stdout)
    return rows[0]["state"], rows[0].get("state_reason")


def push(r, t, raw):
    r.cmd("LPUSH", t.prefix + ":queue:normal", raw)


def test_scheme_path_end_to_end(t):
    r, relay, org, e, w = setup(t)
    push(r, t, job("s1"))
    wait_until(lambda: len(org.messages()) == 1, 15, "delivery through the org server")
    meta, raw = org.messages()[0]
    check(meta["tls"] and meta["auth_user"] == "orguser", "not over TLS with AUTH: %r" % meta)
    check(meta["mail_from"] == ADDR, "envelope sender %r" % meta["mail_from"])
    m = email.message_from_bytes(raw, policy=email.policy.default)
    check(m["From"].addresses[0].addr_spec == ADDR, "From %s" % m["From"])
    check(m["From"].addresses[0].display_name == "Acme Billing", "From name %s" % m["From"])
    check(" via " not in str(m["From"]), "relay-style From on the scheme path")
    rec = None
    wait_until(lambda: (mc_show(e, "s1") or {}).get("status") == "sent", 10, "record sent")
    rec = mc_show(e, "s1")
    check(rec["path"] == "scheme" and rec["sender"] == ADDR, "record %r" % rec)
    check(relay.count() == 0, "the relay saw the scheme's message")
    # another address of the same org has no scheme: relay path
    push(r, t, job("s2", frm="other@acme.test"))
    relay.wait_count(1, 15)
    check(len(org.messages()) == 1, "a job without a scheme went to the org server")
    check(w.stop() == 0, "exit code")
    check("right-pw" not in open(w.log_path, errors="replace").read(),
          "the password appeared in the worker's log")


def test_slow_scheme_server_delays_no_other_organisation(t):
    """SPEC §8 fairness: with HERALD_CONCURRENCY=4, twelve jobs for an
    organisation's own server that answers each message in 3 s (two
    connections: HERALD_SCHEME_CONNECTIONS) wait in that server's queue,
    holding no place; another organisation's receipt for the relay,
    pushed after them, goes out at once. (It waited ~15 s for eight of
    them when a job held its place while waiting for a connection.)
    Judged by the two servers' own clocks."""
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:right-pw", delay_data=3)
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t),
              HERALD_CONCURRENCY="4", HERALD_SMTP_TIMEOUT_S="10")
    add_scheme(e, org.port, "right-pw")
    w = t.worker(e)
    # the scheme's first login done (until then its jobs wait for it)
    push(r, t, job("first"))
    wait_until(lambda: len(org.messages()) == 1, 20, "the first message")
    for i in range(12):
        push(r, t, job("slow%d" % i))
    push(r, t, job("other", frm="office@beta.test", org="beta"))
    relay.wait_count(1, 30)
    at = relay.messages()[0][0]["at"]
    before = [m for m, _ in org.messages()[1:] if m["at"] <= at]
    check(len(before) <= 2,
          "the other organisation's receipt waited for %d of the slow "
          "server's messages" % len(before))
    wait_until(lambda: len(org.messages()) == 13, 60, "the slow server's twelve")
    check(w.stop() == 0, "exit code")


def test_refused_login_marks_scheme_and_falls_back(t):
    r, relay, org, e, w = setup(t, password="wrong-pw")
    push(r, t, job("f1"))
    relay.wait_count(1, 20)
    env, raw = relay.messages()[0]
    m = email.message_from_bytes(raw, policy=email.policy.default)
    check(" via " in str(m["From"]), "fallback From: %s" % m["From"])
    check(m["Reply-To"].addresses[0].addr_spec == ADDR, "Reply-To %s" % m["Reply-To"])
    wait_until(lambda: scheme_state(e)[0] == "auth_failed", 10, "scheme marked auth_failed")
    check("535" in (scheme_state(e)[1] or ""), "state_reason: %r" % (scheme_state(e),))
    rec = mc_show(e, "f1")
    check(rec["path"] == "relay" and "refused" in (rec["path_reason"] or ""),
          "record %r / %r" % (rec["path"], rec["path_reason"]))
    # later jobs go straight to the relay: exactly one login was tried
    for i in range(3):
        push(r, t, job("f%d" % (i + 2)))
    relay.wait_count(4, 20)
    logins = org.auth_attempts()
    check(len(logins) == 1, "login attempts at the org server: %r" % logins)
    check(w.stop() == 0, "exit code")


def test_hold_policy_waits_until_the_scheme_is_fixed(t):
    r, relay, org, e, w = setup(t, password="wrong-pw", on_auth="hold")
    push(r, t, job("h1"))
    wait_until(lambda: scheme_state(e)[0] == "auth_failed", 15, "scheme marked auth_failed")
    wait_until(lambda: (mc_show(e, "h1") or {}).get("status") == "deferred", 10, "held")
    rec = mc_show(e, "h1")
    check("held" in (rec["last_error"] or "") or "held" in (rec["path_reason"] or ""),
          "record should say it is held: %r" % rec)
    check(relay.count() == 0 and org.messages() == [], "a held job went out")
    cp = run("heraldctl", "scheme", "update", "--org", ORG, "--email", ADDR,
             "--password-stdin", env=e, input="right-pw\n")
    check(cp.returncode == 0, "scheme update: %s" % cp.stderr)
    wait_until(lambda: len(org.messages()) == 1, 30, "delivered once the scheme was fixed")
    wait_until(lambda: (mc_show(e, "h1") or {}).get("status") == "sent", 10, "record sent")
    check(relay.count() == 0, "the relay saw a held scheme's job")
    check(w.stop() == 0, "exit code")


def test_scheme_added_while_running_is_used_within_seconds(t):
    r, relay, org, e, w = setup(t, add=False)
    push(r, t, job("a1"))
    relay.wait_count(1, 15)
    add_scheme(e, org.port, "right-pw")
    t0 = time.time()
    time.sleep(1.5)
    push(r, t, job("a2"))
    wait_until(lambda: len(org.messages()) == 1, 15, "the new scheme used")
    check(relay.count() == 1, "the second job went to the relay")
    check(w.stop() == 0, "exit code")


def test_no_key_file_holds_scheme_jobs(t):
    r, relay, org, e, w = setup(t, worker_key=False)
    push(r, t, job("k1"))
    wait_until(lambda: (mc_show(e, "k1") or {}).get("status") == "deferred", 15, "held")
    rec = mc_show(e, "k1")
    check("HERALD_SECRET_KEY_FILE" in (rec["last_error"] or ""),
          "reason should name the key file: %r" % rec["last_error"])
    check(relay.count() == 0 and org.messages() == [], "a scheme job went out without the key")
    check(w.stop() == 0, "exit code")


def test_bad_key_file_is_a_startup_error(t):
    r = t.redis()
    bad = t.path("short.key")
    with open(bad, "w") as f:
        f.write("abcd\n")
    os.chmod(bad, 0o600)  # refused for its size, not for its mode
    e = t.env(r, None, HERALD_SECRET_KEY_FILE=bad)
    w = t.worker(e)
    wait_until(lambda: not w.alive(), 10, "the worker to refuse the key file")
    check(w.proc.wait(5) == 2, "exit code %r, want 2" % w.proc.returncode)
    check("HERALD_SECRET_KEY_FILE" in open(w.log_path, errors="replace").read(),
          "the error should name HERALD_SECRET_KEY_FILE")


@harness.timeout(90)
def test_sent_folder_copy_over_imap(t):
    """With an IMAP server and a Sent folder, a copy of each message the
    scheme delivered is appended there (a real dovecot, STARTTLS)."""
    import pwd
    from test_scheme_test import Dovecot
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:right-pw")
    dv = Dovecot(t, crt, key, "orguser", "right-pw")
    nobody = pwd.getpwnam("nobody")
    maildir = os.path.join(t.path("dovecot"), "mail", "orguser")
    for sub in ("", "/cur", "/new", "/tmp", "/.Sent", "/.Sent/cur", "/.Sent/new", "/.Sent/tmp"):
        os.makedirs(maildir + sub, exist_ok=True)
        os.chown(maildir + sub, nobody.pw_uid, nobody.pw_gid)
    r = t.redis()
    relay = t.smtp()
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", org.port, "--imap-host", "127.0.0.1",
             "--imap-port", dv.port, "--sent-folder", "Sent", "--username", "orguser",
             "--password-stdin", "--tls", "starttls", env=e, input="right-pw\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)
    w = t.worker(e)
    push(r, t, job("imap1"))
    wait_until(lambda: len(org.messages()) == 1, 15, "delivery through the org server")

    def copies():
        out = []
        for sub in ("cur", "new"):
            d = os.path.join(maildir, ".Sent", sub)
            out += [os.path.join(d, f) for f in os.listdir(d)]
        return out
    wait_until(lambda: len(copies()) == 1, 15, "a copy in the Sent folder")
    body = open(copies()[0], "rb").read()
    check(b"X-Herald-Id: imap1" in body, "the Sent copy is not the message")
    wait_until(lambda: any("copied to the Sent folder" in (l.get("msg") or "")
                           for l in w.logs()), 10, "the copy logged")
    check(w.stop() == 0, "exit code")


def test_sent_folder_copy_failure_does_not_touch_delivery(t):
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:right-pw")
    r = t.redis()
    relay = t.smtp()
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", org.port, "--imap-host", "127.0.0.1",
             "--imap-port", harness.free_port(), "--sent-folder", "Sent", "--username",
             "orguser", "--password-stdin", "--tls", "starttls", env=e, input="right-pw\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)
    w = t.worker(e)
    push(r, t, job("imap2"))
    wait_until(lambda: len(org.messages()) == 1, 15, "delivery through the org server")
    wait_until(lambda: (mc_show(e, "imap2") or {}).get("status") == "sent", 10, "record sent")
    wait_until(lambda: any("could not copy" in (l.get("msg") or "") and l.get("job") == "imap2"
                           for l in w.logs()), 15, "the failed copy logged with the job")
    check(w.stop() == 0, "exit code")


@harness.timeout(120)
def test_wrong_password_costs_one_login_fleet_wide(t):
    """Three workers, twenty jobs for a scheme whose password is wrong,
    all at once: the organisation's server sees exactly one login, every
    job is delivered through the relay (fallback), none is lost."""
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:right-pw")
    r = t.redis()
    relay = t.smtp()
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    add_scheme(e, org.port, "wrong-pw")
    ids = ["fleet-%d" % i for i in range(20)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", job(i)) for i in ids])
    ws = [t.worker(dict(e, HERALD_WORKER_ID="w%d" % k)) for k in range(3)]
    wait_until(lambda: len(set(relay.ids())) == 20, 60,
               "all 20 delivered by the relay (have %d)" % len(set(relay.ids())))
    logins = org.auth_attempts()
    check(len(logins) == 1, "logins at the org server: %r" % logins)
    check(org.messages() == [], "a message reached the org server")
    check(scheme_state(e)[0] == "auth_failed", "scheme not marked")
    check(sorted(set(relay.ids())) == sorted(ids), "ids differ")
    for w in ws:
        check(w.stop() == 0, "exit code")


@harness.timeout(120)
def test_right_password_verified_once_then_parallel(t):
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:right-pw")
    r = t.redis()
    relay = t.smtp()
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    add_scheme(e, org.port, "right-pw")
    ids = ["ok-%d" % i for i in range(30)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", job(i)) for i in ids])
    ws = [t.worker(dict(e, HERALD_WORKER_ID="w%d" % k)) for k in range(3)]
    wait_until(lambda: len(org.messages()) == 30, 60,
               "all 30 through the org server (have %d)" % len(org.messages()))
    check(relay.count() == 0, "the relay saw scheme mail")
    logins = org.auth_attempts()
    check(all(l["ok"] for l in logins), "a refused login: %r" % logins)
    check(len(logins) <= 3 * 2, "more logins than connections allowed: %d" % len(logins))
    check(r.cmd("GET", t.prefix + ":scheme_login:acme/billing@acme.test").startswith(b"ok:"),
          "the verified credentials are not recorded")
    for w in ws:
        check(w.stop() == 0, "exit code")


def test_scheme_over_implicit_tls(t):
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, implicit=True, auth="orguser:right-pw")
    r = t.redis()
    relay = t.smtp()
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=kf)
    cp = run("heraldctl", "scheme", "add", "--org", ORG, "--email", ADDR,
             "--smtp-host", "127.0.0.1", "--smtp-port", org.port, "--username", "orguser",
             "--password-stdin", "--tls", "ssl", env=e, input="right-pw\n")
    check(cp.returncode == 0, "scheme add: %s" % cp.stderr)
    w = t.worker(e)
    push(r, t, job("ssl1"))
    wait_until(lambda: len(org.messages()) == 1, 15, "delivery over SMTPS")
    meta, raw = org.messages()[0]
    check(meta["tls"] and meta["auth_user"] == "orguser", "not TLS + AUTH: %r" % meta)
    check(relay.count() == 0, "the relay saw it")
    check(w.stop() == 0, "exit code")


def test_starttls_required_refuses_a_plain_server(t):
    """--tls starttls: a server that offers no STARTTLS gets nothing (no
    credentials in clear, no message); the job waits and says why."""
    r = t.redis()
    relay = t.smtp()
    plain = t.smtp()  # no TLS at all
    kf = keyfile(t)
    e = t.env(r, relay, HERALD_SECRET_KEY_FILE=kf)
    add_scheme(e, plain.port, "pw")
    w = t.worker(e)
    push(r, t, job("plain1"))
    wait_until(lambda: (mc_show(e, "plain1") or {}).get("status") == "deferred", 15, "deferred")
    rec = mc_show(e, "plain1")
    check("STARTTLS" in (rec["last_error"] or ""), "last_error %r" % rec["last_error"])
    check(plain.count() == 0 and relay.count() == 0, "a message went out")
    check(w.stop() == 0, "exit code")
