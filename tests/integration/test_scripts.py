"""Every Redis script in redis/ that test_quota_lua.py does not cover, run
with EVAL of the exact text the binaries embed (harness.lua_script: the
build's expansion, includes inlined) against a real redis-server, with
KEYS and ARGV as each file's header documents them: full keys, or the
stems keys.h builds (<p>:job:, <p>:queue:<lane>:org:, <p>:processing:)
which the script completes with an id, an organisation or a worker id.

Each test sets up Redis state, runs one script (or a few calls of it) and
checks the reply and the state it leaves: list contents and order, hash
fields, scores, expiry. Times derive from the clock at run time. One test
SCRIPT LOADs every script (Redis must accept it and name it by the SHA-1
of its text); the last checks that every script is exercised here or in
test_quota_lua.py."""
import ast
import collections
import hashlib
import inspect
import json
import os
import socket
import time

import harness
from harness import check

# Every script this file runs; test_quota_lua.py runs the others (quota_take,
# quota_settle, quota_pause, quota_probe). Each has test functions named
# test_<script>_...
SCRIPTS = (
    "queue_take", "queue_claim", "queue_sent", "queue_dead", "queue_sched",
    "queue_replace", "queue_due", "queue_handback", "queue_reclaim",
    "queue_partial", "queue_fence", "big_stage",
    "big_finish", "quota_wait", "quota_resume", "scheme_cas", "purge_release",
    "login_lease", "token_create", "token_revoke", "dead_replay",
)

NOW = int(time.time() * 1000)
HB = 30000                    # heartbeat_ms
TTL = 7 * 86400000            # the ledger's life (ms)
LATER = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW // 1000 + 3600))  # a send_at
MARK = "herald:oversize "     # worker/queue.c's OVERSIZE_MARK
LANES = ("high", "normal", "low")


def run(r, name, keys, args=()):
    """EVAL of script `name` as embedded, with its KEYS and ARGV."""
    return r.cmd("EVAL", harness.lua_script(name), len(keys), *keys, *args)


def job(id=None, org=None, priority=None, **extra):
    """A job as a producer pushes it (compact JSON)."""
    d = {}
    if id is not None:
        d["id"] = id
    if org is not None:
        d["org"] = org
    if priority is not None:
        d["priority"] = priority
    d["to"] = ["rcpt@example.test"]
    d.update(extra)
    return json.dumps(d, separators=(",", ":"))


def push(r, key, *jobs):
    """LPUSH in order, as producers do: the first is the oldest, at the right."""
    r.cmd("LPUSH", key, *jobs)


def lrange(r, key):
    return [v.decode() for v in r.cmd("LRANGE", key, 0, -1)]


def hgetall(r, key):
    v = r.cmd("HGETALL", key)
    return {v[i].decode(): v[i + 1].decode() for i in range(0, len(v), 2)}


