"""The Message Center holds the message as the recipient got it, and
outcomes that tell the truth (SPEC §6, issue 8).

A templated job's record shows the rendered subject, text and html on
every path — scheduled (send_at), waiting for a paused sender, held by a
scheme whose login was refused, behind the login gate of new credentials
— and a template that cannot be rendered is recorded failed with the
reason. A job that fails for good (expired, rejected, over its quota, a
template that does not render) leaves no recipient "pending" or
"deferred", and no RCPT "250" beside the failure: each one says "failed"
with the reply that ended it. Real redis-server, recording SMTP servers,
the TLS organisation server, the real worker and heraldctl."""
import json
import time

import harness
from harness import check, make_job, mc_show, push, run, wait_until
from test_scheme_path import ADDR, ORG, add_scheme, keyfile, scheme_state
from test_tls import TlsSmtp, make_ca

SUBJECT = "Receipt {{ref}} for {{name}}"
TEXT = "Dear {{name}},\nthank you: {{amount}} received.\n"
HTML = "<p>Dear {{name}}, thank you: <b>{{amount}}</b> received.</p>"
DATA = {"ref": "R-77", "name": "Ana & Bo", "amount": "12.50 EUR"}
RENDERED = ("Receipt R-77 for Ana & Bo",
            "Dear Ana & Bo,\nthank you: 12.50 EUR received.\n",
            "<p>Dear Ana &amp; Bo, thank you: <b>12.50 EUR</b> received.</p>")


def set_template(e, name="receipt"):
    html = harness.current().path("t.html")
    with open(html, "w") as f:
        f.write(HTML)
    cp = run("heraldctl", "template", "set", name, "--subject", SUBJECT, "--text-file", "-",
             "--html-file", html, env=e, input=TEXT)
    check(cp.returncode == 0, "template set: %s" % cp.stderr)


def templated(id, **kw):
    fields = dict(id=id, template="receipt", data=DATA, subject=None, text=None,
                  to=[{"email": "Ana@Example.test", "name": "Ana"}])
    fields.update(kw)
    return make_job(**fields)


def content(rec):
    return (rec.get("subject"), rec.get("text"), rec.get("html"))


def check_rendered(rec, what):
    check(rec is not None, "%s: no record" % what)
    check(content(rec) == RENDERED, "%s: record content %r" % (what, content(rec)))


def listed_to(e, addr):
    cp = run("heraldctl", "mc", "list", "--to", addr, "--json", env=e)
    check(cp.returncode == 0, cp.stderr)
    return json.loads(cp.stdout)


def rfc3339_in(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + seconds)) + \
        ".%03dZ" % int((time.time() % 1) * 1000)


# ---------------------------------------------------------------- content


def test_templated_send_at_is_recorded_rendered_before_and_after(t):
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s)
    set_template(e)
    w = t.worker(e)
    push(r, t.prefix, templated("tpl-later", send_at=rfc3339_in(3)))
    rec = wait_until(lambda: mc_show(e, "tpl-later"), 10, "the scheduled job's record")
    check(rec["status"] == "queued", rec)
    check_rendered(rec, "scheduled")
    wait_until(lambda: "tpl-later" in s.ids(), 15, "delivered at send_at")
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "sent" else None)(
        mc_show(e, "tpl-later")), 10, "record sent")
    check_rendered(rec, "sent")
    msg = harness.parse_message(s.messages()[0][1])
    check(str(msg["Subject"]) == RENDERED[0], msg["Subject"])
    found = [x["id"] for x in listed_to(e, "ana@example.test")]
    check(found == ["tpl-later"], "mc list --to: %r" % found)
    check(w.stop() == 0, "exit code")


def test_templated_job_waiting_for_a_paused_sender_is_recorded_rendered(t):
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s)
    set_template(e)
    until = int((time.time() + 4) * 1000)
    r.cmd("HSET", t.prefix + ":pauses", "relay", "%d test pause" % until)
    w = t.worker(e)
    push(r, t.prefix, templated("tpl-paused"))
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "deferred" else None)(
        mc_show(e, "tpl-paused")), 10, "deferred for the pause")
    check_rendered(rec, "deferred for a pause")
    check("paused" in (rec["last_error"] or ""), rec["last_error"])
    wait_until(lambda: "tpl-paused" in s.ids(), 20, "delivered after the pause")
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "sent" else None)(
        mc_show(e, "tpl-paused")), 10, "record sent")
    check_rendered(rec, "sent after a pause")
    check(w.stop() == 0, "exit code")


def scheme_env(t, password, on_auth, server_pw="right-pw"):
    ca, crt, key = make_ca(t)
    org = TlsSmtp(t, crt, key, auth="orguser:" + server_pw)
    r = t.redis()
    relay = t.smtp()
    e = t.env(r, relay, HERALD_CA_FILE=ca, HERALD_SECRET_KEY_FILE=keyfile(t))
    add_scheme(e, org.port, password, on_auth)
    return r, relay, org, e


