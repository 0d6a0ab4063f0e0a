#!/usr/bin/python3
"""Converts the openspf RFC 7208 test suite (YAML) into the JSON that
tests/unit/test_spf.c reads.

    /usr/bin/python3 tests/unit/spf_suite.py [SUITE.yml] > suite.json

Without an argument the suite is $HERALD_SPF_YAML when set, else
../shared/conformance/spf/rfc7208-tests.yml next to the repository, else
/work/shared/conformance/spf/rfc7208-tests.yml.

Output:
  {"source": PATH, "total": N,
   "scenarios": [{"description": ..., "tests": [
        {"name", "spec", "helo", "host", "mailfrom",
         "result": [acceptable results], "explanation": str or null}],
      "zone": [entry, ...]}]}
where each zone entry is one of
  [name, "TXT", [string, ...]]   (a TXT record of these character-strings)
  [name, "A" | "AAAA" | "PTR" | "CNAME", value]
  [name, "MX", preference, exchange]
  [name, "TIMEOUT"]
in the order the suite's own driver serves them: the entries of a name
as listed, then -- only for a name without any TXT entry -- its SPF
entries again as TXT records (the suite's rule; RFC 7208 looks up TXT
only, so SPF entries are not served as such). "TXT: NONE" adds nothing
but stops that copying. Names are lower-cased, like the driver's.
"""

import json
import os
import sys

import yaml

SIMPLE = ("A", "AAAA", "PTR", "CNAME")


def strings(v):
    """A TXT/SPF value as a list of character-strings."""
    if isinstance(v, list):
        return [str(s) for s in v]
    return [str(v)]


def zone_entries(name, entries):
    out = []
    spf = []
    has_txt = False
    for ent in entries:
        if ent == "TIMEOUT":
            out.append([name, "TIMEOUT"])
            continue
        if not isinstance(ent, dict) or len(ent) != 1:
            raise ValueError("%s: unexpected zone entry %r" % (name, ent))
        ((t, v),) = ent.items()
        if t == "TXT":
            has_txt = True
            if v != "NONE":
                out.append([name, "TXT", strings(v)])
        elif t == "SPF":
            if v != "NONE":
                spf.append(strings(v))
        elif t in SIMPLE:
            out.append([name, t, str(v)])
        elif t == "MX":
            pref, host = v
            out.append([name, "MX", int(pref), str(host)])
        else:
            raise ValueError("%s: unknown record type %r" % (name, t))
    if not has_txt:
        for s in spf:
            out.append([name, "TXT", s])
    return out


def convert(path):
    scenarios = []
    total = 0
    with open(path, "rb") as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            zone = []
            for name, entries in (doc.get("zonedata") or {}).items():
                zone.extend(zone_entries(str(name).lower(), entries or []))
            tests = []
            for tname, t in (doc.get("tests") or {}).items():
                res = t["result"]
                tests.append({
                    "name": tname,
                    "spec": str(t.get("spec", "")),
                    "helo": str(t["helo"]),
                    "host": str(t["host"]),
                    "mailfrom": str(t["mailfrom"]),
                    "result": res if isinstance(res, list) else [res],
                    "explanation": t.get("explanation"),
                })
            total += len(tests)
            scenarios.append({
                "description": doc.get("description", ""),
                "tests": tests,
                "zone": zone,
            })
    return {"source": path, "total": total, "scenarios": scenarios}


def find_suite():
    env = os.environ.get("HERALD_SPF_YAML")
    if env:
        return env  # named explicitly: used as is, no fallback
    here = os.path.dirname(os.path.abspath(__file__))
    cands = [
        os.path.join(here, "..", "..", "..", "shared", "conformance", "spf",
                     "rfc7208-tests.yml"),
        "/work/shared/conformance/spf/rfc7208-tests.yml",
    ]
    for c in cands:
        if os.path.isfile(c):
            return os.path.normpath(c)
    sys.exit("spf_suite.py: rfc7208-tests.yml not found "
             "(set HERALD_SPF_YAML or pass the path)")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else find_suite()
    json.dump(convert(path), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
