"""faas Python wrapper: one CGI/1.1 request (RFC 3875) in, one handler call, one CGI response out.

The daemon runs, inside the sandbox:

    /usr/bin/python3 -I -B /faas/python.py CODE_DIR MODULE.FUNCTION

with the request as meta-variables in the environment and its body on stdin. The answer goes to
stdout as CGI header lines, a blank line and the body; stderr is the function's log. The handler
contract lives in README.md beside this file.

Standard library only, and only its cheap parts at start-up: json, traceback and asyncio are
imported the first time they are needed, so a handler returning str or bytes never pays for them.
Exit status: 0 once a whole response is written (whatever its HTTP status), 1 when the response
was cut short after its headers went out, 2 when the wrapper itself was called wrongly.
"""

import os
import stat
import sys
import time

PROBLEM = "urn:faas:problem:"

# RFC 9110 section 15 and the IANA registry; the daemon only needs the code, people read the rest.
REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
    422: "Unprocessable Content", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}

# RFC 9110 section 5.6.2: the characters of a header name.
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789"
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
HEX = frozenset(b"0123456789abcdefABCDEF")


class BadRequest(ValueError):
    """The request body is not what the handler asked for; uncaught, it becomes a 400."""

    def __init__(self, title, detail):
        super().__init__(f"{title}: {detail}")
        self.title = title
        self.detail = detail


class Headers(dict):
    """Request headers: a dict keyed `Content-Type`-style whose lookups ignore case.

    Built from the HTTP_* meta-variables plus CONTENT_TYPE and CONTENT_LENGTH, so
    h["content-type"], h.get("CONTENT-TYPE") and "Content-Type" in h all find the same entry, and
    json.dumps(h) or dict(h) just work. A header sent several times arrives joined by ", ".
    """

    __slots__ = ("_names",)  # lower-case name -> the key it is stored under

    def __init__(self, environ):
        super().__init__()
        self._names = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                self["-".join(w.capitalize() for w in key[5:].split("_"))] = value
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if environ.get(key):
                self[name] = environ[key]

    def _key(self, name):
        return self._names.get(name.lower(), name) if isinstance(name, str) else name

    def __getitem__(self, name):
        return super().__getitem__(self._key(name))

    def get(self, name, default=None):
        return super().get(self._key(name), default)

    def __contains__(self, name):
        return super().__contains__(self._key(name))

    def __setitem__(self, name, value):
        key = self._key(name)
        if isinstance(name, str):
            self._names[name.lower()] = key
        super().__setitem__(key, value)

    def __delitem__(self, name):
        key = self._key(name)
        super().__delitem__(key)
        if isinstance(name, str):
            del self._names[name.lower()]

    def __repr__(self):
        return f"Headers({super().__repr__()})"


