"""The quota scripts redis/quota_take.lua, quota_settle.lua, quota_pause.lua
and quota_probe.lua, run as the binaries embed them (harness.lua_script:
the build's expanded text) against a real redis-server: one decision at
a time, and safe to run twice — the worker re-sends an operation whose
reply a lost connection swallowed, so a replayed TAKE must not count
twice nor a replayed SETTLE give back twice.

Every counter key K comes with its jobs hash K:jobs (what each attempt
holds in K), passed as a key of its own: quota_take's KEYS are pauses,
wait, counter_1..counter_k, jobs_1..jobs_k; quota_settle's counter_1..
counter_k, jobs_1..jobs_k. The tests check the counters, the jobs hashes,
their expiry times and the waiting set after each call."""
import time

import harness
from harness import check

TAKE = harness.lua_script("quota_take")
SETTLE = harness.lua_script("quota_settle")
PAUSE = harness.lua_script("quota_pause")
PROBE = harness.lua_script("quota_probe")

# Times come from the clock at run time: the counters' PEXPIREAT is
# handed to a real redis-server, which deletes a key whose time is past.
NOW = int(time.time() * 1000)
DAY_START = NOW // 86400000 * 86400000
DAY_END = DAY_START + 86400000  # the end of today (UTC)
MIN_START = NOW // 60000 * 60000
EXPIRE_AT = DAY_END + 86400000  # kept a day past the window, as the worker does
SENDER = "scheme:acme/b@acme.test"


def counter(p, kind="day", sender=SENDER):
    """The counter key of keys.h's keys_quota_counter for this window."""
    start = DAY_START if kind == "day" else MIN_START
    return "%s:quota:%s:%s:%d" % (p, sender, kind, start)


def jobs(p, kind="day", sender=SENDER):
    """The counter's jobs hash (keys_quota_jobs)."""
    return counter(p, kind, sender) + ":jobs"


def wait_key(p, sender=SENDER):
    return "%s:quota:wait:%s" % (p, sender)


KINDS = ("day", "min")


def take(r, p, attempt, n, limits, sender=SENDER, job="j1"):
    kinds = KINDS[: len(limits)]
    keys = ["%s:pauses" % p, wait_key(p, sender)]
    keys += [counter(p, k, sender) for k in kinds]
    keys += [jobs(p, k, sender) for k in kinds]
    args = [sender, job, NOW, n, attempt]
    for lim in limits:
        args += [lim, EXPIRE_AT]
    return r.cmd("EVAL", TAKE, len(keys), *keys, *args)


def settle(r, p, attempt, keep, k=1, sender=SENDER):
    kinds = KINDS[:k]
    keys = [counter(p, kd, sender) for kd in kinds] + [jobs(p, kd, sender) for kd in kinds]
    return r.cmd("EVAL", SETTLE, len(keys), *keys, keep, attempt)


def used(r, p, kind="day", sender=SENDER):
    v = r.cmd("GET", counter(p, kind, sender))
    return int(v) if v is not None else 0


def held(r, p, attempt, kind="day", sender=SENDER):
    """What `attempt` holds in the counter, by its jobs hash."""
    v = r.cmd("HGET", jobs(p, kind, sender), attempt)
    return int(v) if v is not None else 0


