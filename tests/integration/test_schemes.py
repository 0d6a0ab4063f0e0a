"""Email Sending Schemes against a real redis-server: heraldctl scheme
add/update/list/remove and key rotate (SPEC §4, §7; issue 3, the producer
side). The storage contract is in common/scheme.h.

Passwords: given only on stdin, sealed before they reach Redis, never
printed. The checks that a stored token really opens use
`bin/test_scheme open-check` (tests/unit/test_scheme.c), which prints only
"match" / "no match"."""

import json
import os
import subprocess
import time

import harness
from harness import check, run

PASSWORD = "Tr0ub4dor&3-unique-4c1f9e"


def _key(t, name, mode=0o600):
    path = t.path(name)
    with open(path, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(path, mode)
    return path


def _env(t, redis, key=None, **overrides):
    if key is not None:
        overrides["HERALD_SECRET_KEY_FILE"] = key
    return t.env(redis, None, **overrides)


def _ctl(env, *args, password=None):
    return run("heraldctl", *args, env=env, input=None if password is None else password + "\n")


def _add(env, email="billing@acme.test", org="acme", password=PASSWORD, *extra):
    cp = _ctl(env, "scheme", "add", "--org", org, "--email", email, "--smtp-host", "smtp.acme.test",
              "--smtp-port", "587", "--username", "billing", "--password-stdin", *extra, password=password)
    check(cp.returncode == 0, f"scheme add exit {cp.returncode}: {cp.stderr}")
    return cp


def _list(env, *args):
    cp = _ctl(env, "scheme", "list", "--json", *args)
    check(cp.returncode == 0, f"scheme list exit {cp.returncode}: {cp.stderr}")
    return json.loads(cp.stdout)


def _stored(r, t):
    raw = r.cmd("HGETALL", f"{t.prefix}:schemes") or []
    return {raw[i].decode(): json.loads(raw[i + 1]) for i in range(0, len(raw), 2)}


def _version(r, t):
    v = r.cmd("GET", f"{t.prefix}:schemes:version")
    return int(v) if v else 0


def _opens(key, org, email, token, password=PASSWORD):
    cp = run("test_scheme", "open-check", key, org, email, token, env={}, input=password + "\n")
    return cp.returncode == 0 and cp.stdout.strip() == "match"


def _key_id(token):
    return token.split(":")[1]


def test_add_list_update_remove(t):
    r = t.redis(aof=False)
    key = _key(t, "k1")
    env = _env(t, r, key)
    check(_version(r, t) == 0, "no version before any change")

    cp = _add(env, "Billing@Acme.test", "acme", PASSWORD, "--daily-limit", "500")
    check("acme/billing@acme.test" in cp.stdout, cp.stdout)
    check(_version(r, t) == 1, "add bumps the version")
    cp = _ctl(env, "scheme", "add", "--org", "acme", "--email", "ops@acme.test", "--smtp-host", "127.0.0.1",
              "--smtp-port", "2525", "--imap-host", "::1", "--imap-port", "1143", "--username", "ops",
              "--password-stdin", "--tls", "none", "--minute-limit", "20", "--on-auth-failure", "hold",
              "--sent-folder", "Sent Items", password="another-secret")
    check(cp.returncode == 0, cp.stderr)
    _add(env, "news@beta.test", "beta", "beta-secret")
    check(_version(r, t) == 3, f"three adds, version {_version(r, t)}")

    stored = _stored(r, t)
    check(sorted(stored) == ["acme/billing@acme.test", "acme/ops@acme.test", "beta/news@beta.test"],
          f"fields: {sorted(stored)}")
    s = stored["acme/billing@acme.test"]
    check(s["email"] == "Billing@Acme.test" and s["smtp_port"] == 587 and s["tls"] == "starttls", s)
    check(s["daily_limit"] == 500 and "minute_limit" not in s and s["on_auth_failure"] == "fallback", s)
    check(s["password"].startswith("v1:") and s["state"] == "ok" and s["state_reason"] == "", s)
    check(_opens(key, "acme", "Billing@Acme.test", s["password"]), "the stored token opens")
    check(not _opens(key, "acme", "Billing@Acme.test", s["password"], "wrong"), "open-check can fail")
    check(not _opens(key, "acme", "other@acme.test", s["password"]), "bound to its scheme")

    every = _list(env)
    check([x["email"] for x in every] == ["Billing@Acme.test", "ops@acme.test", "news@beta.test"], every)
    acme = _list(env, "--org", "acme")
    check(len(acme) == 2 and all(x["org"] == "acme" for x in acme), acme)
    ops = acme[1]
    for k, v in {"smtp_host": "127.0.0.1", "smtp_port": 2525, "imap_host": "::1", "imap_port": 1143,
                 "username": "ops", "tls": "none", "minute_limit": 20, "on_auth_failure": "hold",
                 "sent_folder": "Sent Items", "state": "ok", "state_reason": ""}.items():
        check(ops.get(k) == v, f"{k}: {ops.get(k)!r} != {v!r}")
    for k in ("state_at", "created_at", "updated_at"):
        check(k in ops, f"{k} in list --json")
    check(all("password" not in x for x in every), "no password member in list --json")

    table = _ctl(env, "scheme", "list")
    check(table.returncode == 0 and "smtp.acme.test:587" in table.stdout and "[::1]:1143" in table.stdout,
          table.stdout)
    check("v1:" not in table.stdout, "no token in the table")

    # update: only the given options change; the version moves
    before = _stored(r, t)["acme/billing@acme.test"]
    time.sleep(0.01)
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@ACME.test", "--minute-limit", "15",
              "--on-auth-failure", "hold")
    check(cp.returncode == 0, cp.stderr)
    check(_version(r, t) == 4, "update bumps the version")
    after = _stored(r, t)["acme/billing@acme.test"]
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    check(changed == {"minute_limit", "on_auth_failure", "updated_at"}, f"changed: {changed}")
    check(after["password"] == before["password"], "the sealed password is untouched")

    # removing an optional setting
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "ops@acme.test", "--no-imap")
    check(cp.returncode == 0, cp.stderr)
    ops = _stored(r, t)["acme/ops@acme.test"]
    check("imap_host" not in ops and "imap_port" not in ops and "sent_folder" not in ops, ops)

    # remove
    cp = _ctl(env, "scheme", "remove", "--org", "beta", "--email", "news@beta.test")
    check(cp.returncode == 0, cp.stderr)
    check("beta/news@beta.test" not in _stored(r, t), "removed")
    check(_version(r, t) == 6, f"remove bumps the version: {_version(r, t)}")
    check(_list(env, "--org", "beta") == [], "nothing left for beta")
    empty = _ctl(env, "scheme", "list", "--org", "nobody")
    check(empty.returncode == 0 and "(no schemes)" in empty.stdout, empty.stdout)