class Request:
    """One HTTP request, read from the CGI environment; the body is read on first use."""

    def __init__(self, environ):
        self.env = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO") or "/"
        self.query_string = environ.get("QUERY_STRING", "")
        self.remote_addr = environ.get("REMOTE_ADDR", "")
        self.function_name = environ.get("FAAS_FUNCTION", "")
        self.invocation_id = environ.get("FAAS_INVOCATION_ID", "")
        self.deadline_ms = parse_int(environ.get("FAAS_DEADLINE_MS"))
        self._query = None
        self._query_all = None
        self._headers = None
        self._body = None

    @property
    def query_all(self):
        """Every value of every query parameter, in order: {"a": ["1", "2"]}."""
        if self._query_all is None:
            self._query_all = {}
            for name, value in parse_query(self.query_string):
                self._query_all.setdefault(name, []).append(value)
        return self._query_all

    @property
    def query(self):
        """The first value of each query parameter: {"a": "1"}."""
        if self._query is None:
            self._query = {name: values[0] for name, values in self.query_all.items()}
        return self._query

    @property
    def headers(self):
        if self._headers is None:
            self._headers = Headers(self.env)
        return self._headers

    @property
    def body(self):
        """The request body as bytes: CONTENT_LENGTH bytes of stdin, or all of it."""
        if self._body is None:
            self._body = read_body(parse_int(self.env.get("CONTENT_LENGTH")))
        return self._body

    @property
    def text(self):
        """The body decoded with the Content-Type charset (UTF-8 if none); BadRequest if it isn't."""
        charset = content_charset(self.env.get("CONTENT_TYPE", ""))
        try:
            return self.body.decode(charset)
        except LookupError:
            raise BadRequest("request body is not valid text", f"unknown charset {charset!r}") from None
        except UnicodeDecodeError as e:
            raise BadRequest("request body is not valid text", f"{charset}: {e.reason} at byte {e.start}") from None

    def json(self):
        """The body parsed as JSON; BadRequest (a ValueError) if it is empty or not JSON."""
        import json
        body = self.body
        if not body.strip():
            raise BadRequest("request body is not valid JSON", "the body is empty")
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadRequest("request body is not valid JSON", str(e)) from None

    def remaining_ms(self):
        """Milliseconds until the sandbox is killed, or None when there is no deadline."""
        if self.deadline_ms is None:
            return None
        return max(0, self.deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return f"<Request {self.method} {self.path}{'?' if self.query_string else ''}{self.query_string}>"


class Output:
    """Our private copy of stdout: fd 1 itself now points at stderr (see take_stdout)."""

    def __init__(self, fd):
        self.fd = fd

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # the daemon handed us a non-blocking pipe
                import select
                select.select([], [self.fd], [])

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def parse_int(value):
    if value and value.isascii() and value.isdigit():
        return int(value)
    return None


def parse_query(qs):
    """application/x-www-form-urlencoded pairs, blanks kept, as WHATWG URLSearchParams does."""
    pairs = []
    for part in qs.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def unquote_plus(s):
    s = s.replace("+", " ")
    if "%" not in s:
        return s
    raw = s.encode("utf-8", "surrogateescape").split(b"%")
    out = bytearray(raw[0])
    for piece in raw[1:]:
        if len(piece) >= 2 and piece[0] in HEX and piece[1] in HEX:
            out.append(int(piece[:2], 16))
            out += piece[2:]
        else:
            out += b"%" + piece
    return out.decode("utf-8", "replace")


def content_charset(content_type):
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or "utf-8"
    return "utf-8"


def read_body(length):
    chunks, got = [], 0
    while length is None or got < length:
        want = 1 << 16 if length is None else min(length - got, 1 << 20)
        try:
            chunk = os.read(0, want)
        except BlockingIOError:
            import select
            select.select([0], [], [])
            continue
        except OSError:  # no stdin at all
            break
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def log(message):
    sys.stderr.write(f"faas: {message}\n")


def log_exception(message, exc):
    """Logs message and exc's traceback, without the wrapper's and asyncio's frames on top."""
    import traceback
    log(message)
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename == __file__
                              or "/asyncio/" in tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)


def take_stdout():
    """Keeps fd 1 for the response and points fd 1 and sys.stdout at stderr for everyone else.

    print(), os.write(1, ...) and subprocesses' output all become log lines, so nothing the
    handler does can corrupt the CGI response. os.dup's copy is close-on-exec.
    """
    fd = os.dup(1)
    log_blocking()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return Output(fd)


def log_blocking():
    """Makes fd 2 blocking when it is a pipe left non-blocking: sys.stderr (print, tracebacks)
    would otherwise fail with BlockingIOError once the pipe is full. A new open file description
    of the pipe, through /proc, is blocking without changing the flags of whoever else holds it.
    """
    try:
        if os.get_blocking(2) or not stat.S_ISFIFO(os.fstat(2).st_mode):
            return
        fresh = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    os.dup2(fresh, 2)
    os.close(fresh)


class HandlerNotFound(Exception):
    """The handler module imported but the function is not there."""


def load_handler(code_dir, spec):
    module_name, _, func_name = spec.rpartition(".")
    if not module_name or not func_name:
        raise HandlerNotFound(f"handler {spec!r} is not MODULE.FUNCTION")
    sys.path.insert(0, os.path.abspath(code_dir))
    try:
        __import__(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):
            raise HandlerNotFound(f"there is no module {e.name!r} in {code_dir}") from None
        raise
    func = getattr(sys.modules[module_name], func_name, None)
    if func is None:
        raise HandlerNotFound(f"module {module_name!r} has no attribute {func_name!r}")
    if not callable(func):
        raise HandlerNotFound(f"{spec} is a {type(func).__name__}, not a function")
    return func


