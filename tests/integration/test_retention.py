"""Message Center retention (SPEC §6.3): HERALD_MC_RETENTION_DAYS removes
records, HERALD_MC_BODY_DAYS clears bodies (body_expired); heraldctl mc
purge [--dry-run] does it now and counts; the workers do it on their own,
one at a time fleet-wide (a lease in Redis). Every time handed to the
store is derived from the clock at run time. Real redis-server, the real
worker and heraldctl, a SQLite store filled by bin/test_libherald."""
import json
import time

import harness
from harness import check, make_job, mc_show, run, wait_until

DAY = 86400


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "Z"


def populate(t, env):
    now = time.time()
    recs = []
    for i in range(30):  # 20 days old
        recs.append({"job": make_job(id="old-%02d" % i, subject="Old %d" % i),
                     "created_at": iso(now - 20 * DAY + i), "status": "sent"})
    for i in range(5):   # 5 days old
        recs.append({"job": make_job(id="mid-%d" % i, subject="Middle %d" % i,
                                     html="<p>mid</p>"),
                     "created_at": iso(now - 5 * DAY + i), "status": "sent"})
    recs.append({"job": make_job(id="new-1"), "created_at": iso(now - 3600),
                 "status": "sent"})
    cp = run("test_libherald", "populate-mc", env["HERALD_MC"], env=env,
             input="".join(json.dumps(x) + "\n" for x in recs))
    check(cp.returncode == 0, cp.stderr)


def test_mc_purge_now_and_dry_run(t):
    env = t.env(None, None, HERALD_MC_RETENTION_DAYS="10", HERALD_MC_BODY_DAYS="3")
    populate(t, env)
    cp = run("heraldctl", "mc", "purge", "--dry-run", env=env)
    check(cp.returncode == 0, cp.stderr)
    check("would remove 30 records" in cp.stdout and "would clear the body of 5" in cp.stdout,
          cp.stdout)
    check(mc_show(env, "old-00") is not None, "a dry run removed something")
    cp = run("heraldctl", "mc", "purge", env=env)
    check(cp.returncode == 0 and "removed 30 records" in cp.stdout
          and "cleared the body of 5" in cp.stdout, cp.stdout)
    check(mc_show(env, "old-00") is None, "old-00 still there")
    mid = mc_show(env, "mid-0")
    check(mid["body_expired"] is True and mid["text"] is None and mid["html"] is None, mid)
    check(mid["subject"] == "Middle 0", "the rest of the record stays: %r" % mid)
    new = mc_show(env, "new-1")
    check(new["body_expired"] is False and new["text"], new)
    cp = run("heraldctl", "mc", "list", "--q", "old", "--json", env=env)
    check(json.loads(cp.stdout) == [], "the subject index still finds removed records")
    cp = run("heraldctl", "mc", "purge", env=env)
    check("removed 0 records" in cp.stdout, cp.stdout)
    # nothing configured: nothing to do, said so
    cp = run("heraldctl", "mc", "purge", env=t.env(None, None))
    check(cp.returncode == 0 and "nothing to purge" in cp.stdout, cp.stdout)
    cp = run("heraldctl", "mc", "purge", "--now", env=env)
    check(cp.returncode == 2, cp.stderr)
    cp = run("heraldctl", "mc", "purge", env=dict(env, HERALD_MC_BODY_DAYS="-1"))
    check(cp.returncode == 2 and "HERALD_MC_BODY_DAYS" in cp.stderr, cp.stderr)


@harness.timeout(90)
def test_workers_purge_on_their_own_one_at_a_time(t):
    r = t.redis(aof=False)
    s = t.smtp()
    env = t.env(r, s, HERALD_MC_RETENTION_DAYS="10", HERALD_MC_BODY_DAYS="3")
    populate(t, env)
    ws = [t.worker(dict(env, HERALD_WORKER_ID="w%d" % i)) for i in (1, 2)]
    wait_until(lambda: mc_show(env, "old-29") is None, 30, "the old records removed")
    wait_until(lambda: (mc_show(env, "mid-4") or {}).get("body_expired") is True, 10,
               "the middle bodies cleared")
    time.sleep(1)
    done = [d for w in ws for d in w.logs()
            if d.get("msg") == "message center retention: old records removed"]
    check(len(done) == 1, "one worker purged, not %d: %r" % (len(done), done))
    check(done[0]["records"] == "30" and done[0]["bodies"] == "5", done[0])
    check(r.cmd("KEYS", t.prefix + ":mc_purge:*") == [], "the lease was not released")
    # the workers still deliver
    harness.push(r, t.prefix, make_job(id="after-purge"))
    wait_until(lambda: "after-purge" in s.ids(), 15, "delivered after the purge")
    for w in ws:
        check(w.stop() == 0, "exit code")