def test_update_clears_auth_failed_only_with_new_credentials(t):
    r = t.redis(aof=False)
    key = _key(t, "k1")
    env = _env(t, r, key)
    _add(env)
    field = "acme/billing@acme.test"

    def mark():
        # What a worker does on a 535: state auth_failed, via the CAS script.
        raw = r.cmd("HGET", f"{t.prefix}:schemes", field)
        s = json.loads(raw)
        s.update(state="auth_failed", state_reason="535 5.7.8 authentication failed",
                 state_at="2026-01-02T03:04:05.000Z")
        new = json.dumps(s, separators=(",", ":"))
        script = ("local cur = redis.call('HGET', KEYS[1], ARGV[1]) "
                  "if cur ~= ARGV[2] then return 0 end "
                  "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return redis.call('INCR', KEYS[2])")
        check(r.cmd("EVAL", script, 2, f"{t.prefix}:schemes", f"{t.prefix}:schemes:version",
                    field, raw, new) > 0, "marked")

    mark()
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test", "--daily-limit", "9")
    check(cp.returncode == 0, cp.stderr)
    (s,) = _list(env)
    check(s["state"] == "auth_failed" and s["state_reason"].startswith("535"), f"a limit keeps the mark: {s}")
    check(s["state_at"] == "2026-01-02T03:04:05.000Z", s)

    old_token = _stored(r, t)[field]["password"]
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test", "--password-stdin",
              password="a-brand-new-one")
    check(cp.returncode == 0, cp.stderr)
    (s,) = _list(env)
    check(s["state"] == "ok" and s["state_reason"] == "" and s["daily_limit"] == 9, s)
    new_token = _stored(r, t)[field]["password"]
    check(new_token != old_token and _opens(key, "acme", "billing@acme.test", new_token, "a-brand-new-one"),
          "the new password is sealed and stored")

    mark()
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test", "--username", "b2")
    check(cp.returncode == 0, cp.stderr)
    (s,) = _list(env)
    check(s["state"] == "ok" and s["username"] == "b2", f"a new username clears the mark: {s}")