LOOP = None


def run_async(awaitable):
    """Runs a coroutine (an async handler, a step of an async generator) to completion."""
    global LOOP
    if LOOP is None:
        import asyncio
        LOOP = asyncio.new_event_loop()
        asyncio.set_event_loop(LOOP)
    return LOOP.run_until_complete(awaitable)


class ResponseError(TypeError):
    """The handler returned something that cannot be an HTTP response."""


def check_status(status):
    if type(status) is not int or not 200 <= status <= 599:
        raise ResponseError(f"status must be an int from 200 to 599, not {status!r}")
    return status


def check_headers(headers):
    """Handler headers -> [(name, value)]: a mapping or (name, value) pairs; a list value repeats."""
    if headers is None:
        return []
    pairs = headers.items() if hasattr(headers, "items") else headers
    out = []
    for name, value in pairs:
        if not isinstance(name, str) or not name or not TCHAR.issuperset(name):
            raise ResponseError(f"header name {name!r} is not an HTTP token")
        if name.lower() == "status":
            raise ResponseError("set the status with (status, headers, body), not a Status header")
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if type(v) is int:
                v = str(v)
            if not isinstance(v, str):
                raise ResponseError(f"header {name} must be str or int, not {type(v).__name__}")
            if any(c < " " and c != "\t" or c > "~" for c in v):
                raise ResponseError(f"header {name} contains a control character (CR, LF, NUL, ...) "
                                    f"or a non-ASCII one (percent-encode it, RFC 8187)")
            out.append((name, v))
    return out


def shape(result):
    """Handler result -> (status, headers, body, content_type); body is bytes or an iterator."""
    status, headers = None, []
    if type(result) is tuple:
        if len(result) == 3:
            status, headers, result = result
        elif len(result) == 2:
            status, result = result
        else:
            raise ResponseError(f"a response tuple is (status, headers, body) or (status, body), "
                                f"not {len(result)} items; return a list for a JSON array")
        status = check_status(status)
        headers = check_headers(headers)
    if hasattr(result, "__await__"):  # (status, headers, coroutine) is fine too
        result = run_async(result)
    if result is None:
        body, ctype = b"", None
        if status is None:
            status = 204
    elif isinstance(result, str):
        body, ctype = result.encode("utf-8"), "text/plain; charset=utf-8"
    elif isinstance(result, (bytes, bytearray, memoryview)):
        body, ctype = bytes(result), "application/octet-stream"
    elif isinstance(result, (dict, list, int, float)):  # bool is an int
        import json
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        body, ctype = body.encode("utf-8"), "application/json"
    elif hasattr(result, "__next__") or hasattr(result, "__anext__"):
        body, ctype = result, None
    else:
        raise ResponseError(f"cannot send a {type(result).__name__}: return dict, list, str, bytes, "
                            f"None, a generator, or (status, headers, body)")
    if status is None:
        status = 200
    if (status == 204 or status == 304) and body:
        raise ResponseError(f"a {status} response has no body")
    return status, headers, body, ctype


def chunk_bytes(chunk):
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    raise ResponseError(f"stream chunks must be str or bytes, not {type(chunk).__name__}")


END = object()


def next_chunk(it):
    """The next chunk of a sync or async iterator, as the handler produced it, or END."""
    try:
        return run_async(it.__anext__()) if hasattr(it, "__anext__") else next(it)
    except (StopIteration, StopAsyncIteration):
        return END


def close_stream(it):
    try:
        if hasattr(it, "aclose"):
            run_async(it.aclose())
        elif hasattr(it, "close"):
            it.close()
    except Exception as e:
        log_exception("closing the response stream raised an exception", e)


