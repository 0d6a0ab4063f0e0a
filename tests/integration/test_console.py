"""The support console (SPEC §9, "The console") in a real browser: Debian's
chromium driven by playwright-core (tests/browser/console.test.mjs, pinned
in tests/browser/package.json). Real redis-server, SMTP server, worker and
herald-api; the browser signs in with a support token, searches by
recipient, opens a message (recipients, path, text, the HTML in an iframe
sandbox without allow-scripts), resends it and finds the new message at
the top of the next search, exports CSV, and shows a subject made of markup
as text: no dialog, no console error, no CSP violation.

Without chromium, node or tests/browser/node_modules the test is skipped,
unless HERALD_REQUIRE_BROWSER=1 (scripts/test.sh sets it): then it fails.
"""
import json
import os
import shutil
import socket
import subprocess
import urllib.request

import harness
from harness import check, make_job, mc_show, push, run, wait_until

BROWSER_DIR = os.path.join(harness.REPO, "tests", "browser")
SCRIPT = os.path.join(BROWSER_DIR, "console.test.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
XSS = "<img src=x onerror=alert(1)>"


def _browser_or_skip():
    """The node binary; raises Skip (or fails under HERALD_REQUIRE_BROWSER=1)
    when the browser test cannot run here."""
    node = shutil.which("node")
    missing = []
    if not node:
        missing.append("node (apt-get install nodejs npm)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(CHROMIUM + " (apt-get install chromium)")
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules", "playwright-core",
                                       "package.json")):
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if missing:
        why = "the browser test needs " + ", ".join(missing) + "; scripts/deps.sh installs them"
        if os.environ.get("HERALD_REQUIRE_BROWSER") == "1":
            raise AssertionError(why + " (HERALD_REQUIRE_BROWSER=1)")
        raise harness.Skip(why)
    return node


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def _token(env, name, *args):
    cp = run("heraldctl", "token", "create", "--name", name, *args, env=env)
    check(cp.returncode == 0, cp.stderr)
    return cp.stdout.strip()


@harness.timeout(120)
def test_console_in_a_real_browser(t):
    node = _browser_or_skip()
    r = t.redis()
    s = t.smtp()
    env = t.env(r, s)
    wk = t.worker(env)

    to = "carol@example.test"
    html_text = "Your invoice is attached below"
    jobs = [
        make_job(id="con-plain", to=[to], subject="Welcome aboard"),
        make_job(id="con-html", to=[to], subject="Invoice 42",
                 text="Invoice 42 is due on Friday.\n",
                 html="<p id=\"hi\">%s, <b>Carol</b>.</p>"
                      "<script>document.body.setAttribute('data-ran', '1');"
                      "alert('from the html')</script>"
                      "<img src=\"data:,\" onerror=\"alert('from an img')\">" % html_text),
        make_job(id="con-xss", to=[to], subject=XSS),
        make_job(id="con-other", to=["dave@example.test"], subject="Not Carol's"),
    ]
    for j in jobs:  # one by one: created_at orders them
        push(r, t.prefix, j)
        wait_until(lambda: (mc_show(env, j["id"]) or {}).get("status") == "sent", 15, j["id"])

    port = harness.free_port()
    api_env = dict(env, HERALD_API_LISTEN="127.0.0.1:%d" % port)
    api = t.worker(api_env, binary="herald-api")
    wait_until(lambda: _listening(port), 10, "herald-api listening")
    base = "http://127.0.0.1:%d" % port
    tok = _token(env, "console-support", "--role", "support", "--resend")

    # what the console must list for `to`, as the API orders it
    req = urllib.request.Request(base + "/v1/messages?to=" + to,
                                 headers={"Authorization": "Bearer " + tok})
    with urllib.request.urlopen(req, timeout=10) as resp:
        ids = [m["id"] for m in json.loads(resp.read())["messages"]]
    check(ids == ["con-xss", "con-html", "con-plain"], ids)

    case = {"to": to, "ids": ids, "open": "con-html", "xss": "con-xss",
            "xss_subject": XSS, "html_text": html_text,
            "text": "Invoice 42 is due on Friday."}
    penv = dict(os.environ, HERALD_CONSOLE_TOKEN=tok, CHROMIUM=CHROMIUM)
    try:
        cp = subprocess.run([node, SCRIPT, base, json.dumps(case)], cwd=BROWSER_DIR, env=penv,
                            capture_output=True, text=True, timeout=100)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("the browser test did not end in 100 s: %s" % (e.stdout or ""))
    out = cp.stdout + cp.stderr
    check(cp.returncode == 0, "console.test.mjs exited %d:\n%s" % (cp.returncode, out[-4000:]))
    result = [ln for ln in cp.stdout.splitlines() if ln.startswith("RESULT ")]
    check(len(result) == 1, out[-2000:])
    resent = json.loads(result[0][len("RESULT "):])["resent"]

    # the resend the browser made is a real one
    rec = mc_show(env, resent)
    check(rec and rec["resend_of"] == "con-html", rec)
    wait_until(lambda: resent in s.ids(), 15, "the resend delivered")
    check(api.stop() == 0, "herald-api exit code")
    check(wk.stop() == 0, "worker exit code")
