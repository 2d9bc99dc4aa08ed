"""hold: answers once the file `release` exists in the directory named by ?dir= (a host directory
the function file lists in `[sandbox] read_only`), or after 20 s, a hang guard. The bench holds N
requests on it to measure what each concurrent request costs in memory.
"""

import os
import time


def handle(request):
    marker = os.path.join(request.query.get("dir") or "/nonexistent", "release")
    deadline = time.monotonic() + 20
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"released": os.path.exists(marker)}
