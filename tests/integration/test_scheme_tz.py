"""An Email Sending Scheme's time_zone (issue 4: daily windows are the
scheme's calendar days): heraldctl scheme add/update --time-zone TZ,
update --no-time-zone, shown by scheme list (table and --json), stored
after minute_limit (common/scheme.h). A zone that does not exist on this
host, or a name that is not a zone name, is refused with exit 2 and named
before Redis is contacted. Real redis-server and heraldctl; the zones come
from /usr/share/zoneinfo (tzdata)."""

import json
import os

import harness
from harness import check, run

ZONEINFO = "/usr/share/zoneinfo"


def _need_zones(*names):
    for n in names:
        if not os.path.isfile(os.path.join(ZONEINFO, n)):
            raise harness.Skip(f"{ZONEINFO}/{n} missing (apt-get install tzdata)")


def _key(t):
    path = t.path("herald.key")
    with open(path, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(path, 0o600)
    return path


def _ctl(env, *args, password=None):
    return run("heraldctl", *args, env=env, input=None if password is None else password + "\n")


def _add(env, email, *extra):
    return _ctl(env, "scheme", "add", "--org", "acme", "--email", email, "--smtp-host", "smtp.acme.test",
                "--smtp-port", "587", "--username", "billing", "--password-stdin", *extra,
                password="s3cret-tz-pw")


def _stored(r, t):
    raw = r.cmd("HGETALL", f"{t.prefix}:schemes") or []
    return {raw[i].decode(): json.loads(raw[i + 1]) for i in range(0, len(raw), 2)}


def _version(r, t):
    v = r.cmd("GET", f"{t.prefix}:schemes:version")
    return int(v) if v else 0


def _table(env):
    cp = _ctl(env, "scheme", "list")
    check(cp.returncode == 0, f"scheme list exit {cp.returncode}: {cp.stderr}")
    lines = cp.stdout.splitlines()
    heads = lines[0].split()
    check("TIME-ZONE" in heads, lines[0])
    col = heads.index("TIME-ZONE")
    # no cell before TIME-ZONE holds a space in these schemes
    return {ln.split()[1]: ln.split()[col] for ln in lines[1:] if ln.strip()}


def test_add_list_update_clear(t):
    _need_zones("Europe/Paris", "America/New_York")
    r = t.redis(aof=False)
    env = t.env(r, None, HERALD_SECRET_KEY_FILE=_key(t))

    cp = _add(env, "billing@acme.test", "--minute-limit", "20", "--time-zone", "Europe/Paris")
    check(cp.returncode == 0, f"add exit {cp.returncode}: {cp.stderr}")
    cp = _add(env, "ops@acme.test")
    check(cp.returncode == 0, f"add exit {cp.returncode}: {cp.stderr}")
    cp = _add(env, "utc@acme.test", "--time-zone", "UTC")
    check(cp.returncode == 0, f"add exit {cp.returncode}: {cp.stderr}")

    stored = _stored(r, t)
    s = stored["acme/billing@acme.test"]
    check(s.get("time_zone") == "Europe/Paris", s)
    keys = list(s)
    check(keys.index("time_zone") == keys.index("minute_limit") + 1, f"member order: {keys}")
    check("time_zone" not in stored["acme/ops@acme.test"], stored["acme/ops@acme.test"])
    check(stored["acme/utc@acme.test"].get("time_zone") == "UTC", stored["acme/utc@acme.test"])

    cp = _ctl(env, "scheme", "list", "--json")
    check(cp.returncode == 0, cp.stderr)
    listed = {x["email"]: x for x in json.loads(cp.stdout)}
    check(listed["billing@acme.test"].get("time_zone") == "Europe/Paris", listed)
    check("time_zone" not in listed["ops@acme.test"], listed)
    table = _table(env)
    check(table == {"billing@acme.test": "Europe/Paris", "ops@acme.test": "UTC", "utc@acme.test": "UTC"},
          table)

    # update: only time_zone (and updated_at) change
    before = _stored(r, t)["acme/billing@acme.test"]
    v = _version(r, t)
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test",
              "--time-zone", "America/New_York")
    check(cp.returncode == 0, f"update exit {cp.returncode}: {cp.stderr}")
    after = _stored(r, t)["acme/billing@acme.test"]
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    check(changed <= {"time_zone", "updated_at"} and "time_zone" in changed, f"changed: {changed}")
    check(after["time_zone"] == "America/New_York", after)
    check(_version(r, t) == v + 1, "update bumps the version")
    check(_table(env)["billing@acme.test"] == "America/New_York", "table after update")

    # setting and clearing at once is refused, naming the flag
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test",
              "--time-zone", "Europe/Paris", "--no-time-zone")
    check(cp.returncode == 2 and "--time-zone" in cp.stderr, f"exit {cp.returncode}: {cp.stderr}")
    check(_stored(r, t)["acme/billing@acme.test"]["time_zone"] == "America/New_York", "unchanged")

    # --no-time-zone: back to UTC days
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test", "--no-time-zone")
    check(cp.returncode == 0, f"update exit {cp.returncode}: {cp.stderr}")
    after = _stored(r, t)["acme/billing@acme.test"]
    check("time_zone" not in after and after["minute_limit"] == 20, after)
    check(_table(env)["billing@acme.test"] == "UTC", "table after clearing")

    # --no-time-zone is for update only
    cp = _add(env, "new@acme.test", "--no-time-zone")
    check(cp.returncode == 2 and "--no-time-zone" in cp.stderr, f"exit {cp.returncode}: {cp.stderr}")
    check("acme/new@acme.test" not in _stored(r, t), "not added")


def test_bad_zone_refused(t):
    r = t.redis(aof=False)
    env = t.env(r, None, HERALD_SECRET_KEY_FILE=_key(t))
    bad = ["Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", "Europe//Paris", "Europe/Paris ", ""]
    if os.path.isdir(os.path.join(ZONEINFO, "Europe")):
        bad.append("Europe")  # a directory, not a zone
    for tz in bad:
        cp = _add(env, "billing@acme.test", "--time-zone", tz)
        check(cp.returncode == 2, f"{tz!r}: exit {cp.returncode}: {cp.stderr}")
        check("--time-zone" in cp.stderr, f"{tz!r}: the flag is named: {cp.stderr}")
        if tz:
            check(tz in cp.stderr, f"{tz!r}: the value is named: {cp.stderr}")
    check(_stored(r, t) == {} and _version(r, t) == 0, "nothing stored")

    # an update with an unknown zone leaves the scheme as it was
    cp = _add(env, "billing@acme.test", "--time-zone", "UTC")
    check(cp.returncode == 0, cp.stderr)
    before = _stored(r, t)
    cp = _ctl(env, "scheme", "update", "--org", "acme", "--email", "billing@acme.test",
              "--time-zone", "Atlantis/Capital")
    check(cp.returncode == 2 and "Atlantis/Capital" in cp.stderr, f"exit {cp.returncode}: {cp.stderr}")
    check(_stored(r, t) == before, "unchanged")

    # refused before Redis is contacted: nothing listens here, yet exit 2
    cp = _add(t.env(None, None, HERALD_SECRET_KEY_FILE=t.path("herald.key")), "x@acme.test",
              "--time-zone", "Mars/Olympus_Mons")
    check(cp.returncode == 2 and "Mars/Olympus_Mons" in cp.stderr, f"exit {cp.returncode}: {cp.stderr}")