def test_templated_job_held_by_its_scheme_is_recorded_rendered(t):
    # The scheme's login is refused first (a plain job), so it is held:
    # a templated job that arrives then waits before any transaction.
    r, relay, org, e = scheme_env(t, "wrong-pw", "hold")
    set_template(e)
    w = t.worker(e)
    push(r, t.prefix, make_job(id="plain-1", **{"from": ADDR, "org": ORG}))
    wait_until(lambda: scheme_state(e)[0] == "auth_failed", 15, "the scheme auth_failed")
    push(r, t.prefix, templated("tpl-held", **{"from": ADDR, "org": ORG}))
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "deferred" else None)(
        mc_show(e, "tpl-held")), 15, "held (deferred)")
    check_rendered(rec, "held by its scheme")
    check(rec["attempts"] == 0, rec["attempts"])
    check(relay.count() == 0 and org.messages() == [], "a held job went out")
    check(w.stop() == 0, "exit code")


def test_templated_jobs_behind_the_login_gate_are_recorded_rendered(t):
    # New credentials: one login at a time, the other jobs wait for it at
    # the gate; it is refused, and they are held without ever trying.
    r, relay, org, e = scheme_env(t, "wrong-pw", "hold")
    set_template(e)
    w = t.worker(e)
    ids = ["tpl-gate-%d" % i for i in range(4)]
    r.pipeline([("LPUSH", t.prefix + ":queue:normal",
                 json.dumps(templated(i, **{"from": ADDR, "org": ORG}))) for i in ids])
    for i in ids:
        rec = wait_until(lambda: (lambda x: x if x and x["status"] == "deferred" else None)(
            mc_show(e, i)), 15, "record %s held" % i)
        check_rendered(rec, i)
    check(len(org.auth_attempts()) == 1, "logins: %r" % org.auth_attempts())
    check(w.stop() == 0, "exit code")


def test_template_that_cannot_render_is_recorded_failed(t):
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s)
    set_template(e)
    w = t.worker(e)
    push(r, t.prefix, templated("tpl-nodata", data={"ref": "R-1"}))  # no name
    push(r, t.prefix, templated("tpl-noname", template="no-such-template"))
    for i, words in (("tpl-nodata", "name"), ("tpl-noname", "no-such-template")):
        rec = wait_until(lambda: (lambda x: x if x and x["status"] == "failed" else None)(
            mc_show(e, i)), 10, "%s failed" % i)
        check(words in (rec["last_error"] or ""), rec["last_error"])
        check([x["status"] for x in rec["recipients"]] == ["failed"], rec["recipients"])
    dead = {d["id"]: d for d in harness.dead(r, t.prefix)}
    check(dead["tpl-nodata"]["reason"] == "invalid" and dead["tpl-nodata"]["field"] == "data",
          dead["tpl-nodata"])
    check(dead["tpl-noname"]["field"] == "template", dead["tpl-noname"])
    check(s.count() == 0, "a job that did not render went out")
    # the ids are not held: corrected jobs with the same ids go out
    push(r, t.prefix, templated("tpl-nodata"))
    wait_until(lambda: "tpl-nodata" in s.ids(), 15, "the corrected job delivered")
    check(w.stop() == 0, "exit code")


# --------------------------------------------------------------- outcomes


def final_recipients(rec):
    return [(x["email"], x["status"], x.get("reply") or "") for x in rec["recipients"]]


def test_expired_job_recipients_say_failed_with_the_last_reply(t):
    r = t.redis()
    s = t.smtp(tempfail_data="Subject: expire", tempfail_times=100)
    e = t.env(r, s, HERALD_RETRY_MAX_ATTEMPTS="2", HERALD_RETRY_BASE_S="1",
              HERALD_RETRY_CAP_S="1")
    w = t.worker(e)
    push(r, t.prefix, make_job(id="exp-1", subject="expire",
                               to=["a@example.test", "b@example.test"],
                               cc=["c@example.test"]))
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "failed" else None)(
        mc_show(e, "exp-1")), 20, "expired")
    check(rec["attempts"] == 2, rec["attempts"])
    rc = final_recipients(rec)
    check(len(rc) == 3, rc)
    for email, status, reply in rc:
        check(status == "failed", "recipient %s says %s" % (email, status))
        check(reply.startswith("4") and not reply.startswith("250"),
              "recipient %s: reply %r is not the one that ended it" % (email, reply))
    d = [x for x in harness.dead(r, t.prefix) if x.get("id") == "exp-1"]
    check(len(d) == 1 and d[0]["reason"] == "expired", d)
    check(w.stop() == 0, "exit code")


def test_rejected_job_recipients_carry_the_refusal(t):
    r = t.redis()
    s = t.smtp(reject_data="Subject: refuse")
    e = t.env(r, s)
    w = t.worker(e)
    push(r, t.prefix, make_job(id="rej-1", subject="refuse",
                               to=["a@example.test", "b@example.test"]))
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "failed" else None)(
        mc_show(e, "rej-1")), 15, "rejected")
    for email, status, reply in final_recipients(rec):
        check(status == "failed" and reply.startswith("554"),
              "recipient %s: %s %r" % (email, status, reply))
    check(w.stop() == 0, "exit code")


