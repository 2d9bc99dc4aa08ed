"""hello: GET /hello?name=ada -> {"hello": "ada"}; POST a JSON body and it comes back as "echo"."""

import os


def handle(request):
    name = request.query.get("name") or os.environ.get("GREETING_DEFAULT", "world")
    # print() goes to the function's log (stderr, then the journal), never into the response.
    print(f"hello {name!r}: {request.method} {request.path} invocation {request.invocation_id}")
    if request.method == "POST":
        # An empty or malformed body raises BadRequest, which the wrapper answers with a 400.
        return {"hello": name, "echo": request.json()}
    return {"hello": name}