def test_bad_input_exits_2_naming_the_flag(t):
    r = t.redis(aof=False)
    key = _key(t, "k1")
    env = _env(t, r, key)
    _add(env)
    version = _version(r, t)
    base = ["--org", "acme", "--email", "new@acme.test", "--smtp-host", "smtp.acme.test", "--smtp-port", "587",
            "--username", "u", "--password-stdin"]

    def without(flag, has_value=True):
        a = list(base)
        i = a.index(flag)
        del a[i:i + (2 if has_value else 1)]
        return a

    def with_(flag, value):
        a = list(base)
        if flag in a:
            a[a.index(flag) + 1] = value
        else:
            a += [flag, value]
        return a

    cases = [
        (without("--org"), "--org"),
        (without("--email"), "--email"),
        (without("--smtp-host"), "--smtp-host"),
        (without("--smtp-port"), "--smtp-port"),
        (without("--username"), "--username"),
        (without("--password-stdin", False), "--password-stdin"),
        (with_("--smtp-port", "0"), "--smtp-port"),
        (with_("--smtp-port", "65536"), "--smtp-port"),
        (with_("--smtp-port", "smtp"), "--smtp-port"),
        (with_("--smtp-host", "smtp acme"), "--smtp-host"),
        (with_("--smtp-host", "-bad.example"), "--smtp-host"),
        (with_("--imap-host", "imap_acme"), "--imap-host"),
        (with_("--imap-host", "imap.acme.test"), "--imap-port"),
        (with_("--imap-port", "993"), "--imap-host"),
        (with_("--imap-port", "99999") + ["--imap-host", "imap.acme.test"], "--imap-port"),
        (with_("--email", "not-an-address"), "--email"),
        (with_("--email", "a@b@c"), "--email"),
        (with_("--org", "acme corp"), "--org"),
        (with_("--tls", "tls"), "--tls"),
        (with_("--tls", "none"), "--tls"),
        (with_("--tls", "none") + ["--imap-host", "imap.acme.test", "--imap-port", "143"], "--tls"),
        (with_("--on-auth-failure", "retry"), "--on-auth-failure"),
        (with_("--daily-limit", "0"), "--daily-limit"),
        (with_("--daily-limit", "-5"), "--daily-limit"),
        (with_("--minute-limit", "1.5"), "--minute-limit"),
        (with_("--sent-folder", "Sent"), "--sent-folder"),
        (with_("--email", "billing@acme.test"), "--email"),  # exists already
        (base + ["--password", "hunter2"], "--password"),
        (base + ["--password=hunter2"], "--password"),
        (base + ["--no-imap"], "--no-imap"),  # update only
        (base + ["stray"], "stray"),
    ]
    for args, flag in cases:
        cp = _ctl(env, "scheme", "add", *args, password="pw-123")
        check(cp.returncode == 2, f"{args}: exit {cp.returncode}, want 2: {cp.stderr}")
        check(flag in cp.stderr, f"{args}: {flag} not named in {cp.stderr!r}")
        check("pw-123" not in cp.stderr + cp.stdout, "the password is not echoed")
    cp = _ctl(env, "scheme", "add", *(with_("--email", "billing@acme.test")), password="x")
    check("scheme update" in cp.stderr, f"an existing scheme suggests update: {cp.stderr}")
    cp = _ctl(env, "scheme", "add", *base, "--password", "hunter2", password="x")
    check("use --password-stdin" in cp.stderr and "hunter2" not in cp.stderr, cp.stderr)

    # the password line itself
    for pw, why in (("", "empty"), ("x" * 1100, "longer")):
        cp = _ctl(env, "scheme", "add", *base, password=pw)
        check(cp.returncode == 2 and "--password-stdin" in cp.stderr, f"{why}: {cp.returncode} {cp.stderr}")
    cp = run("heraldctl", "scheme", "add", *base, env=env, input=b"")
    check(cp.returncode == 2 and "--password-stdin" in cp.stderr, f"no stdin: {cp.stderr}")

    # update and remove: unknown scheme, bad values
    upd = [(["--email", "nobody@acme.test", "--daily-limit", "5"], "nobody@acme.test"),
           (["--email", "billing@acme.test"], "nothing to change"),
           (["--email", "billing@acme.test", "--smtp-port", "0"], "--smtp-port"),
           (["--email", "billing@acme.test", "--tls", "none"], "--tls"),
           (["--email", "billing@acme.test", "--password", "x"], "--password"),
           (["--email", "billing@acme.test", "--daily-limit", "5", "--no-daily-limit"], "--daily-limit"),
           (["--daily-limit", "5"], "--email")]
    for args, named in upd:
        cp = _ctl(env, "scheme", "update", "--org", "acme", *args)
        check(cp.returncode == 2 and named in cp.stderr, f"update {args}: {cp.returncode} {cp.stderr}")
    cp = _ctl(env, "scheme", "remove", "--org", "acme", "--email", "nobody@acme.test")
    check(cp.returncode == 2 and "nobody@acme.test" in cp.stderr, f"remove unknown: {cp.stderr}")
    cp = _ctl(env, "scheme", "remove", "--org", "acme")
    check(cp.returncode == 2 and "--email" in cp.stderr, cp.stderr)
    cp = _ctl(env, "scheme", "list", "--org", "bad org")
    check(cp.returncode == 2 and "--org" in cp.stderr, cp.stderr)

    # the key file
    for keyenv, named in ((None, "HERALD_SECRET_KEY_FILE"), (t.path("missing"), "missing")):
        e2 = _env(t, r, HERALD_SECRET_KEY_FILE=keyenv)
        cp = _ctl(e2, "scheme", "add", *with_("--email", "k@acme.test"), password="pw-123")
        check(cp.returncode == 2 and "HERALD_SECRET_KEY_FILE" in cp.stderr and named in cp.stderr,
              f"key {keyenv}: {cp.returncode} {cp.stderr}")
    short = t.path("short")
    with open(short, "wb") as f:
        f.write(os.urandom(31))
    os.chmod(short, 0o600)  # a world-readable key file is refused for that
    cp = _ctl(_env(t, r, short), "scheme", "add", *with_("--email", "k@acme.test"), password="pw-123")
    check(cp.returncode == 2 and "HERALD_SECRET_KEY_FILE" in cp.stderr and "31 bytes" in cp.stderr, cp.stderr)

    # scheme test of an unknown scheme is bad input; nothing is written
    cp = _ctl(env, "scheme", "test", "--org", "acme", "--email", "nobody@acme.test")
    check(cp.returncode == 2 and "no such scheme" in cp.stderr, cp.stderr)

    check(_version(r, t) == version, "no refused command changed anything")
    check(list(_stored(r, t)) == ["acme/billing@acme.test"], "still one scheme")


