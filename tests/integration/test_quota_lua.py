"""The quota scripts of common/quota.h, run as written (read from the
header) against a real redis-server: one decision at a time, and safe to
run twice — the worker re-sends an operation whose reply a lost
connection swallowed, so a replayed TAKE must not count twice nor a
replayed SETTLE give back twice."""
import codecs
import os
import re
import time

import harness
from harness import check

HEADER = os.path.join(harness.REPO, "common", "quota.h")


def lua(name):
    text = open(HEADER).read()
    m = re.search(r"#define %s\s*\\\n(.*?)(?:\n\n|\n/\*)" % name, text, re.S)
    check(m, "no %s in quota.h" % name)
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
    return codecs.decode("".join(parts), "unicode_escape")


TAKE, SETTLE, PAUSE = lua("QUOTA_TAKE_LUA"), lua("QUOTA_SETTLE_LUA"), lua("QUOTA_PAUSE_LUA")
# Times come from the clock at run time: the counters' PEXPIREAT is
# handed to a real redis-server, which deletes a key whose time is past.
NOW = int(time.time() * 1000)
DAY_END = (NOW // 86400000 + 1) * 86400000  # the end of today (UTC)


def take(r, p, attempt, n, limits, sender="scheme:acme/b@acme.test", job="j1"):
    keys = ["%s:pauses" % p, "%s:quota:wait:%s" % (p, sender)]
    args = [sender, job, NOW, n, attempt]
    for i, lim in enumerate(limits):
        keys.append("%s:quota:%s:%s:0" % (p, sender, "day" if i == 0 else "min"))
        args += [lim, DAY_END + 86400000]
    return r.cmd("EVAL", TAKE, len(keys), *keys, *args)


def settle(r, p, attempt, keep, k=1, sender="scheme:acme/b@acme.test"):
    keys = ["%s:quota:%s:%s:0" % (p, sender, "day" if i == 0 else "min") for i in range(k)]
    return r.cmd("EVAL", SETTLE, len(keys), *keys, keep, attempt)


def used(r, p, kind="day", sender="scheme:acme/b@acme.test"):
    v = r.cmd("GET", "%s:quota:%s:%s:0" % (p, sender, kind))
    return int(v) if v is not None else 0


def test_take_twice_counts_once_and_settle_twice_gives_once(t):
    r, p = t.redis(), t.prefix
    check(take(r, p, "j1:1", 3, [5]) == [0, 0], "first take")
    check(take(r, p, "j1:1", 3, [5]) == [0, 0], "replayed take")
    check(used(r, p) == 3, "counted %d, want 3" % used(r, p))
    check(take(r, p, "j2:1", 3, [5], job="j2") == [1, 0], "no room for 3 more of 5")
    check(used(r, p) == 3, "a refused take changed the counter")
    settle(r, p, "j1:1", 0)
    settle(r, p, "j1:1", 0)
    check(used(r, p) == 0, "given back %d" % (3 - used(r, p)))
    check(take(r, p, "j2:1", 3, [5], job="j2") == [0, 0], "room again")
    check(used(r, p) == 3, "counter %d" % used(r, p))


def test_partial_acceptance_keeps_what_was_accepted(t):
    r, p = t.redis(), t.prefix
    check(take(r, p, "j1:1", 4, [10]) == [0, 0], "take 4")
    settle(r, p, "j1:1", 3)         # one recipient refused for now
    settle(r, p, "j1:1", 3)         # the same settle, replayed
    check(used(r, p) == 3, "after giving 1 back: %d" % used(r, p))
    # the retry of that recipient is a new claim (fence 2): it takes again
    check(take(r, p, "j1:2", 1, [10]) == [0, 0], "retry takes")
    check(used(r, p) == 4, "after the retry: %d" % used(r, p))
    # keeping more than an attempt holds keeps what it holds
    settle(r, p, "j1:2", 5)
    check(used(r, p) == 4, "over-keep: %d" % used(r, p))
    settle(r, p, "j1:2", 0)
    check(used(r, p) == 3, "the retry failed after all: %d" % used(r, p))


def test_every_counter_or_none(t):
    r, p = t.redis(), t.prefix
    check(take(r, p, "a:1", 2, [10, 2], job="a") == [0, 0], "day and minute")
    check(take(r, p, "b:1", 1, [10, 2], job="b") == [2, 0], "the minute counter is full")
    check(used(r, p, "day") == 2 and used(r, p, "min") == 2, "a refused take counted")
    settle(r, p, "a:1", 0, k=2)
    check(used(r, p, "day") == 0 and used(r, p, "min") == 0, "both given back")


def test_pause_wins_and_a_later_pause_is_kept(t):
    r, p = t.redis(), t.prefix
    k = "%s:pauses" % p
    check(r.cmd("EVAL", PAUSE, 1, k, "relay", NOW + 5000, "rate limited") == 1, "pause")
    check(r.cmd("EVAL", PAUSE, 1, k, "relay", NOW + 1000, "shorter") == 0, "shorter pause")
    check(take(r, p, "j1:1", 1, [5], sender="relay") == [-1, NOW + 5000], "paused")
    check(used(r, p, sender="relay") == 0, "a paused take counted")
    check(r.cmd("HGET", k, "relay") == b"%d rate limited" % (NOW + 5000), r.cmd("HGET", k, "relay"))


PROBE = lua("QUOTA_PROBE_LUA")
MIN = 60000


def probe(r, p, now, sender="relay"):
    return r.cmd("EVAL", PROBE, 2, "%s:pauses" % p, "%s:pause_probes" % p, sender, now,
                 "server refused the connection (554)", MIN, 60 * MIN)


def test_probe_pause_doubles_while_the_sender_still_refuses(t):
    # A refusal that names no end: a minute, then 2, 4, ... minutes each
    # time the probe fails again, never more than an hour; the jobs of
    # one probe failing together double it once; a quiet spell starts over.
    r, p = t.redis(), t.prefix
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