def test_take_twice_counts_once_and_settle_twice_gives_once(t):
    r, p = t.redis(aof=False), t.prefix
    r.cmd("ZADD", wait_key(p), NOW, "j1")
    r.cmd("ZADD", wait_key(p), NOW, "j2")
    check(take(r, p, "j1:1", 3, [5]) == [0, 0], "first take")
    check(take(r, p, "j1:1", 3, [5]) == [0, 0], "replayed take")
    check(used(r, p) == 3, "counted %d, want 3" % used(r, p))
    check(held(r, p, "j1:1") == 3, "the jobs hash says j1:1 holds %d, want 3" % held(r, p, "j1:1"))
    check(r.cmd("ZSCORE", wait_key(p), "j1") is None, "a taken job stayed in the waiting set")
    for key in (counter(p), jobs(p)):
        check(r.cmd("PEXPIRETIME", key) == EXPIRE_AT,
              "%s expires at %s, want %d" % (key, r.cmd("PEXPIRETIME", key), EXPIRE_AT))
    check(take(r, p, "j2:1", 3, [5], job="j2") == [1, 0], "no room for 3 more of 5")
    check(used(r, p) == 3, "a refused take changed the counter")
    check(held(r, p, "j2:1") == 0, "a refused take is in the jobs hash")
    check(r.cmd("ZSCORE", wait_key(p), "j2") is not None, "a refused take left the waiting set")
    settle(r, p, "j1:1", 0)
    settle(r, p, "j1:1", 0)
    check(used(r, p) == 0, "given back %d" % (3 - used(r, p)))
    check(r.cmd("HEXISTS", jobs(p), "j1:1") == 0, "a settled attempt keeping 0 is still in the jobs hash")
    check(take(r, p, "j2:1", 3, [5], job="j2") == [0, 0], "room again")
    check(used(r, p) == 3, "counter %d" % used(r, p))
    check(r.cmd("ZCARD", wait_key(p)) == 0, "the waiting set still holds %s" % r.cmd("ZRANGE", wait_key(p), 0, -1))


def test_partial_acceptance_keeps_what_was_accepted(t):
    r, p = t.redis(aof=False), t.prefix
    check(take(r, p, "j1:1", 4, [10]) == [0, 0], "take 4")
    settle(r, p, "j1:1", 3)         # one recipient refused for now
    settle(r, p, "j1:1", 3)         # the same settle, replayed
    check(used(r, p) == 3, "after giving 1 back: %d" % used(r, p))
    check(held(r, p, "j1:1") == 3, "j1:1 holds %d after keeping 3" % held(r, p, "j1:1"))
    # the retry of that recipient is a new claim (fence 2): it takes again
    check(take(r, p, "j1:2", 1, [10]) == [0, 0], "retry takes")
    check(used(r, p) == 4, "after the retry: %d" % used(r, p))
    # keeping more than an attempt holds keeps what it holds
    settle(r, p, "j1:2", 5)
    check(used(r, p) == 4, "over-keep: %d" % used(r, p))
    check(held(r, p, "j1:2") == 1, "over-keep changed what j1:2 holds: %d" % held(r, p, "j1:2"))
    settle(r, p, "j1:2", 0)
    check(used(r, p) == 3, "the retry failed after all: %d" % used(r, p))
    check(held(r, p, "j1:1") == 3, "settling j1:2 touched j1:1: %d" % held(r, p, "j1:1"))


def test_every_counter_or_none(t):
    r, p = t.redis(aof=False), t.prefix
    check(take(r, p, "a:1", 2, [10, 2], job="a") == [0, 0], "day and minute")
    check(held(r, p, "a:1", "day") == 2 and held(r, p, "a:1", "min") == 2,
          "each counter's jobs hash holds the attempt: %d, %d"
          % (held(r, p, "a:1", "day"), held(r, p, "a:1", "min")))
    check(take(r, p, "b:1", 1, [10, 2], job="b") == [2, 0], "the minute counter is full")
    check(used(r, p, "day") == 2 and used(r, p, "min") == 2, "a refused take counted")
    check(held(r, p, "b:1", "day") == 0, "a refused take is in the day jobs hash")
    settle(r, p, "a:1", 0, k=2)
    check(used(r, p, "day") == 0 and used(r, p, "min") == 0, "both given back")