def test_password_never_in_clear(t):
    r = t.redis(aof=True)
    key = _key(t, "k1")
    env = _env(t, r, key, HERALD_LOG_LEVEL="debug")
    outputs = []

    # argv while heraldctl waits for the password: nothing secret in it
    argv = [harness.tool_path("heraldctl"), "scheme", "add", "--org", "acme", "--email", "billing@acme.test",
            "--smtp-host", "smtp.acme.test", "--smtp-port", "465", "--username", "billing", "--password-stdin"]
    p = subprocess.Popen(argv, env=harness._base_env(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=t.dir)
    t.register(p)
    time.sleep(0.3)
    with open(f"/proc/{p.pid}/cmdline", "rb") as f:
        cmdline = f.read()
    out, err = p.communicate((PASSWORD + "\n").encode(), timeout=30)
    check(p.returncode == 0, err.decode())
    check(b"--password-stdin" in cmdline and PASSWORD.encode() not in cmdline, cmdline)
    outputs += [out.decode(), err.decode()]
    t.san_texts.append(("heraldctl scheme add", err.decode()))

    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test", "--password-stdin",
              password=PASSWORD + "-2")
    check(cp.returncode == 0, cp.stderr)
    outputs += [cp.stdout, cp.stderr]
    for args in (("scheme", "list"), ("scheme", "list", "--json"), ("--print-config",)):
        cp = _ctl(env, *args)
        check(cp.returncode == 0, cp.stderr)
        outputs += [cp.stdout, cp.stderr]
    cp = _ctl(env, "key", "rotate", "--new-key-file", _key(t, "k2"))
    check(cp.returncode == 0, cp.stderr)
    outputs += [cp.stdout, cp.stderr]
    for o in outputs:
        check(PASSWORD not in o, f"password printed: {o[:300]!r}")

    # every key and value in Redis
    seen = 0
    cursor = b"0"
    while True:
        cursor, keys = r.cmd("SCAN", cursor, "COUNT", 1000)
        for k in keys:
            seen += 1
            check(PASSWORD.encode() not in k, "in a key name")
            ty = r.cmd("TYPE", k)
            ty = ty.decode() if isinstance(ty, bytes) else str(ty)
            if ty == "hash":
                vals = r.cmd("HGETALL", k)
            elif ty == "string":
                vals = [r.cmd("GET", k)]
            elif ty == "list":
                vals = r.cmd("LRANGE", k, 0, -1)
            elif ty == "zset":
                vals = r.cmd("ZRANGE", k, 0, -1)
            elif ty == "set":
                vals = r.cmd("SMEMBERS", k)
            else:
                vals = [r.cmd("DUMP", k)]
            for v in vals or []:
                check(PASSWORD.encode() not in bytes(str(v), "utf-8") if not isinstance(v, bytes)
                      else PASSWORD.encode() not in v, f"password in {k!r}")
        if cursor in (b"0", 0, "0"):
            break
    check(seen >= 2, f"scanned the scheme keys ({seen})")
    # ... and on Redis' disk (the append-only file holds every write)
    r.cmd("BGREWRITEAOF")
    nfiles = 0
    for root, _, files in os.walk(r.dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            nfiles += 1
            check(PASSWORD.encode() not in data, f"password in {name}")
    check(nfiles > 0, "Redis wrote files")
    s = _stored(r, t)["acme/billing@acme.test"]
    check(s["tls"] == "ssl", "port 465 defaults to ssl")
    check(_opens(t.path("k2"), "acme", "billing@acme.test", s["password"], PASSWORD + "-2"), "still opens")


def test_key_rotate(t):
    r = t.redis(aof=False)
    k1, k2, k3 = _key(t, "k1"), _key(t, "k2"), _key(t, "k3")
    env1 = _env(t, r, k1)
    schemes = [("acme", "a@acme.test", "pw-a"), ("acme", "b@acme.test", "pw-b"), ("beta", "c@beta.test", "pw-c")]
    for org, email, pw in schemes:
        _add(env1, email, org, pw)
    # one added under the new key already: an interrupted rotation
    _add(_env(t, r, k2), "d@beta.test", "beta", "pw-d")
    schemes.append(("beta", "d@beta.test", "pw-d"))
    before = _stored(r, t)
    v0 = _version(r, t)

    cp = _ctl(env1, "key", "rotate", "--new-key-file", k2)
    check(cp.returncode == 0, f"rotate exit {cp.returncode}: {cp.stderr}")
    check("re-sealed 3 " in cp.stdout and "1 already" in cp.stdout and "0 failed" in cp.stdout, cp.stdout)
    check(_version(r, t) == v0 + 3, f"one version step per re-sealed scheme: {_version(r, t)}")
    after = _stored(r, t)
    new_id = _key_id(after["beta/d@beta.test"]["password"])
    os.remove(k1)  # the old key is gone; everything opens with the new one
    for org, email, pw in schemes:
        s = after[f"{org}/{email}"]
        check(_key_id(s["password"]) == new_id, f"{email} under the new key")
        check(_opens(k2, org, email, s["password"], pw), f"{email} opens with the new key")
        b = before[f"{org}/{email}"]
        check({k for k in s if s[k] != b.get(k)} <= {"password"}, f"only the password changed: {email}")

    # run again with the new key as the current one: nothing to do
    env2 = _env(t, r, k2)
    cp = _ctl(env2, "key", "rotate", "--new-key-file", k2)
    check(cp.returncode == 0 and "re-sealed 0 " in cp.stdout and "4 already" in cp.stdout, cp.stdout)
    check(_version(r, t) == v0 + 3, "no change, no version step")
    check(len(_list(env2)) == 4, "list works with the new key")

    # a password under a key that is not given: exit 1, the scheme named
    _add(_env(t, r, k3), "e@gamma.test", "gamma", "pw-e")
    gamma_before = _stored(r, t)["gamma/e@gamma.test"]
    k4 = _key(t, "k4")
    cp = _ctl(env2, "key", "rotate", "--new-key-file", k4)
    check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stdout} {cp.stderr}")
    check("gamma/e@gamma.test" in cp.stderr and "pw-e" not in cp.stderr + cp.stdout, cp.stderr)
    check("re-sealed 4 " in cp.stdout and "1 failed" in cp.stdout, cp.stdout)
    final = _stored(r, t)
    check(final["gamma/e@gamma.test"] == gamma_before, "the one that failed is left as it was")
    check(_opens(k3, "gamma", "e@gamma.test", final["gamma/e@gamma.test"]["password"], "pw-e"),
          "and still opens with its own key")

    # usage
    cp = _ctl(env2, "key", "rotate")
    check(cp.returncode == 2 and "--new-key-file" in cp.stderr, cp.stderr)
    cp = _ctl(env2, "key", "rotate", "--new-key-file", t.path("nope"))
    check(cp.returncode == 2 and "--new-key-file" in cp.stderr, cp.stderr)
    cp = _ctl(_env(t, r, None), "key", "rotate", "--new-key-file", k2)
    check(cp.returncode == 2 and "HERALD_SECRET_KEY_FILE" in cp.stderr, cp.stderr)


