"""numpy: a handler whose import is heavy (the bench's `preload` case): GET -> {"sum": 45}.

The bench runs it warm with `preload = ["numpy"]` (the zygote has imported numpy once; each
request's fork finds it in sys.modules), cold (`warm = false`: every request imports numpy), and
on the baseline (fork+exec, no sandbox, imports numpy every time).
"""

import numpy


def handle(request):
    return {"sum": int(numpy.arange(10).sum())}