def test_job_over_its_quota_for_good_recipients_failed(t):
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s)
    cp = run("heraldctl", "org", "set", "acme", "--relay-daily-limit", "1", env=e)
    check(cp.returncode == 0, cp.stderr)
    w = t.worker(e)
    push(r, t.prefix, make_job(id="quota-1", to=["a@example.test", "b@example.test"]))
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "failed" else None)(
        mc_show(e, "quota-1")), 15, "failed for its quota")
    check([st for _, st, _ in final_recipients(rec)] == ["failed", "failed"], rec["recipients"])
    check(all("quota" in rp or "at most" in rp for _, _, rp in final_recipients(rec)),
          rec["recipients"])
    check(w.stop() == 0, "exit code")


def test_relay_login_refused_for_good_recipients_failed_with_the_535(t):
    ca, crt, key = make_ca(t)
    s = TlsSmtp(t, crt, key, auth="relayuser:right")
    r = t.redis()
    e = t.env(r, None, HERALD_RELAY="smtp://127.0.0.1:%d" % s.port, HERALD_CA_FILE=ca,
              HERALD_RELAY_USER="relayuser", HERALD_RELAY_PASSWORD="wrong",
              HERALD_RETRY_MAX_ATTEMPTS="2", HERALD_RETRY_BASE_S="1", HERALD_RETRY_CAP_S="1")
    w = t.worker(e)
    push(r, t.prefix, make_job(id="auth-1", to=["a@example.test", "b@example.test"]))
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "failed" else None)(
        mc_show(e, "auth-1")), 20, "failed for the relay's login")
    for email, status, reply in final_recipients(rec):
        check(status == "failed" and reply.startswith("535"),
              "recipient %s: %s %r" % (email, status, reply))
    d = [x for x in harness.dead(r, t.prefix) if x.get("id") == "auth-1"]
    check(len(d) == 1 and d[0]["reason"] == "auth", d)
    check(w.stop() == 0, "exit code")


# ----------------------------------------------------------------- resend


def test_mc_resend_sends_the_stored_message_again_under_a_new_id(t):
    # SPEC §6.4: a parent says a receipt never arrived; support resends it
    # (the same id would be dropped by the ledger: a new id, resend_of).
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s)
    set_template(e)
    w = t.worker(e)
    push(r, t.prefix, templated("orig-1", cc=["cc@example.test"], meta={"invoice": 7}))
    wait_until(lambda: "orig-1" in s.ids(), 15, "the original delivered")
    wait_until(lambda: (mc_show(e, "orig-1") or {}).get("status") == "sent", 10, "sent")

    cp = run("heraldctl", "mc", "resend", "orig-1", env=e)
    check(cp.returncode == 0, cp.stderr)
    new = cp.stdout.strip()
    check(new and new != "orig-1", cp.stdout)
    wait_until(lambda: new in s.ids(), 15, "the resend delivered")
    rec = wait_until(lambda: (lambda x: x if x and x["status"] == "sent" else None)(
        mc_show(e, new)), 10, "the resend's record sent")
    check(rec["resend_of"] == "orig-1", rec["resend_of"])
    check(content(rec) == RENDERED, "the stored (rendered) content: %r" % (content(rec),))
    check(rec["meta"] == {"invoice": 7}, rec["meta"])
    env, raw = [m for m in s.messages() if b"X-Herald-Id: " + new.encode() in m[1]][0]
    check(sorted(env["rcpt_tos"]) == ["Ana@Example.test", "cc@example.test"], env["rcpt_tos"])

    # to other addresses instead
    cp = run("heraldctl", "mc", "resend", "orig-1", "--to", "other@example.test",
             "--to=second@example.test", env=e)
    check(cp.returncode == 0, cp.stderr)
    new2 = cp.stdout.strip()
    wait_until(lambda: new2 in s.ids(), 15, "the redirected resend delivered")
    env2 = [m for m in s.messages() if b"X-Herald-Id: " + new2.encode() in m[1]][0][0]
    check(env2["rcpt_tos"] == ["other@example.test", "second@example.test"], env2["rcpt_tos"])

    # what cannot be resent, and bad usage
    push(r, t.prefix, make_job(id="att-1", attachments=[{
        "filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]))
    wait_until(lambda: (mc_show(e, "att-1") or {}).get("status") == "sent", 15, "att-1 sent")
    cp = run("heraldctl", "mc", "resend", "att-1", env=e)
    check(cp.returncode == 1 and "attachment" in cp.stderr, cp.stderr)
    cp = run("heraldctl", "mc", "resend", "no-such-id", env=e)
    check(cp.returncode == 1 and "no such message" in cp.stderr, cp.stderr)
    for args in (("orig-1", "--to", "not-an-address"), (), ("a", "b"), ("orig-1", "--cc", "x")):
        cp = run("heraldctl", "mc", "resend", *args, env=e)
        check(cp.returncode == 2, "%r: %d %s" % (args, cp.returncode, cp.stderr))
    time.sleep(0.5)
    check(len(s.ids()) == 4, "delivered %r" % s.ids())
    check(w.stop() == 0, "exit code")