def test_key_file_warnings_are_log_lines(t):
    r = t.redis(aof=False)
    key = _key(t, "k1", mode=0o640)  # group-readable: a warning (o+r is refused)
    cp = _ctl(_env(t, r, key), "scheme", "add", "--org", "acme", "--email", "w@acme.test", "--smtp-host",
              "smtp.acme.test", "--smtp-port", "587", "--username", "u", "--password-stdin", password="pw")
    check(cp.returncode == 0, cp.stderr)
    warns = [json.loads(line) for line in cp.stderr.splitlines() if line.startswith("{")]
    check(any(w["level"] == "warn" and w.get("field") == "HERALD_SECRET_KEY_FILE" for w in warns),
          f"a warn line for a group-readable key: {cp.stderr}")


def test_redis_down_is_exit_1(t):
    key = _key(t, "k1")
    env = _env(t, None, key)
    cp = _ctl(env, "scheme", "list")
    check(cp.returncode == 1, f"exit {cp.returncode}: {cp.stderr}")
    cp = _ctl(env, "scheme", "add", "--org", "acme", "--email", "w@acme.test", "--smtp-host", "smtp.acme.test",
              "--smtp-port", "587", "--username", "u", "--password-stdin", password=PASSWORD)
    check(cp.returncode == 1 and PASSWORD not in cp.stderr, f"exit {cp.returncode}: {cp.stderr}")


