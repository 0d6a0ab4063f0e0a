"""SPEC §4 path 2 in the worker: no scheme, but the from domain's SPF
policy authorises the platform (include: of HERALD_SENDER_DOMAIN) — the
relay sends with the organisation's own From and envelope sender; any
other domain gets "<name> via <platform>" and Reply-To. Real dnsmasq,
redis-server, SMTP server and worker; the verdict is shared in Redis."""
import email
import email.policy
import json

import harness
from harness import check, wait_until, mc_show
from test_spf_check import Dnsmasq

ZONE = [
    "txt-record=spfok.test,v=spf1 include:sender.test ~all",
    "txt-record=sender.test,v=spf1 ip4:127.0.0.1 -all",
    "txt-record=nospf.test,v=spf1 mx -all",
]


def job(id, frm):
    return json.dumps({"id": id, "type": "receipt", "org": "acme", "account": "a1",
                       "from": frm, "from_name": "Acme", "to": ["alice@example.test"],
                       "subject": "Receipt " + id, "text": "Thanks.\n"})


def test_spf_authorised_domain_sends_as_itself(t):
    dns = Dnsmasq(t, ZONE)
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s, HERALD_DNS="127.0.0.1:%d" % dns.port, HERALD_SENDER_DOMAIN="sender.test")
    w = t.worker(e)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("p1", "billing@spfok.test"))
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("p2", "office@nospf.test"))
    s.wait_count(2, 20)
    by_id = {}
    for env, raw in s.messages():
        m = email.message_from_bytes(raw, policy=email.policy.default)
        by_id[m["X-Herald-Id"]] = (env, m)
    env, m = by_id["p1"]
    check(env["mail_from"] == "billing@spfok.test", "envelope sender %r" % env["mail_from"])
    check(m["From"].addresses[0].addr_spec == "billing@spfok.test", "From %s" % m["From"])
    check(" via " not in str(m["From"]), "From %s" % m["From"])
    env, m = by_id["p2"]
    check(env["mail_from"] == "notices@platform.test", "relay envelope %r" % env["mail_from"])
    check(" via " in str(m["From"]), "From %s" % m["From"])
    check(m["Reply-To"].addresses[0].addr_spec == "office@nospf.test", "Reply-To %s" % m["Reply-To"])
    wait_until(lambda: (mc_show(e, "p1") or {}).get("status") == "sent", 10, "p1 recorded")
    rec = mc_show(e, "p1")
    check(rec["path"] == "spf" and "authorises" in (rec["path_reason"] or ""), "record %r %r"
          % (rec["path"], rec["path_reason"]))
    rec = mc_show(e, "p2")
    check(rec["path"] == "relay" and "does not authorise" in (rec["path_reason"] or ""),
          "record %r %r" % (rec["path"], rec["path_reason"]))
    cached = r.cmd("GET", t.prefix + ":spf:spfok.test")
    check(cached is not None and cached.startswith(b"1|"), "fleet cache %r" % cached)
    ttl = r.cmd("PTTL", t.prefix + ":spf:spfok.test")
    check(0 < ttl <= 300 * 1000, "cache bounded by the record TTL: %r ms" % ttl)
    check(w.stop() == 0, "exit code")


def test_spf_temperror_is_never_authorised(t):
    # no DNS server at all on HERALD_DNS: temperror, relay path, short cache
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s, HERALD_SENDER_DOMAIN="sender.test")
    w = t.worker(e)
    r.cmd("LPUSH", t.prefix + ":queue:normal", job("t1", "billing@spfok.test"))
    s.wait_count(1, 20)
    env, raw = s.messages()[0]
    check(env["mail_from"] == "notices@platform.test", "a temperror was treated as authorised")
    wait_until(lambda: (mc_show(e, "t1") or {}).get("status") == "sent", 10, "t1 recorded")
    rec = mc_show(e, "t1")
    check("temperror" in (rec["path_reason"] or ""), "reason %r" % rec["path_reason"])
    ttl = r.cmd("PTTL", t.prefix + ":spf:spfok.test")
    check(ttl <= 60 * 1000, "a temperror cached for %r ms" % ttl)
    check(w.stop() == 0, "exit code")


def test_many_new_domains_at_once_take_turns(t):
    # 30 domains never seen: at most four evaluations hold the thread pool
    # at a time; every one is answered, half authorised, half not
    zone = ["txt-record=sender.test,v=spf1 ip4:127.0.0.1 -all"]
    for i in range(30):
        rec = "v=spf1 include:sender.test -all" if i % 2 == 0 else "v=spf1 -all"
        zone.append("txt-record=d%d.test,%s" % (i, rec))
    dns = Dnsmasq(t, zone)
    r = t.redis()
    s = t.smtp()
    e = t.env(r, s, HERALD_DNS="127.0.0.1:%d" % dns.port, HERALD_SENDER_DOMAIN="sender.test")
    w = t.worker(e)
    r.pipeline([("LPUSH", t.prefix + ":queue:normal", job("d%d" % i, "office@d%d.test" % i))
                for i in range(30)])
    s.wait_count(30, 30)
    for env, raw in s.messages():
        m = email.message_from_bytes(raw, policy=email.policy.default)
        i = int(m["X-Herald-Id"][1:])
        want = "office@d%d.test" % i if i % 2 == 0 else "notices@platform.test"
        check(env["mail_from"] == want, "d%d: envelope %r" % (i, env["mail_from"]))
    check(w.stop() == 0, "exit code")