def head(status, ctype, headers, length):
    lines = [f"Status: {status} {REASONS.get(status, 'Unknown')}"]
    names = {name.lower() for name, _ in headers}
    if ctype and "content-type" not in names:
        lines.append(f"Content-Type: {ctype}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if length is not None and "content-length" not in names and status != 204 and status != 304:
        lines.append(f"Content-Length: {length}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def problem(kind, title, status, detail=None):
    """An RFC 9457 problem response, whole."""
    if detail is None:
        body = f'{{"type":"{PROBLEM}{kind}","title":"{title}","status":{status}}}'.encode()
    else:
        import json
        body = json.dumps({"type": PROBLEM + kind, "title": title, "status": status, "detail": detail},
                          separators=(",", ":")).encode()
    return head(status, "application/problem+json", [], len(body)) + body


HANDLER_ERROR = ("handler-error", "handler raised an exception", 500)
HANDLER_NOT_FOUND = ("handler-not-found", "handler not found", 500)


def report(exc, streaming):
    cut = "; the response is cut short" if streaming else ""
    if isinstance(exc, ResponseError):
        log(f"handler returned an invalid response: {exc}{cut}")
    else:
        log_exception(f"handler raised an exception{' while streaming' if streaming else ''}{cut}", exc)


def respond(out, handler, request):
    """Calls the handler and writes its response; returns the exit status."""
    stream = None
    try:
        result = handler(request)
        if hasattr(result, "__await__"):
            result = run_async(result)
        status, headers, body, ctype = shape(result)
        if isinstance(body, bytes):
            for name, value in headers:
                if name.lower() == "content-length" and value != str(len(body)):
                    raise ResponseError(f"Content-Length {value} but the body has {len(body)} bytes")
            response = head(status, ctype, headers, len(body)) + body
        else:
            # The headers wait for the first chunk: an error until then is still a clean 500,
            # and the chunk's type picks the default Content-Type. An empty chunk sends them now.
            first = next_chunk(body)
            if first is END:
                response = head(status, None, headers, None)
            else:
                stream = body
                ctype = "text/plain; charset=utf-8" if isinstance(first, str) else "application/octet-stream"
                response = head(status, ctype, headers, None) + chunk_bytes(first)
    except BadRequest as e:
        log(f"bad request: {e}")
        response, stream = problem("bad-request", e.title, 400, e.detail), None
    except BaseException as e:
        report(e, streaming=False)
        response, stream = problem(*HANDLER_ERROR), None

    try:
        out.write(response)
        if stream is None:
            return 0
        while (chunk := next_chunk(stream)) is not END:
            chunk = chunk_bytes(chunk)
            if chunk:
                out.write(chunk)
    except BrokenPipeError:
        log("the reader closed stdout; the response is cut short")
        if stream is not None:
            close_stream(stream)
        return 1
    except BaseException as e:
        report(e, streaming=True)
        close_stream(stream)
        return 1
    return 0


def load(argv):
    """Takes stdout for the response and imports the handler: (out, handler), or (None, exit
    status) once the problem is written. A warm spare runs this before its request comes."""
    try:
        out = take_stdout()
    except OSError as e:
        log(f"stdout is not usable, so no response can be sent: {e}")
        return None, 2
    if len(argv) != 3:
        log(f"usage: {argv[0] if argv else 'python.py'} CODE_DIR MODULE.FUNCTION")
        out.write(problem(*HANDLER_NOT_FOUND))
        return None, 2
    try:
        return out, load_handler(argv[1], argv[2])
    except HandlerNotFound as e:
        log(f"cannot load handler {argv[2]!r} from {argv[1]}: {e}")
        out.write(problem(*HANDLER_NOT_FOUND))
        return None, 0
    except BaseException as e:
        log_exception(f"cannot load handler {argv[2]!r} from {argv[1]}: importing it raised", e)
        out.write(problem(*HANDLER_NOT_FOUND))
        return None, 0


def serve(out, handler):
    """Calls the handler for the request in the environment; returns the exit status."""
    try:
        return respond(out, handler, Request(os.environ))
    except BrokenPipeError:
        log("stdout was closed before the response was written")
        return 1
    finally:
        out.close()


def main(argv):
    out, handler = load(argv)
    return handler if out is None else serve(out, handler)


if __name__ == "__main__":
    code = main(sys.argv)
    try:
        sys.stderr.flush()
    finally:
        # The sandbox ends with the response: lingering threads and atexit hooks do not keep it.
        os._exit(code)
