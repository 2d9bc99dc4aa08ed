"""Runs the request body as a Python or shell snippet and answers its stdout, stderr and exit
status as JSON: the self-hosted code runner. It is safe only because faas gives every request
a sandbox of its own (its own namespaces, uid, Landlock ruleset, seccomp filter, limits); the
snippet runs in a child process of that sandbox with a timeout of its own, and whatever it
does dies with the request.

POST /coderunner?lang=python  (or lang=sh)   body: the snippet
"""

import subprocess

LANGS = {"python": ["/usr/bin/python3", "-I", "-c"], "sh": ["/bin/sh", "-c"]}
LIMIT = 64 << 10  # bytes of stdout and of stderr returned


def handle(request):
    lang = request.query.get("lang", "python")
    if lang not in LANGS:
        return 400, {"error": f"lang must be one of {sorted(LANGS)}"}
    code = request.body.decode("utf-8", errors="replace")
    try:
        done = subprocess.run(LANGS[lang] + [code], capture_output=True, timeout=3, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        return {"exit": None, "timed_out": True, "stdout": (e.stdout or b"")[:LIMIT].decode(errors="replace"),
                "stderr": (e.stderr or b"")[:LIMIT].decode(errors="replace")}
    return {
        "exit": done.returncode,
        "timed_out": False,
        "stdout": done.stdout[:LIMIT].decode(errors="replace"),
        "stderr": done.stderr[:LIMIT].decode(errors="replace"),
    }