def test_jobs_hashes_are_the_keys_given(t):
    # The scripts build no key names: the jobs hash is the key passed, and
    # a counter that expired meanwhile is left alone (never below 0).
    r, p = t.redis(aof=False), t.prefix
    c, h = "%s:c" % p, "%s:held-here" % p
    out = r.cmd("EVAL", TAKE, 4, "%s:pauses" % p, wait_key(p), c, h,
                SENDER, "j1", NOW, 2, "j1:1", 5, EXPIRE_AT)
    check(out == [0, 0], "take: %s" % out)
    check(r.cmd("HGET", h, "j1:1") == b"2", "the given jobs hash holds %s" % r.cmd("HGET", h, "j1:1"))
    check(r.cmd("EXISTS", c + ":jobs") == 0, "the script made its own jobs key")
    r.cmd("DEL", c)  # the counter expired
    r.cmd("EVAL", SETTLE, 2, c, h, 0, "j1:1")
    check(r.cmd("GET", c) is None, "settle recreated an expired counter: %s" % r.cmd("GET", c))
    check(r.cmd("HEXISTS", h, "j1:1") == 0, "the attempt stayed in the jobs hash")


def test_take_without_counters_only_leaves_the_waiting_set(t):
    r, p = t.redis(aof=False), t.prefix
    r.cmd("ZADD", wait_key(p), NOW, "j1")
    check(take(r, p, "j1:1", 3, []) == [0, 0], "a sender with no limits")
    check(r.cmd("ZCARD", wait_key(p)) == 0, "the job stayed in the waiting set")


def test_pause_wins_and_a_later_pause_is_kept(t):
    r, p = t.redis(aof=False), t.prefix
    k = "%s:pauses" % p
    check(r.cmd("EVAL", PAUSE, 1, k, "relay", NOW + 5000, "rate limited") == 1, "pause")
    check(r.cmd("EVAL", PAUSE, 1, k, "relay", NOW + 1000, "shorter") == 0, "shorter pause")
    check(r.cmd("EVAL", PAUSE, 1, k, "relay", NOW + 5000, "same end") == 0, "a pause ending as late")
    check(take(r, p, "j1:1", 1, [5], sender="relay") == [-1, NOW + 5000], "paused")
    check(used(r, p, sender="relay") == 0, "a paused take counted")
    check(r.cmd("HGET", k, "relay") == b"%d rate limited" % (NOW + 5000), r.cmd("HGET", k, "relay"))
    check(r.cmd("EVAL", PAUSE, 1, k, "relay", NOW + 9000, "longer") == 1, "a later pause")
    check(r.cmd("HGET", k, "relay") == b"%d longer" % (NOW + 9000), r.cmd("HGET", k, "relay"))
    # a pause that is over does not stop a take
    check(r.cmd("HSET", k, "relay", "%d over" % (NOW - 1)) == 0, "pause rewritten")
    check(take(r, p, "j1:1", 1, [5], sender="relay") == [0, 0], "a past pause still stops the take")
    check(used(r, p, sender="relay") == 1, "counted %d" % used(r, p, sender="relay"))


MIN = 60000


def probe(r, p, now, sender="relay"):
    return r.cmd("EVAL", PROBE, 2, "%s:pauses" % p, "%s:pause_probes" % p, sender, now,
                 "server refused the connection (554)", MIN, 60 * MIN)


def test_probe_pause_doubles_while_the_sender_still_refuses(t):
    # A refusal that names no end: a minute, then 2, 4, ... minutes each
    # time the probe fails again, never more than an hour; the jobs of
    # one probe failing together double it once; a quiet spell starts over.
    r, p = t.redis(aof=False), t.prefix
    now = NOW
    check(probe(r, p, now) == now + MIN, "first: a minute")
    check(probe(r, p, now + 5000) == now + MIN, "a second failure while paused changes nothing")
    steps = []
    for _ in range(8):
        now = int(r.cmd("HGET", "%s:pauses" % p, "relay").split()[0]) + 3000  # probe fails
        until = probe(r, p, now)
        steps.append((until - now) // MIN)
        check(probe(r, p, now + 10) == until, "the same probe's other jobs")
    check(steps == [2, 4, 8, 16, 32, 60, 60, 60], steps)
    # quiet for hours: it starts over at a minute
    later = now + 10 * 3600 * 1000
    check(probe(r, p, later) == later + MIN, "after a quiet spell")
    # other senders are their own
    check(probe(r, p, later, sender="scheme:acme/b@acme.test") == later + MIN, "another sender")