def ident(raw):
    """The id of a job entry (or the raw text when it has none)."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return json.loads(raw).get("id", raw)
    except ValueError:
        return raw


# ---- keys (common/keys.h) ----

def lane(p, l):
    return "%s:queue:%s" % (p, l)


def lanes(p):
    return [lane(p, l) for l in LANES]


def org_stem(p, l):
    return "%s:queue:%s:org:" % (p, l)


def proc(p, me):
    return "%s:processing:%s" % (p, me)


def ledger(p, id):
    return "%s:job:%s" % (p, id)


def workers(p):
    return "%s:workers" % p


# ---- queue_take ----

Taken = collections.namedtuple("Taken", "job status attempts first_at id fence partial")


def take_call(p, n, me="w1", window=0, now=NOW, max_bytes=1 << 30, max_job=1 << 20):
    """queue_take's KEYS and ARGV, as worker/queue.c's q_take passes them."""
    keys = lanes(p) + [proc(p, me), workers(p)]
    keys += ["%s:fair:%s" % (p, l) for l in LANES]
    keys += ["%s:fair:%s:staged" % (p, l) for l in LANES]
    keys += ["%s:fair:tick" % p]
    args = [n, me, now, HB, TTL, "%s:job:" % p, max_bytes, max_job, window]
    args += [org_stem(p, l) for l in LANES] + [MARK]
    return keys, args


def take(r, p, n, **kw):
    out = run(r, "queue_take", *take_call(p, n, **kw))
    check(len(out) % 7 == 0, "take: %d elements, not {job, status, attempts, first_at, id, fence, "
          "partial} per job: %r" % (len(out), out))
    return [Taken(*out[i:i + 7]) for i in range(0, len(out), 7)]


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _typed(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        return [_typed(f) for _ in range(int(rest))]
    if kind == b"$":
        n = int(rest)
        return ("bulk", None) if n < 0 else ("bulk", f.read(n + 2)[:-2])
    return ({b"+": "status", b"-": "error", b":": "int"}[kind], rest)


def typed_eval(r, name, keys, args):
    """EVAL on a connection of its own, each reply with its RESP type:
    ("status" | "bulk" | "int" | "error", bytes), arrays as lists."""
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as s:
        s.sendall(_encode(["EVAL", harness.lua_script(name), len(keys), *keys, *args]))
        with s.makefile("rb") as f:
            return _typed(f)


def fill_lanes(r, p, per_lane):
    for l in LANES:
        push(r, lane(p, l), *[job("%s%d" % (l[0], i), priority=l) for i in range(per_lane)])


def test_queue_take_priority_shares_four_three_one(t):
    r, p = t.redis(aof=False), t.prefix
    fill_lanes(r, p, 20)
    got = take(r, p, 8)
    want = ["h0", "h1", "h2", "h3", "n0", "n1", "n2", "l0"]
    check([ident(x.job) for x in got] == want, "8 slots: %s, want %s" % ([ident(x.job) for x in got], want))
    got = take(r, p, 16)
    ids = [ident(x.job) for x in got]
    check(ids == ["h4", "h5", "h6", "h7", "h8", "h9", "h10", "h11",
                  "n3", "n4", "n5", "n6", "n7", "n8", "l1", "l2"], "16 slots: %s" % ids)
    # one slot at a time: the fleet-wide tick numbers the slots, so eight
    # takes of one give high, normal, high, normal, high, normal, high, low
    seq = []
    for _ in range(8):
        (x,) = take(r, p, 1)
        seq.append(ident(x.job)[0])
    check("".join(seq) == "hnhnhnhl", "takes of one slot went to lanes %s" % "".join(seq))
    check(r.cmd("GET", "%s:fair:tick" % p) == b"32", "tick %s after 32 slots" % r.cmd("GET", "%s:fair:tick" % p))
    check([r.cmd("LLEN", k) for k in lanes(p)] == [20 - 16, 20 - 12, 20 - 4],
          "lane lengths %s" % [r.cmd("LLEN", k) for k in lanes(p)])


def test_queue_take_unused_share_goes_to_the_lanes_by_priority(t):
    r, p = t.redis(aof=False), t.prefix
    push(r, lane(p, "high"), *[job("h%d" % i) for i in range(2)])
    push(r, lane(p, "normal"), *[job("n%d" % i) for i in range(10)])
    ids = [ident(x.job) for x in take(r, p, 8)]
    # high has 2 of its 4 slots, normal its 3, low none: the 3 left go to
    # high (empty), then normal
    check(ids == ["h0", "h1", "n0", "n1", "n2", "n3", "n4", "n5"], "take: %s" % ids)
    # a busy high lane and a busy low lane: low keeps its one slot
    r.cmd("DEL", lane(p, "normal"))
    r.cmd("SET", "%s:fair:tick" % p, 0)
    push(r, lane(p, "high"), *[job("H%d" % i) for i in range(10)])
    push(r, lane(p, "low"), *[job("L%d" % i) for i in range(10)])
    ids = [ident(x.job) for x in take(r, p, 8)]
    check(ids == ["H0", "H1", "H2", "H3", "L0", "H4", "H5", "H6"], "take: %s" % ids)


def test_queue_take_round_robin_over_organisations(t):
    r, p = t.redis(aof=False), t.prefix
    # a burst of six from A, then B's two and C's one
    push(r, lane(p, "normal"), *[job("a%d" % i, org="A") for i in range(1, 7)],
         job("b1", org="B"), job("b2", org="B"), job("c1", org="C"))
    ring, staged = "%s:fair:normal" % p, "%s:fair:normal:staged" % p
    ids = [ident(x.job) for x in take(r, p, 4, window=100)]
    check(ids == ["a1", "b1", "c1", "a2"], "first take: %s" % ids)
    check(r.cmd("LLEN", lane(p, "normal")) == 0, "the lane was not staged whole")
    check(lrange(r, ring) == ["B", "A"], "ring %s, want B then A" % lrange(r, ring))
    check(r.cmd("GET", staged) == b"5", "staged count %s, want 5" % r.cmd("GET", staged))
    check([ident(v) for v in lrange(r, org_stem(p, "normal") + "A")] == ["a6", "a5", "a4", "a3"],
          "A's staged jobs: %s" % lrange(r, org_stem(p, "normal") + "A"))
    check([ident(v) for v in lrange(r, org_stem(p, "normal") + "B")] == ["b2"], "B's staged jobs")
    check(r.cmd("EXISTS", org_stem(p, "normal") + "C") == 0, "C's staged list is not empty")
    ids = [ident(x.job) for x in take(r, p, 4, window=100)]
    check(ids == ["b2", "a3", "a4", "a5"], "second take: %s" % ids)
    check(lrange(r, ring) == ["A"], "ring %s" % lrange(r, ring))
    check(r.cmd("GET", staged) == b"1", "staged count %s, want 1" % r.cmd("GET", staged))
    ids = [ident(x.job) for x in take(r, p, 4, window=100)]
    check(ids == ["a6"], "third take: %s" % ids)
    for k in (ring, staged, org_stem(p, "normal") + "A"):
        check(r.cmd("EXISTS", k) == 0, "%s left after everything was taken" % k)
    # the processing list holds every job taken, the oldest taken at the right
    check([ident(v) for v in reversed(lrange(r, proc(p, "w1")))]
          == ["a1", "b1", "c1", "a2", "b2", "a3", "a4", "a5", "a6"], "processing list")


def test_queue_take_staging_window_and_staged_count(t):
    r, p = t.redis(aof=False), t.prefix
    push(r, lane(p, "normal"), *[job("n%d" % i, org="A") for i in range(10)])
    staged_key, ostem = "%s:fair:normal:staged" % p, org_stem(p, "normal") + "A"
    order = []
    for i in range(10):
        got = take(r, p, 1, window=3)
        check(len(got) == 1, "take %d: %d jobs" % (i, len(got)))
        order.append(ident(got[0].job))
        staged = int(r.cmd("GET", staged_key) or 0)
        check(staged <= 3, "take %d: %d staged, the window is 3" % (i, staged))
        check(r.cmd("LLEN", ostem) == staged, "take %d: the staged count %d, the list %d"
              % (i, staged, r.cmd("LLEN", ostem)))
        # a lane's length is its LLEN plus what it has staged
        check(r.cmd("LLEN", lane(p, "normal")) + staged == 9 - i,
              "take %d: %d in the lane + %d staged" % (i, r.cmd("LLEN", lane(p, "normal")), staged))
    check(order == ["n%d" % i for i in range(10)], "one organisation goes first in, first out: %s" % order)
    check(r.cmd("EXISTS", staged_key, "%s:fair:normal" % p) == 0, "ring or count left")


def test_queue_take_stages_at_most_the_window_and_the_cap(t):
    # From a long lane a take stages max(512, 4 x max) at once (not only the
    # jobs it takes), never more than the window: over both of its visits
    # to a lane (its share, then what the shares left).
    r = t.redis(aof=False)
    # a take of 1: at least 512
    p = t.prefix + ":a"
    push(r, lane(p, "normal"), *[job("n%d" % i) for i in range(3000)])
    (x,) = take(r, p, 1, window=100000)
    check(ident(x.job) == "n0", "took %s" % ident(x.job))
    staged = int(r.cmd("GET", "%s:fair:normal:staged" % p))
    check(staged + 1 == 512, "a take of 1 staged %d, want 512" % (staged + 1))
    check(r.cmd("LLEN", lane(p, "normal")) + staged == 2999, "jobs lost or doubled")
    check(r.cmd("LLEN", org_stem(p, "normal")) == staged, "jobs without an org are staged under ''")
    # a take of 200: at least 4 x 200
    p = t.prefix + ":b"
    push(r, lane(p, "low"), *[job("l%d" % i) for i in range(3000)])
    got = take(r, p, 200, window=100000)
    check([ident(x.job) for x in got] == ["l%d" % i for i in range(200)], "a take of 200 from one lane")
    staged = int(r.cmd("GET", "%s:fair:low:staged" % p))
    check(staged + 200 == 800, "a take of 200 staged %d, want 4 x 200" % (staged + 200))
    check(r.cmd("LLEN", lane(p, "low")) + staged == 2800, "jobs lost or doubled")
    # a window of 600: a long lane fills it, and no more
    p = t.prefix + ":c"
    push(r, lane(p, "high"), *[job("h%d" % i) for i in range(3000)])
    for i in range(3):
        (x,) = take(r, p, 1, window=600)
        check(ident(x.job) == "h%d" % i, "took %s" % ident(x.job))
        staged = int(r.cmd("GET", "%s:fair:high:staged" % p) or 0)
        # the first take stages its cap (512) less the one it took; the
        # next ones fill the window (less at most the one just taken)
        lo, hi = (511, 511) if i == 0 else (599, 600)
        check(lo <= staged <= hi, "%d staged with a window of 600 after take %d, want %d..%d"
              % (staged, i, lo, hi))
        check(r.cmd("LLEN", lane(p, "high")) + staged == 3000 - i - 1, "jobs lost or doubled")


def test_queue_take_window_0_is_first_in_first_out(t):
    r, p = t.redis(aof=False), t.prefix
    push(r, lane(p, "normal"), job("a1", org="A"), job("a2", org="A"), job("a3", org="A"),
         job("b1", org="B"), job("b2", org="B"), job("a4", org="A"))
    ids = [ident(x.job) for x in take(r, p, 5, window=0)]
    check(ids == ["a1", "a2", "a3", "b1", "b2"], "window 0: %s" % ids)
    for k in ("%s:fair:normal" % p, "%s:fair:normal:staged" % p,
              org_stem(p, "normal") + "A", org_stem(p, "normal") + "B"):
        check(r.cmd("EXISTS", k) == 0, "window 0 staged something: %s" % k)
    check(lrange(r, lane(p, "normal")) == [job("a4", org="A")], "the lane's rest")
    # a window, nothing staged and the whole lane fits in the take: straight
    # from the lane too
    r.cmd("DEL", lane(p, "normal"))
    push(r, lane(p, "normal"), job("x1", org="A"), job("x2", org="A"), job("y1", org="B"))
    ids = [ident(x.job) for x in take(r, p, 8, window=100)]
    check(ids == ["x1", "x2", "y1"], "a lane that fits: %s" % ids)
    check(r.cmd("EXISTS", "%s:fair:normal" % p, org_stem(p, "normal") + "A") == 0, "staged a lane that fit")


def test_queue_take_oversize_job_comes_back_as_the_mark(t):
    r, p = t.redis(aof=False), t.prefix
    big = job("big1", body="x" * 200)
    small = job("s1")
    push(r, lane(p, "normal"), big, small)
    reply = typed_eval(r, "queue_take", *take_call(p, 8, max_job=100))
    check(len(reply) == 14, "two jobs: %r" % reply)
    check(reply[0] == ("status", (MARK + str(len(big))).encode()),
          "the oversize job came back as %r, want the status reply %r" % (reply[0], MARK + str(len(big))))
    check(reply[1:7] == [("bulk", b"-"), ("int", b"0"), ("int", b"0"), ("bulk", b""), ("int", b"0"),
                         ("int", b"0")], "an oversize job is not claimed: %r" % reply[1:7])
    check(reply[7] == ("bulk", small.encode()) and reply[8] == ("bulk", b"ok"), "the small job: %r" % reply[7:9])
    check(lrange(r, proc(p, "w1")) == [small, big], "both are in the processing list, whole: %s"
          % [len(v) for v in lrange(r, proc(p, "w1"))])
    check(r.cmd("EXISTS", ledger(p, "big1")) == 0, "the oversize job was claimed")


def test_queue_take_stops_at_max_bytes_after_one_job(t):
    r, p = t.redis(aof=False), t.prefix
    jobs = [job("j%d" % i, body="x" * 50) for i in range(5)]
    push(r, lane(p, "normal"), *jobs)
    size = len(jobs[0])
    got = take(r, p, 8, max_bytes=1)
    check([ident(x.job) for x in got] == ["j0"], "max_bytes 1: the first job only, got %s"
          % [ident(x.job) for x in got])
    got = take(r, p, 8, max_bytes=2 * size)
    check([ident(x.job) for x in got] == ["j1", "j2"], "room for two: %s" % [ident(x.job) for x in got])
    check(r.cmd("LLEN", lane(p, "normal")) == 2, "lane left %d" % r.cmd("LLEN", lane(p, "normal")))


def test_queue_take_claims_jobs_with_a_readable_id(t):
    r, p = t.redis(aof=False), t.prefix
    r.cmd("HSET", workers(p), "w2", NOW)                 # w2 is alive
    r.cmd("HSET", ledger(p, "sent1"), "state", "sent", "attempts", 2, "fence", 2)
    r.cmd("HSET", ledger(p, "busy1"), "state", "inflight", "owner", "w2", "attempts", 1, "fence", 1)
    r.cmd("HSET", ledger(p, "part1"), "state", "deferred", "attempts", 1, "fence", 1,
          "first_at", NOW - 5000, "accepted", "a@example.test")
    entries = [job("new1"), job("sent1"), job("busy1"), job("part1"),
               job("later1", send_at=LATER), job(), "not json",
               job("bad id"), job("x" * 129)]
    push(r, lane(p, "normal"), *entries)
    got = take(r, p, 16)
    check([x.job.decode() for x in got] == entries, "taken in order: %s" % [x.job for x in got])
    by = {x.job.decode(): x for x in got}
    n = by[entries[0]]
    check(n[1:] == (b"ok", 1, NOW, b"new1", 1, 0), "a new id: %r" % (n[1:],))
    led = hgetall(r, ledger(p, "new1"))
    check(led == {"state": "inflight", "owner": "w1", "attempts": "1", "first_at": str(NOW), "fence": "1"},
          "new1's ledger: %s" % led)
    pttl = r.cmd("PTTL", ledger(p, "new1"))
    check(TTL - 60000 < pttl <= TTL, "the ledger lives %d ms, want %d" % (pttl, TTL))
    check(by[entries[1]][1:] == (b"sent", 2, 0, b"sent1", 0, 0), "a sent id: %r" % (by[entries[1]][1:],))
    check(hgetall(r, ledger(p, "sent1"))["state"] == "sent", "a sent id changed")
    check(by[entries[2]][1:] == (b"busy", 0, 0, b"busy1", 0, 0), "an id a live worker holds: %r"
          % (by[entries[2]][1:],))
    check(hgetall(r, ledger(p, "busy1"))["owner"] == "w2", "a busy id changed hands")
    check(by[entries[3]][1:] == (b"ok", 2, NOW - 5000, b"part1", 2, 1), "a partly accepted id: %r"
          % (by[entries[3]][1:],))
    for e in entries[4:]:
        check(by[e][1:] == (b"-", 0, 0, b"", 0, 0), "not to be claimed: %s -> %r" % (e, by[e][1:]))
    check(r.cmd("EXISTS", ledger(p, "later1")) == 0, "a job with send_at was claimed")
    check(r.cmd("EXISTS", ledger(p, "bad id"), ledger(p, "x" * 129)) == 0, "an unreadable id was claimed")
    check(len(lrange(r, proc(p, "w1"))) == len(entries), "every taken job is in the processing list")


def test_queue_take_reads_the_id_without_a_parse_only_when_it_cannot_be_wrong(t):
    """A job that starts with its id and has no "send_at" and no \\u
    escape is claimed without a parse; anything else is decoded."""
    r, p = t.redis(aof=False), t.prefix
    entries = [
        '{"meta":{"id":"inner"},"id":"late1"}',              # id not first: parsed
        '{"id":"esc1","\\u0073end_at":"%s"}' % LATER,        # send_at spelled with an escape
        '{"id":"sub1","subject":"caf\\u00e9"}',               # an escape elsewhere: parsed
        '{"id":"plain1","subject":"say send_at"}',           # the word in text: parsed, claimed
        ' { "id" : "sp1" , "to":[]}',                         # blanks around
        '{"id":"cut1","to":',                                 # not JSON: claimed; the worker
    ]                                                         # releases it (invalid job)
    push(r, lane(p, "normal"), *entries)
    got = take(r, p, 16)
    ids = [x[4] for x in got]
    check(ids == [b"late1", b"", b"sub1", b"plain1", b"sp1", b"cut1"], "claimed ids %r" % ids)
    check(r.cmd("EXISTS", ledger(p, "inner"), ledger(p, "esc1")) == 0, "a wrong id was claimed")
    check([x[1] for x in got] == [b"ok", b"-", b"ok", b"ok", b"ok", b"ok"],
          "statuses %r" % [x[1] for x in got])


# ---- queue_claim ----

def claim(r, p, id, me, now):
    return run(r, "queue_claim", [ledger(p, id), workers(p)], [me, now, HB, TTL])


def test_queue_claim_ok_busy_and_fence_increasing(t):
    r, p = t.redis(aof=False), t.prefix
    k = ledger(p, "j1")
    check(claim(r, p, "j1", "w1", NOW) == [b"ok", 1, NOW, 1, 0], "first claim")
    check(hgetall(r, k) == {"state": "inflight", "owner": "w1", "attempts": "1", "first_at": str(NOW),
                            "fence": "1"}, "ledger %s" % hgetall(r, k))
    check(0 < r.cmd("PTTL", k) <= TTL, "no expiry on the ledger")
    # the same worker again (a retry): first_at stays, attempts and fence grow
    check(claim(r, p, "j1", "w1", NOW + 10) == [b"ok", 2, NOW, 2, 0], "the owner claims again")
    # another worker while w1's heartbeat is alive: busy, nothing changes
    r.cmd("HSET", workers(p), "w1", NOW)
    check(claim(r, p, "j1", "w2", NOW + HB - 1) == [b"busy", 0, 0, 0, 0], "w1 is alive")
    check(hgetall(r, k)["owner"] == "w1" and hgetall(r, k)["fence"] == "2", "a busy claim changed the ledger")
    # w1's heartbeat is heartbeat_ms old: w2 takes it over
    check(claim(r, p, "j1", "w2", NOW + HB) == [b"ok", 3, NOW, 3, 0], "w1 is dead")
    check(hgetall(r, k)["owner"] == "w2", "owner %s" % hgetall(r, k)["owner"])
    # an owner with no heartbeat at all holds nothing
    check(claim(r, p, "j1", "w3", NOW + 20) == [b"ok", 4, NOW, 4, 0], "w2 never beat")
    # released (no owner): anybody's
    r.cmd("HDEL", k, "owner")
    check(claim(r, p, "j1", "w1", NOW + 30) == [b"ok", 5, NOW, 5, 0], "a released job")


def test_queue_claim_sent_failed_and_partial(t):
    r, p = t.redis(aof=False), t.prefix
    k = ledger(p, "j1")
    r.cmd("HSET", k, "state", "sent", "attempts", 3, "fence", 3, "first_at", NOW - 100)
    check(claim(r, p, "j1", "w1", NOW) == [b"sent", 3, 0, 0, 0], "a sent job")
    check(hgetall(r, k) == {"state": "sent", "attempts": "3", "fence": "3", "first_at": str(NOW - 100)},
          "claiming a sent job changed it: %s" % hgetall(r, k))
    # failed: starts afresh (attempts and first_at), the fence still grows
    r.cmd("HSET", k, "state", "failed")
    check(claim(r, p, "j1", "w1", NOW) == [b"ok", 1, NOW, 4, 0], "a failed job starts afresh")
    # deferred with accepted recipients: partial
    r.cmd("HSET", k, "state", "deferred", "accepted", "a@example.test")
    r.cmd("HDEL", k, "owner")
    check(claim(r, p, "j1", "w2", NOW + 5) == [b"ok", 2, NOW, 5, 1], "partial")
    check(hgetall(r, k)["accepted"] == "a@example.test", "a claim lost the accepted recipients")


# ---- queue_sent ----

def test_queue_sent_marks_sent_and_counts_stale_fences(t):
    r, p = t.redis(aof=False), t.prefix
    stats = "%s:stats" % p
    for id, fence in (("a", 3), ("b", 2), ("c", 5)):
        r.cmd("HSET", ledger(p, id), "state", "inflight", "owner", "w1", "fence", fence)
    keys = [ledger(p, "a"), ledger(p, "b"), ledger(p, "c"), ledger(p, "d"), stats]
    # a: its fence; b: a stale fence (claimed again since); c: "0", not
    # checked; d: no ledger at all
    out = run(r, "queue_sent", keys, [NOW, TTL, 3, 1, 0, 7])
    check(out == [2], "stale positions %s, want [2]" % out)
    check(r.cmd("HGET", stats, "stale_accepts") == b"1", "stale_accepts %s" % r.cmd("HGET", stats, "stale_accepts"))
    for id in "abcd":
        led = hgetall(r, ledger(p, id))
        check(led.get("state") == "sent" and led.get("sent_at") == str(NOW) and "owner" not in led,
              "%s after sent: %s" % (id, led))
        check(0 < r.cmd("PTTL", ledger(p, id)) <= TTL, "%s has no expiry" % id)
    # two stale ones at once: both positions, both counted
    out = run(r, "queue_sent", [ledger(p, "a"), ledger(p, "b"), stats], [NOW, TTL, 9, 8])
    check(out == [1, 2], "stale positions %s, want [1, 2]" % out)
    check(r.cmd("HGET", stats, "stale_accepts") == b"3", "stale_accepts %s" % r.cmd("HGET", stats, "stale_accepts"))


# ---- queue_dead / queue_sched / queue_replace ----

def test_queue_dead_moves_only_a_job_that_is_there(t):
    r, p = t.redis(aof=False), t.prefix
    pk, dead, k = proc(p, "w1"), "%s:dead" % p, ledger(p, "j1")
    a, b = job("j1"), job("j2")
    push(r, pk, a, b, a)            # j1 twice (taken again after a lost reply)
    r.cmd("HSET", k, "state", "inflight", "owner", "w1", "fence", 1)
    check(run(r, "queue_dead", [pk, dead, k], [a, '{"error":"bad"}']) == 1, "dead")
    check(lrange(r, pk) == [a, b], "one entry of j1 left, from the old end: %s" % lrange(r, pk))
    check(lrange(r, dead) == ['{"error":"bad"}'], "dead list %s" % lrange(r, dead))
    check(hgetall(r, k) == {"state": "failed", "fence": "1"}, "ledger %s" % hgetall(r, k))
    # not there: nothing moves, the ledger is left alone
    r.cmd("HSET", k, "state", "inflight", "owner", "w2")
    check(run(r, "queue_dead", [pk, dead, k], [job("zz"), "E2"]) == 0, "a job that is not there")
    check(lrange(r, dead) == ['{"error":"bad"}'], "dead list grew: %s" % lrange(r, dead))
    check(hgetall(r, k)["state"] == "inflight" and hgetall(r, k)["owner"] == "w2", "ledger changed")
    # no ledger (''): the job moves, no ledger is written
    check(run(r, "queue_dead", [pk, dead, ""], [b, "E3"]) == 1, "dead without a ledger")
    check(lrange(r, dead) == ["E3", '{"error":"bad"}'], "newest dead at the left: %s" % lrange(r, dead))
    check(r.cmd("EXISTS", "") == 0, "wrote a ledger named ''")


def test_queue_sched_moves_only_a_job_that_is_there(t):
    r, p = t.redis(aof=False), t.prefix
    pk, sched, k = proc(p, "w1"), "%s:scheduled" % p, ledger(p, "j1")
    a = job("j1")
    member = job("j1", retry=1)
    push(r, pk, a)
    r.cmd("HSET", k, "state", "inflight", "owner", "w1", "attempts", 2, "fence", 2)
    check(run(r, "queue_sched", [pk, sched, k], [a, member, NOW + 60000, "0"]) == 1, "scheduled")
    check(r.cmd("LLEN", pk) == 0, "still in the processing list")
    check(r.cmd("ZSCORE", sched, member) == str(NOW + 60000).encode(), "due %s" % r.cmd("ZSCORE", sched, member))
    check(hgetall(r, k) == {"state": "deferred", "attempts": "2", "fence": "2"}, "ledger %s" % hgetall(r, k))
    # uncount "1": the claim's count is taken back, never below 0
    push(r, pk, a)
    check(run(r, "queue_sched", [pk, sched, k], [a, member, NOW + 1, "1"]) == 1, "scheduled again")
    check(hgetall(r, k)["attempts"] == "1", "attempts %s, want 1" % hgetall(r, k)["attempts"])
    r.cmd("HSET", k, "attempts", 0)
    push(r, pk, a)
    run(r, "queue_sched", [pk, sched, k], [a, member, NOW + 2, "1"])
    check(hgetall(r, k)["attempts"] == "0", "attempts went below 0: %s" % hgetall(r, k)["attempts"])
    # not there: nothing scheduled, the ledger is left alone
    r.cmd("HSET", k, "state", "inflight", "owner", "w2", "attempts", 4)
    check(run(r, "queue_sched", [pk, sched, k], [a, job("other"), NOW, "1"]) == 0, "not there")
    check(r.cmd("ZCARD", sched) == 1 and r.cmd("ZSCORE", sched, job("other")) is None, "scheduled anyway")
    led = hgetall(r, k)
    check(led["state"] == "inflight" and led["owner"] == "w2" and led["attempts"] == "4", "ledger %s" % led)
    # no ledger ('')
    push(r, pk, a)
    check(run(r, "queue_sched", [pk, sched, ""], [a, member, NOW + 3, "1"]) == 1, "without a ledger")
    check(r.cmd("EXISTS", "") == 0, "wrote a ledger named ''")


def test_dead_replay_pushes_a_job_once_from_the_oldest_copy(t):
    r, p = t.redis(aof=False), t.prefix
    dk, lk = p + ":dead", p + ":queue:normal"
    # newest at the left; two copies of entry e1: the oldest (rightmost) goes
    push(r, dk, "e1", "e2", "e1")
    check(run(r, "dead_replay", [dk, lk], ["e1", "job-1"]) == 1, "replay")
    check(lrange(r, dk) == ["e1", "e2"], "dead %s" % lrange(r, dk))
    check(lrange(r, lk) == ["job-1"], "lane %s" % lrange(r, lk))
    # a replay of an entry no longer there (replayed elsewhere) pushes nothing
    check(run(r, "dead_replay", [dk, lk], ["e3", "job-3"]) == 0, "replay of a gone entry")
    check(lrange(r, lk) == ["job-1"], "lane changed: %s" % lrange(r, lk))
    check(run(r, "dead_replay", [dk, lk], ["e1", "job-1"]) == 1, "the other copy")
    check(run(r, "dead_replay", [dk, lk], ["e1", "job-1"]) == 0, "a third time")
    check(lrange(r, dk) == ["e2"] and lrange(r, lk) == ["job-1", "job-1"],
          "dead %s, lane %s" % (lrange(r, dk), lrange(r, lk)))


def test_queue_replace_only_an_entry_that_is_there(t):
    r, p = t.redis(aof=False), t.prefix
    pk = proc(p, "w1")
    push(r, pk, "old-a", "b")
    check(run(r, "queue_replace", [pk], ["old-a", "new-a"]) == 1, "replace")
    check(lrange(r, pk) == ["new-a", "b"], "processing %s" % lrange(r, pk))
    check(run(r, "queue_replace", [pk], ["old-a", "newer"]) == 0, "replace a missing entry")
    check(lrange(r, pk) == ["new-a", "b"], "changed: %s" % lrange(r, pk))


# ---- queue_due ----

def test_queue_due_moves_due_jobs_to_the_take_end_of_their_lane(t):
    r, p = t.redis(aof=False), t.prefix
    sched = "%s:scheduled" % p
    for l in LANES:
        push(r, lane(p, l), job("old-" + l))
    h, n, lo, bad, fut = (job("h", priority="high"), job("n"), job("l", priority="low"), "not json",
                          job("f", priority="high"))
    r.cmd("ZADD", sched, NOW - 30, h, NOW - 20, n, NOW, lo, NOW - 10, bad, NOW + 1, fut)
    check(run(r, "queue_due", [sched] + lanes(p), [NOW, 100]) == 4, "four due")
    check(lrange(r, lane(p, "high")) == [job("old-high"), h], "high %s" % lrange(r, lane(p, "high")))
    check(lrange(r, lane(p, "normal")) == [job("old-normal"), n, bad], "normal %s" % lrange(r, lane(p, "normal")))
    check(lrange(r, lane(p, "low")) == [job("old-low"), lo], "low %s" % lrange(r, lane(p, "low")))
    check([v.decode() for v in r.cmd("ZRANGE", sched, 0, -1)] == [fut], "the schedule keeps the future job")
    # the limit: the earliest first
    r.cmd("ZADD", sched, NOW - 3, job("e1"), NOW - 2, job("e2"), NOW - 1, job("e3"))
    check(run(r, "queue_due", [sched] + lanes(p), [NOW, 2]) == 2, "limit 2")
    check(lrange(r, lane(p, "normal"))[-2:] == [job("e1"), job("e2")], "normal %s" % lrange(r, lane(p, "normal")))
    check(r.cmd("ZCARD", sched) == 2, "schedule %s" % r.cmd("ZRANGE", sched, 0, -1))


# ---- queue_handback / queue_reclaim ----

def test_queue_handback_returns_jobs_oldest_first_and_releases_our_ledger(t):
    r, p = t.redis(aof=False), t.prefix
    pk = proc(p, "w1")
    push(r, lane(p, "normal"), job("queued"))
    j1, j2, j3, hi = job("j1"), job("j2"), job("j3"), job("h1", priority="high")
    push(r, pk, j1, hi, j2, j3, "not json")   # taken in this order
    r.cmd("HSET", ledger(p, "j1"), "state", "inflight", "owner", "w1")
    r.cmd("HSET", ledger(p, "j2"), "state", "inflight", "owner", "w2")
    r.cmd("HSET", workers(p), "w1", NOW, "w2", NOW)
    out = run(r, "queue_handback", [pk] + lanes(p) + [workers(p)], ["w1", "w1", "%s:job:" % p])
    check(out == 5, "handed back %s, want 5" % out)
    check(r.cmd("EXISTS", pk) == 0, "the processing list is not empty")
    check(lrange(r, lane(p, "normal")) == [job("queued"), "not json", j3, j2, j1],
          "normal lane %s: the oldest must be at the take end" % lrange(r, lane(p, "normal")))
    check(lrange(r, lane(p, "high")) == [hi], "high lane %s" % lrange(r, lane(p, "high")))
    check(hgetall(r, ledger(p, "j1")) == {"state": "inflight"}, "j1 was ours: released, %s"
          % hgetall(r, ledger(p, "j1")))
    check(hgetall(r, ledger(p, "j2"))["owner"] == "w2", "j2 is w2's: it must keep its owner")
    check(r.cmd("EXISTS", ledger(p, "j3")) == 0, "a ledger was made for j3")
    check(r.cmd("HEXISTS", workers(p), "w1") == 0, "our heartbeat stayed")
    check(r.cmd("HEXISTS", workers(p), "w2") == 1, "another's heartbeat went")
    # at startup: "-" keeps the heartbeat
    push(r, pk, j1)
    r.cmd("HSET", ledger(p, "j1"), "owner", "w1")
    r.cmd("HSET", workers(p), "w1", NOW)
    check(run(r, "queue_handback", [pk] + lanes(p) + [workers(p)], ["-", "w1", "%s:job:" % p]) == 1, "one")
    check(r.cmd("HEXISTS", workers(p), "w1") == 1, "'-' removed the heartbeat")
    check(r.cmd("HEXISTS", ledger(p, "j1"), "owner") == 0, "j1 not released")
    check(run(r, "queue_handback", [pk] + lanes(p) + [workers(p)], ["-", "w1", "%s:job:" % p]) == 0, "empty")


def test_queue_reclaim_returns_dead_workers_jobs_only(t):
    r, p = t.redis(aof=False), t.prefix
    old = NOW - HB - 1
    r.cmd("HSET", workers(p), "dead", old, "edge", NOW - HB, "live", NOW, "me", old, "junk", "x")
    d1, d2, dh = job("d1"), job("d2"), job("dh", priority="high")
    push(r, proc(p, "dead"), d1, dh, d2)
    push(r, proc(p, "edge"), job("e1"))
    push(r, proc(p, "live"), job("v1"))
    push(r, proc(p, "me"), job("m1"))
    push(r, proc(p, "junk"), job("k1", priority="low"))
    r.cmd("HSET", ledger(p, "d1"), "state", "inflight", "owner", "dead")
    r.cmd("HSET", ledger(p, "d2"), "state", "inflight", "owner", "other")
    r.cmd("HSET", ledger(p, "k1"), "state", "inflight", "owner", "junk")
    args = [NOW, HB, "%s:processing:" % p, "me", "%s:job:" % p]
    check(run(r, "queue_reclaim", [workers(p)] + lanes(p), args) == 4, "four jobs of two dead workers")
    check(lrange(r, lane(p, "normal")) == [d2, d1], "normal lane %s" % lrange(r, lane(p, "normal")))
    check(lrange(r, lane(p, "high")) == [dh], "high lane %s" % lrange(r, lane(p, "high")))
    check(lrange(r, lane(p, "low")) == [job("k1", priority="low")], "a heartbeat that is not a number is dead")
    check(r.cmd("EXISTS", proc(p, "dead"), proc(p, "junk")) == 0, "dead workers' lists left")
    for w, j in (("edge", "e1"), ("live", "v1"), ("me", "m1")):
        check([ident(v) for v in lrange(r, proc(p, w))] == [j], "%s's list was touched" % w)
    check(sorted(hgetall(r, workers(p))) == ["edge", "live", "me"], "workers %s" % hgetall(r, workers(p)))
    check("owner" not in hgetall(r, ledger(p, "d1")), "d1 not released")
    check(hgetall(r, ledger(p, "d2"))["owner"] == "other", "d2 was another worker's: released anyway")
    check("owner" not in hgetall(r, ledger(p, "k1")), "k1 not released")
    # once: the dead workers' entries are gone
    check(run(r, "queue_reclaim", [workers(p)] + lanes(p), args) == 0, "a second reclaim")


# ---- queue_partial / queue_fence ----

def test_queue_partial_appends_accepted_recipients(t):
    r, p = t.redis(aof=False), t.prefix
    k = ledger(p, "j1")
    r.cmd("HSET", k, "state", "inflight")
    check(run(r, "queue_partial", [k], ["a@example.test", TTL]) == 1, "partial")
    check(r.cmd("HGET", k, "accepted") == b"a@example.test", "accepted %s" % r.cmd("HGET", k, "accepted"))
    check(0 < r.cmd("PTTL", k) <= TTL, "no expiry")
    run(r, "queue_partial", [k], ["b@example.test\nc@example.test", TTL])
    check(r.cmd("HGET", k, "accepted") == b"a@example.test\nb@example.test\nc@example.test",
          "accepted %r" % r.cmd("HGET", k, "accepted"))
    r.cmd("HSET", k, "accepted", "")
    run(r, "queue_partial", [k], ["d@example.test", TTL])
    check(r.cmd("HGET", k, "accepted") == b"d@example.test", "an empty field: %r" % r.cmd("HGET", k, "accepted"))


def test_queue_fence_holds_only_for_the_current_claim(t):
    r, p = t.redis(aof=False), t.prefix
    k = ledger(p, "j1")
    check(run(r, "queue_fence", [k], ["w1", 1]) == 1, "no ledger: nobody else claimed it")
    r.cmd("HSET", k, "state", "inflight", "owner", "w1", "fence", 2)
    check(run(r, "queue_fence", [k], ["w1", 2]) == 1, "our claim")
    check(run(r, "queue_fence", [k], ["w1", 1]) == 0, "an older claim of ours")
    check(run(r, "queue_fence", [k], ["w2", 2]) == 0, "another worker")
    r.cmd("HSET", k, "state", "sent")
    check(run(r, "queue_fence", [k], ["w1", 2]) == 0, "delivered meanwhile")
    r.cmd("HSET", k, "state", "inflight")
    r.cmd("HDEL", k, "owner")
    check(run(r, "queue_fence", [k], ["w1", 2]) == 0, "released (handed back)")


# ---- big_stage / big_finish ----

def big_keys(p):
    return proc(p, "w1"), "%s:big:w1:job" % p, "%s:big:w1:entry" % p


def test_big_stage_copies_the_oldest_entry_of_that_length(t):
    r, p = t.redis(aof=False), t.prefix
    pk, stage, entry = big_keys(p)
    older = job("big-1", body="x" * 300)
    newer = job("big-2", body="y" * 300)
    check(len(older) == len(newer), "test set-up")
    push(r, pk, job("s"), older, job("t"), newer)
    r.cmd("SET", entry, "half-built")
    out = run(r, "big_stage", [pk, stage, entry], [len(older), 3600000])
    check(out == [1, b"big-1"], "stage: %s" % out)
    check(r.cmd("GET", stage) == older.encode(), "the stage holds the newer or another entry")
    check(0 < r.cmd("PTTL", stage) <= 3600000, "the stage has no life")
    check(r.cmd("EXISTS", entry) == 0, "the entry key was not emptied")
    check(len(lrange(r, pk)) == 4, "staging removed something")
    # no entry of that length: nothing staged, the entry key kept
    r.cmd("DEL", stage)
    r.cmd("SET", entry, "keep")
    check(run(r, "big_stage", [pk, stage, entry], [7777, 3600000]) == [0, b""], "no such length")
    check(r.cmd("EXISTS", stage) == 0 and r.cmd("GET", entry) == b"keep", "changed keys")
    # an id only when the job starts with it
    late = '{"to":["a@example.test"],"id":"late-id","body":"%s"}' % ("z" * 400)
    push(r, pk, late)
    check(run(r, "big_stage", [pk, stage, entry], [len(late), 3600000]) == [1, b""], "an id not first")
    bad = '{"id":"bad id","body":"%s"}' % ("z" * 500)
    push(r, pk, bad)
    check(run(r, "big_stage", [pk, stage, entry], [len(bad), 3600000]) == [1, b""], "an unreadable id")
    long_id = '{"id":"%s","body":"q"}' % ("i" * 129)
    push(r, pk, long_id)
    check(run(r, "big_stage", [pk, stage, entry], [len(long_id), 3600000]) == [1, b""], "an id over 128")


def test_big_finish_minus_one_zero_and_one(t):
    r, p = t.redis(aof=False), t.prefix
    pk, stage, entry = big_keys(p)
    dead = "%s:dead" % p
    big = job("big-1", body="x" * 300)
    push(r, pk, big, job("other"))
    keys = [pk, dead, stage, entry]
    check(run(r, "big_finish", keys) == -1, "no stage: stage again")
    r.cmd("SET", stage, big)
    check(run(r, "big_finish", keys) == -1, "no entry: stage again")
    check(r.cmd("GET", stage) == big.encode(), "-1 must not drop the stage")
    r.cmd("SET", entry, '{"error":"too big"}')
    check(run(r, "big_finish", keys) == 1, "finish")
    check(lrange(r, pk) == [job("other")], "processing %s" % lrange(r, pk))
    check(lrange(r, dead) == ['{"error":"too big"}'], "dead %s" % lrange(r, dead))
    check(r.cmd("EXISTS", stage, entry) == 0, "stage and entry left")
    check(run(r, "big_finish", keys) == -1, "a replay after the keys went")
    # the job already left the processing list: 0, nothing dead, keys dropped
    r.cmd("SET", stage, big)
    r.cmd("SET", entry, "E2")
    check(run(r, "big_finish", keys) == 0, "not in the processing list")
    check(lrange(r, dead) == ['{"error":"too big"}'], "a second dead entry: %s" % lrange(r, dead))
    check(r.cmd("EXISTS", stage, entry) == 0, "stage and entry left after 0")


# ---- quota_wait / quota_resume ----

def test_quota_wait_adds_and_drops_entries_a_day_old(t):
    r, p = t.redis(aof=False), t.prefix
    w = "%s:quota:wait:relay" % p
    r.cmd("ZADD", w, NOW - 86400000 - 5, "ancient", NOW - 86400000, "a-day", NOW - 86400000 + 5, "recent")
    check(run(r, "quota_wait", [w], ["j1", NOW + 60000, NOW]) == 1, "wait")
    members = [v.decode() for v in r.cmd("ZRANGE", w, 0, -1)]
    check(members == ["recent", "j1"], "waiting %s" % members)
    check(r.cmd("ZSCORE", w, "j1") == str(NOW + 60000).encode(), "due %s" % r.cmd("ZSCORE", w, "j1"))
    run(r, "quota_wait", [w], ["j1", NOW + 120000, NOW])
    check(r.cmd("ZSCORE", w, "j1") == str(NOW + 120000).encode(), "a second wait moves the due time")
    check(r.cmd("ZCARD", w) == 2, "a second wait added an entry")


def test_quota_resume_lifts_the_pause_and_makes_waiting_jobs_due(t):
    r, p = t.redis(aof=False), t.prefix
    pauses, w, sched = "%s:pauses" % p, "%s:quota:wait:relay" % p, "%s:scheduled" % p
    r.cmd("HSET", pauses, "relay", "%d rate limited" % (NOW + 3600000), "org:acme", "%d x" % (NOW + 5))
    a, b, c = job("a"), job("b"), job("c")
    r.cmd("ZADD", sched, NOW + 86400000, a, NOW + 86400000, b, NOW + 86400000, c, NOW + 5, "not json")
    r.cmd("ZADD", w, NOW, "a", NOW, "b", NOW, "gone")
    out = run(r, "quota_resume", [pauses, w, sched], ["relay", NOW])
    check(out == [1, 2], "resume %s, want [1, 2]" % out)
    check(r.cmd("HEXISTS", pauses, "relay") == 0, "the pause stayed")
    check(r.cmd("HEXISTS", pauses, "org:acme") == 1, "another sender's pause went")
    for m, due in ((a, NOW), (b, NOW), (c, NOW + 86400000), ("not json", NOW + 5)):
        check(r.cmd("ZSCORE", sched, m) == str(due).encode(), "%s due %s, want %d" % (m, r.cmd("ZSCORE", sched, m), due))
    check(r.cmd("EXISTS", w) == 0, "the waiting set stayed")
    check(run(r, "quota_resume", [pauses, w, sched], ["relay", NOW]) == [0, 0], "nothing to resume")


def test_quota_resume_finds_ids_in_a_long_schedule(t):
    r, p = t.redis(aof=False), t.prefix
    pauses, w, sched = "%s:pauses" % p, "%s:quota:wait:relay" % p, "%s:scheduled" % p
    later = NOW + 86400000
    args = []
    for i in range(2500):
        args += [later, job("s%d" % i)]
    r.cmd("ZADD", sched, *args)
    waiting = ["s%d" % i for i in range(0, 2500, 7)]
    zargs = []
    for id in waiting:
        zargs += [NOW, id]
    r.cmd("ZADD", w, *zargs)
    out = run(r, "quota_resume", [pauses, w, sched], ["relay", NOW])
    check(out == [0, len(waiting)], "resume %s, want [0, %d]" % (out, len(waiting)))
    due = r.cmd("ZRANGEBYSCORE", sched, "-inf", NOW)
    check(sorted(ident(v) for v in due) == sorted(waiting), "%d due, want %d" % (len(due), len(waiting)))
    check(r.cmd("ZCARD", sched) == 2500, "the schedule lost or gained jobs")


# ---- scheme_cas ----

def test_scheme_cas_absent_present_mismatch_delete(t):
    r, p = t.redis(aof=False), t.prefix
    h, v = "%s:schemes" % p, "%s:schemes:version" % p
    r.cmd("HSET", h, "other/x@o.test", "keep")
    f = "acme/b@acme.test"
    check(run(r, "scheme_cas", [h, v], [f, "old", "new"]) == 0, "old given, field absent")
    check(r.cmd("HEXISTS", h, f) == 0 and r.cmd("GET", v) is None, "a refused CAS changed something")
    check(run(r, "scheme_cas", [h, v], [f, "", "v1"]) == 1, "create: version 1")
    check(r.cmd("HGET", h, f) == b"v1", "field %s" % r.cmd("HGET", h, f))
    check(run(r, "scheme_cas", [h, v], [f, "", "again"]) == 0, "create over a present field")
    check(r.cmd("HGET", h, f) == b"v1", "overwritten: %s" % r.cmd("HGET", h, f))
    check(run(r, "scheme_cas", [h, v], [f, "v1", "v2"]) == 2, "update: version 2")
    check(r.cmd("HGET", h, f) == b"v2", "field %s" % r.cmd("HGET", h, f))
    check(run(r, "scheme_cas", [h, v], [f, "v1", "v3"]) == 0, "a stale old value")
    check(r.cmd("HGET", h, f) == b"v2" and r.cmd("GET", v) == b"2", "a mismatch changed something")
    check(run(r, "scheme_cas", [h, v], [f, "v2", ""]) == 3, "delete: version 3")
    check(r.cmd("HEXISTS", h, f) == 0, "not deleted")
    check(r.cmd("GET", v) == b"3", "version %s" % r.cmd("GET", v))
    check(r.cmd("HGET", h, "other/x@o.test") == b"keep", "another field changed")


# ---- login_lease / purge_release ----

def test_login_lease_ok_lease_busy(t):
    r, p = t.redis(aof=False), t.prefix
    k = "%s:scheme_login:acme/b@acme.test" % p
    check(run(r, "login_lease", [k], ["fp1", "w1", 30000]) == b"lease", "first asker")
    check(r.cmd("GET", k) == b"try:fp1:w1", "lease value %s" % r.cmd("GET", k))
    check(0 < r.cmd("PTTL", k) <= 30000, "the lease has no life")
    check(run(r, "login_lease", [k], ["fp1", "w2", 30000]) == b"busy", "another worker, same credentials")
    check(r.cmd("GET", k) == b"try:fp1:w1", "busy changed the lease")
    r.cmd("PEXPIRE", k, 100)
    check(run(r, "login_lease", [k], ["fp1", "w1", 30000]) == b"lease", "the holder asks again")
    check(r.cmd("PTTL", k) > 1000, "the holder's lease was not renewed")
    # new credentials: the old try does not hold them up (nor does a
    # credential whose name starts the same)
    check(run(r, "login_lease", [k], ["fp1x", "w2", 30000]) == b"lease", "other credentials")
    check(r.cmd("GET", k) == b"try:fp1x:w2", "lease %s" % r.cmd("GET", k))
    check(run(r, "login_lease", [k], ["fp1", "w3", 30000]) == b"lease", "a prefix of the credentials")
    # a login that passed: ok for everybody, for those credentials only
    r.cmd("SET", k, "ok:fp1")
    check(run(r, "login_lease", [k], ["fp1", "w2", 30000]) == b"ok", "passed")
    check(r.cmd("GET", k) == b"ok:fp1", "ok changed")
    check(run(r, "login_lease", [k], ["fp2", "w2", 30000]) == b"lease", "ok for old credentials")
    check(r.cmd("GET", k) == b"try:fp2:w2", "lease %s" % r.cmd("GET", k))


def test_purge_release_only_when_still_ours(t):
    r, p = t.redis(aof=False), t.prefix
    k = "%s:purge:lease" % p
    check(run(r, "purge_release", [k], ["w1"]) == 0, "no lease")
    r.cmd("SET", k, "w2")
    check(run(r, "purge_release", [k], ["w1"]) == 0, "another's lease")
    check(r.cmd("GET", k) == b"w2", "released another's lease")
    r.cmd("SET", k, "w1")
    check(run(r, "purge_release", [k], ["w1"]) == 1, "ours")
    check(r.cmd("EXISTS", k) == 0, "our lease stayed")


# ---- token_create / token_revoke ----

def rec(name, role="sender"):
    return json.dumps({"name": name, "role": role, "created_at": "x"}, separators=(",", ":"))


def test_token_create_unless_the_name_is_taken(t):
    r, p = t.redis(aof=False), t.prefix
    k = "%s:tokens" % p
    r.cmd("HSET", k, "junk", "not json")
    check(run(r, "token_create", [k], ["hash1", "ci", rec("ci")]) == 1, "create ci")
    check(r.cmd("HGET", k, "hash1") == rec("ci").encode(), "record %s" % r.cmd("HGET", k, "hash1"))
    check(run(r, "token_create", [k], ["hash2", "ci", rec("ci", "admin")]) == 0, "ci again")
    check(r.cmd("HEXISTS", k, "hash2") == 0, "a second ci was stored")
    check(run(r, "token_create", [k], ["hash2", "deploy", rec("deploy")]) == 1, "create deploy")
    check(r.cmd("HLEN", k) == 3, "tokens %s" % r.cmd("HKEYS", k))


def test_token_revoke_by_name(t):
    r, p = t.redis(aof=False), t.prefix
    k = "%s:tokens" % p
    r.cmd("HSET", k, "h1", rec("ci"), "h2", rec("deploy"), "h3", rec("ci"), "h4", "not json")
    check(run(r, "token_revoke", [k], ["ci"]) == 2, "both named ci")
    check(sorted(v.decode() for v in r.cmd("HKEYS", k)) == ["h2", "h4"], "left %s" % r.cmd("HKEYS", k))
    check(run(r, "token_revoke", [k], ["ci"]) == 0, "ci again")
    check(run(r, "token_revoke", [k], ["h2"]) == 0, "revoked by the hash, not the name")
    check(run(r, "token_revoke", [k], ["deploy"]) == 1, "deploy")
    check([v.decode() for v in r.cmd("HKEYS", k)] == ["h4"], "left %s" % r.cmd("HKEYS", k))


# ---- every script ----

def test_every_script_loads_under_the_sha1_of_its_text(t):
    r = t.redis(aof=False)
    bad = []
    for name in harness.lua_script_names():
        text = harness.lua_script(name)
        want = hashlib.sha1(text.encode()).hexdigest()
        try:
            sha = r.cmd("SCRIPT", "LOAD", text).decode()
        except harness.RedisError as e:
            bad.append("%s: Redis refused it: %s" % (name, e))
            continue
        if sha != want:
            bad.append("%s: SCRIPT LOAD says %s, the SHA-1 of the text is %s" % (name, sha, want))
        elif r.cmd("SCRIPT", "EXISTS", want) != [1]:
            bad.append("%s: loaded but not known by its SHA-1" % name)
    check(not bad, "; ".join(bad))


def _loaded_names(path):
    """The script names a test file passes as a literal to run(),
    lua_script() or harness.lua_script()."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            fn = node.func
            fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            a = node.args[1] if fname in ("run", "typed_eval") and len(node.args) > 1 else node.args[0]
            if fname in ("run", "lua_script", "typed_eval") and isinstance(a, ast.Constant) \
                    and isinstance(a.value, str):
                out.add(a.value)
    return out


def test_every_script_is_exercised(t):
    names = set(harness.lua_script_names())
    here = os.path.abspath(__file__)
    quota = _loaded_names(os.path.join(os.path.dirname(here), "test_quota_lua.py"))
    mine = set(SCRIPTS)
    check(not (mine - names), "SCRIPTS names no such script: %s" % sorted(mine - names))
    missing = names - mine - quota
    check(not missing, "no test runs %s" % sorted(missing))
    used = _loaded_names(here)
    check(mine <= used, "listed but never run here: %s" % sorted(mine - used))
    tests = [n for n, fn in globals().items()
             if n.startswith("test_") and inspect.isfunction(fn)]
    untested = [s for s in SCRIPTS if not any(n.startswith("test_%s_" % s) for n in tests)]
    check(not untested, "no test_<script>_... function for %s" % untested)