def test_concurrent_updates_all_apply(t):
    r = t.redis(aof=False)
    key = _key(t, "k1")
    env = _env(t, r, key)
    _add(env)
    v0 = _version(r, t)
    changes = [("--daily-limit", "111"), ("--minute-limit", "7"), ("--on-auth-failure", "hold"),
               ("--smtp-host", "mx.acme.test"), ("--smtp-port", "2587"), ("--tls", "ssl"),
               ("--sent-folder", "Sent"), ("--imap-host", "imap.acme.test")]
    procs = []
    for flag, value in changes:
        extra = ["--imap-port", "993"] if flag == "--imap-host" else []
        argv = [harness.tool_path("heraldctl"), "scheme", "update", "--org", "acme", "--email",
                "billing@acme.test", flag, value, *extra]
        p = subprocess.Popen(argv, env=harness._base_env(env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=t.dir)
        t.register(p)
        procs.append((flag, p))
    codes = {}
    for flag, p in procs:
        out, err = p.communicate(timeout=30)
        t.san_texts.append((f"scheme update {flag}", err.decode()))
        codes[flag] = (p.returncode, err.decode())
    # the Sent folder needs IMAP: it may land before or after the IMAP host
    for flag, (rc, err) in codes.items():
        if flag != "--sent-folder":
            check(rc == 0, f"{flag}: exit {rc}: {err}")
    (s,) = _list(env)
    want = {"daily_limit": 111, "minute_limit": 7, "on_auth_failure": "hold", "smtp_host": "mx.acme.test",
            "smtp_port": 2587, "tls": "ssl", "imap_host": "imap.acme.test", "imap_port": 993}
    for k, v in want.items():
        check(s.get(k) == v, f"{k}: {s.get(k)!r}, want {v!r} (lost update?)")
    ok = sum(1 for rc, _ in codes.values() if rc == 0)
    check(_version(r, t) == v0 + ok, f"one version step per applied update: {_version(r, t)} vs {v0} + {ok}")
    check((codes["--sent-folder"][0] == 0) == (s.get("sent_folder") == "Sent"), "sent folder as reported")
