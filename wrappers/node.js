'use strict';
// faas Node.js wrapper: one CGI/1.1 request (RFC 3875) in, one handler call, one CGI response out.
//
// The daemon runs, inside the sandbox:
//
//     /usr/bin/node /faas/node.js CODE_DIR MODULE.FUNCTION
//
// with the request as meta-variables in the environment and its body on stdin. The answer goes to
// stdout as CGI header lines, a blank line and the body; stderr is the function's log. The handler
// contract lives in README.md beside this file. Only modules Node loads anyway are used at
// start-up; `url` is required only for ES module handlers.
//
// Exit status: 0 once a whole response is written (whatever its HTTP status), 1 when the response
// was cut short after its headers went out, 2 when the wrapper itself was called wrongly.

const fs = require('fs');
const path = require('path');
const util = require('util');
const EventEmitter = require('events');

const PROBLEM = 'urn:faas:problem:';

// RFC 9110 section 15 and the IANA registry; the daemon only needs the code, people read the rest.
const REASONS = {
  200: 'OK', 201: 'Created', 202: 'Accepted', 203: 'Non-Authoritative Information',
  204: 'No Content', 205: 'Reset Content', 206: 'Partial Content', 207: 'Multi-Status',
  208: 'Already Reported', 226: 'IM Used',
  300: 'Multiple Choices', 301: 'Moved Permanently', 302: 'Found', 303: 'See Other',
  304: 'Not Modified', 305: 'Use Proxy', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
  400: 'Bad Request', 401: 'Unauthorized', 402: 'Payment Required', 403: 'Forbidden',
  404: 'Not Found', 405: 'Method Not Allowed', 406: 'Not Acceptable',
  407: 'Proxy Authentication Required', 408: 'Request Timeout', 409: 'Conflict', 410: 'Gone',
  411: 'Length Required', 412: 'Precondition Failed', 413: 'Content Too Large',
  414: 'URI Too Long', 415: 'Unsupported Media Type', 416: 'Range Not Satisfiable',
  417: 'Expectation Failed', 418: "I'm a teapot", 421: 'Misdirected Request',
  422: 'Unprocessable Content', 423: 'Locked', 424: 'Failed Dependency', 425: 'Too Early',
  426: 'Upgrade Required', 428: 'Precondition Required', 429: 'Too Many Requests',
  431: 'Request Header Fields Too Large', 451: 'Unavailable For Legal Reasons',
  500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Gateway Timeout', 505: 'HTTP Version Not Supported',
  506: 'Variant Also Negotiates', 507: 'Insufficient Storage', 508: 'Loop Detected',
  510: 'Not Extended', 511: 'Network Authentication Required',
};

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/; // RFC 9110 section 5.6.2
const NOT_VISIBLE = /[^\t\x20-\x7e]/; // header values are HTAB and visible ASCII
const RESPONSE_KEYS = new Set(['status', 'headers', 'body']);

/** The request body is not what the handler asked for; uncaught, it becomes a 400. */
class BadRequestError extends Error {
  constructor(title, detail) {
    super(`${title}: ${detail}`);
    this.name = 'BadRequestError';
    this.title = title;
    this.detail = detail;
    this.status = 400;
  }
}

/** The handler returned something that cannot be an HTTP response. */
class ResponseError extends TypeError {
  constructor(message) {
    super(message);
    this.name = 'ResponseError';
  }
}

// stdout is the response and nothing else: console.log(), process.stdout.write() and child
// processes must all land in the log. Node has no dup2(2), so when stdout and stderr are pipes
// (as the daemon gives them) we open a second handle on the stdout pipe through
// /proc/self/fd/1 for the response, close fd 1, and open the stderr pipe again, which open(2)
// puts on the lowest free descriptor: 1. Otherwise (a file, a socket, no /proc) we keep the real
// stdout stream and point process.stdout and console at stderr; only child processes that
// inherit fd 1 then reach the response.
const io = takeStdout();

function takeStdout() {
  // A new open file description of a pipe is blocking, whatever the daemon's side set.
  const reopen = (fd, flags) => fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_WRONLY | flags);
  let response = -1;
  let spare = -1;
  try {
    if (!fs.fstatSync(1).isFIFO() || !fs.fstatSync(2).isFIFO()) return streamOutput();
    response = reopen(1, fs.constants.O_CLOEXEC);
    spare = reopen(2, fs.constants.O_CLOEXEC);
  } catch {
    for (const fd of [response, spare]) if (fd >= 0) fs.closeSync(fd);
    return streamOutput();
  }
  fs.closeSync(1);
  const logFd = reopen(spare, 0); // inherited by child processes as their stdout
  fs.closeSync(spare);
  // console and our own lines write to it synchronously: building a stream for process.stderr
  // costs milliseconds at every call, so that only happens if the handler uses it. colorMode
  // 'auto' would build it anyway, at the first console.log (~3 ms: the colour check loads
  // internal/util/colors, which asks process.stderr.isTTY); the log is never a terminal.
  const sink = syncWriter(logFd);
  globalThis.console = new console.Console({ stdout: sink, stderr: sink, colorMode: false });
  if (logFd !== 1) sink.write(`faas: stderr was reopened as fd ${logFd}, not 1; fd 1 is not the log\n`);
  return {
    write: async (buf) => writeAll(response, buf),
    log: (text) => sink.write(text),
  };
}

function streamOutput() {
  const out = process.stdout;
  out.on('error', () => {}); // EPIPE and friends also reject the pending write, handled there
  Object.defineProperty(process, 'stdout', {
    configurable: true, enumerable: true, get: () => process.stderr,
  });
  globalThis.console = new console.Console({ stdout: process.stderr, stderr: process.stderr });
  return {
    write: (buf) => new Promise((resolve, reject) => {
      out.write(buf, (err) => (err ? reject(err) : resolve()));
    }),
    log: (text) => process.stderr.write(text),
  };
}

function writeAll(fd, buf) {
  for (let off = 0; off < buf.length;) off += fs.writeSync(fd, buf, off, buf.length - off);
}

/** Just enough of a Writable for console.Console, writing straight to a blocking fd. */
function syncWriter(fd) {
  const sink = new EventEmitter(); // Console listens for 'error' on its streams
  sink.write = (chunk, encoding, callback) => {
    const buf = typeof chunk === 'string'
      ? Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8') : chunk;
    try {
      writeAll(fd, buf);
    } catch {
      // the log has gone away; there is nobody left to tell
    }
    const done = typeof encoding === 'function' ? encoding : callback;
    if (done) done();
    return true;
  };
  return sink;
}

function log(message) {
  io.log(`faas: ${message}\n`);
}

/** Logs message and err with its stack, without the wrapper's own frames. */
function logError(message, err) {
  log(message);
  const text = util.inspect(err).split('\n').filter((line) => !line.includes(__filename));
  io.log(`${text.join('\n')}\n`);
}

// Request --------------------------------------------------------------------------------------

/** Request headers, case-insensitively: headers['Content-Type'] is headers['content-type']. */
function makeHeaders(env) {
  const target = Object.create(null);
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('HTTP_')) target[key.slice(5).toLowerCase().replace(/_/g, '-')] = value;
  }
  if (env.CONTENT_TYPE) target['content-type'] = env.CONTENT_TYPE;
  if (env.CONTENT_LENGTH) target['content-length'] = env.CONTENT_LENGTH;
  const lower = (key) => (typeof key === 'string' ? key.toLowerCase() : key);
  return new Proxy(target, {
    get: (t, key) => t[lower(key)],
    has: (t, key) => lower(key) in t,
    set: (t, key, value) => { t[lower(key)] = value; return true; },
    deleteProperty: (t, key) => delete t[lower(key)],
    getOwnPropertyDescriptor: (t, key) => Reflect.getOwnPropertyDescriptor(t, lower(key)),
  });
}

function parseQuery(qs) {
  const query = Object.create(null);
  const queryAll = Object.create(null);
  for (const [name, value] of new URLSearchParams(qs)) {
    if (!(name in query)) query[name] = value;
    (queryAll[name] ??= []).push(value);
  }
  return { query, queryAll };
}

function contentCharset(contentType) {
  for (const param of (contentType || '').split(';').slice(1)) {
    const eq = param.indexOf('=');
    if (eq >= 0 && param.slice(0, eq).trim().toLowerCase() === 'charset') {
      return param.slice(eq + 1).trim().replace(/^"|"$/g, '') || 'utf-8';
    }
  }
  return 'utf-8';
}

function parseIntOrNull(value) {
  return /^[0-9]+$/.test(value || '') ? Number(value) : null;
}

/** One HTTP request, read from the CGI environment; `body` is read before the handler runs. */
class Request {
  constructor(env, body) {
    const { query, queryAll } = parseQuery(env.QUERY_STRING || '');
    this.method = (env.REQUEST_METHOD || 'GET').toUpperCase();
    this.path = env.PATH_INFO || '/';
    this.query = query;
    this.queryAll = queryAll;
    this.queryString = env.QUERY_STRING || '';
    this.headers = makeHeaders(env);
    this.body = body;
    this.remoteAddr = env.REMOTE_ADDR || '';
    this.functionName = env.FAAS_FUNCTION || '';
    this.invocationId = env.FAAS_INVOCATION_ID || '';
    this.deadlineMs = parseIntOrNull(env.FAAS_DEADLINE_MS);
    this.env = env;
  }

  /** The body decoded with the Content-Type charset (UTF-8 if none); BadRequestError if not. */
  get text() {
    const charset = contentCharset(this.env.CONTENT_TYPE);
    let decoder;
    try {
      decoder = new TextDecoder(charset, { fatal: true });
    } catch {
      throw new BadRequestError('request body is not valid text', `unknown charset "${charset}"`);
    }
    try {
      return decoder.decode(this.body);
    } catch {
      throw new BadRequestError('request body is not valid text', `the body is not valid ${charset}`);
    }
  }

  /** The body parsed as JSON; BadRequestError if it is empty or not JSON. */
  json() {
    let text;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(this.body);
    } catch {
      throw new BadRequestError('request body is not valid JSON', 'the body is not valid UTF-8');
    }
    if (!text.trim()) throw new BadRequestError('request body is not valid JSON', 'the body is empty');
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new BadRequestError('request body is not valid JSON', err.message);
    }
  }

  /** Milliseconds until the sandbox is killed, or null when there is no deadline. */
  remainingMs() {
    return this.deadlineMs === null ? null : Math.max(0, this.deadlineMs - Date.now());
  }
}

/** CONTENT_LENGTH bytes of stdin, or all of it; falls back to a stream on a non-blocking pipe. */
async function readBody() {
  const length = parseIntOrNull(process.env.CONTENT_LENGTH);
  const limit = length === null ? Infinity : length;
  const chunks = [];
  let got = 0;
  try {
    while (got < limit) {
      const buf = Buffer.allocUnsafe(Math.min(limit - got, 1 << 16));
      const n = fs.readSync(0, buf, 0, buf.length, null);
      if (n === 0) return Buffer.concat(chunks, got);
      chunks.push(buf.subarray(0, n));
      got += n;
    }
    return Buffer.concat(chunks, got);
  } catch (err) {
    if (err.code === 'EOF') return Buffer.concat(chunks, got);
    if (err.code !== 'EAGAIN') throw err;
  }
  for await (const chunk of process.stdin) {
    const take = chunk.subarray(0, limit - got);
    chunks.push(take);
    got += take.length;
    if (got >= limit) break;
  }
  return Buffer.concat(chunks, got);
}

// Handler --------------------------------------------------------------------------------------

class HandlerNotFound extends Error {}

async function loadHandler(codeDir, spec) {
  const dot = spec.lastIndexOf('.');
  const moduleName = spec.slice(0, dot);
  const funcName = spec.slice(dot + 1);
  const parts = moduleName.split('.');
  if (dot <= 0 || !funcName || parts.some((p) => !p || p.includes('/') || p.includes('\\'))) {
    throw new HandlerNotFound(`handler "${spec}" is not MODULE.FUNCTION`);
  }
  const base = path.resolve(codeDir, ...parts);
  const file = ['.js', '.cjs', '.mjs'].map((ext) => base + ext).find((f) => fs.existsSync(f));
  if (!file && !fs.existsSync(base)) {
    throw new HandlerNotFound(`there is no ${parts.join('/')}.js, .cjs or .mjs in ${codeDir}`);
  }
  const importESM = (f) => import(require('url').pathToFileURL(f).href);
  let mod;
  if (file && file.endsWith('.mjs')) {
    mod = await importESM(file);
  } else {
    try {
      mod = require(file || base);
    } catch (err) {
      if (err.code !== 'ERR_REQUIRE_ESM') throw err;
      mod = await importESM(file || require.resolve(base));
    }
  }
  let func = mod[funcName];
  if (typeof func !== 'function' && mod.default != null && typeof mod.default[funcName] === 'function') {
    mod = mod.default; // a CommonJS module loaded through import()
    func = mod[funcName];
  }
  if (func === undefined) throw new HandlerNotFound(`module "${moduleName}" has no export "${funcName}"`);
  if (typeof func !== 'function') {
    throw new HandlerNotFound(`${spec} is a ${typeof func}, not a function`);
  }
  return (request) => func.call(mod, request);
}

// Response -------------------------------------------------------------------------------------

function checkStatus(status) {
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new ResponseError(`status must be an integer from 200 to 599, not ${util.inspect(status)}`);
  }
  return status;
}

/** Handler headers -> [[name, value]]: an object, a Map or Headers, or [name, value] pairs. */
function checkHeaders(headers) {
  if (headers == null) return [];
  let pairs;
  if (Array.isArray(headers)) pairs = headers;
  else if (typeof headers.getSetCookie === 'function') { // fetch Headers join Set-Cookie: undo it
    pairs = [...headers.entries()].filter(([n]) => n !== 'set-cookie');
    for (const cookie of headers.getSetCookie()) pairs.push(['set-cookie', cookie]);
  } else if (headers instanceof Map) pairs = [...headers.entries()];
  else if (typeof headers === 'object') pairs = Object.entries(headers);
  else throw new ResponseError(`headers must be an object, a Map or [name, value] pairs, not ${typeof headers}`);
  const outPairs = [];
  for (const pair of pairs) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new ResponseError('header pairs are [name, value]');
    const [name, value] = pair;
    if (typeof name !== 'string' || !TOKEN.test(name)) {
      throw new ResponseError(`header name ${util.inspect(name)} is not an HTTP token`);
    }
    if (name.toLowerCase() === 'status') {
      throw new ResponseError('set the status with {status, headers, body}, not a Status header');
    }
    for (let v of Array.isArray(value) ? value : [value]) {
      if (Number.isInteger(v)) v = String(v);
      if (typeof v !== 'string') throw new ResponseError(`header ${name} must be a string or integer, not ${typeof v}`);
      if (NOT_VISIBLE.test(v)) {
        throw new ResponseError(`header ${name} contains a control character (CR, LF, NUL, ...) `
          + 'or a non-ASCII one (percent-encode it, RFC 8187)');
      }
      outPairs.push([name, v]);
    }
  }
  return outPairs;
}

function isResponseObject(v) {
  const proto = Object.getPrototypeOf(v);
  return (proto === Object.prototype || proto === null) && Number.isInteger(v.status)
    && Object.keys(v).every((k) => RESPONSE_KEYS.has(k));
}

function isWebResponse(v) {
  // Duck-typed so that a handler not using fetch's Response never pays for loading it.
  return typeof v.arrayBuffer === 'function' && typeof v.status === 'number'
    && v.headers != null && typeof v.headers.get === 'function' && 'body' in v;
}

function isStream(v) {
  return typeof v[Symbol.asyncIterator] === 'function'
    || (typeof v.next === 'function' && typeof v[Symbol.iterator] === 'function');
}

/** Handler result -> {status, headers, body, type}; body is a Buffer or an iterator. */
function shape(result) {
  let status = null;
  let headers = [];
  if (result !== null && typeof result === 'object' && isWebResponse(result)) {
    status = checkStatus(result.status);
    headers = checkHeaders(result.headers);
    result = result.body; // a ReadableStream, which is async iterable, or null
  } else if (result !== null && typeof result === 'object' && isResponseObject(result)) {
    status = checkStatus(result.status);
    headers = checkHeaders(result.headers);
    result = result.body;
  }
  let body;
  let type = null;
  if (result == null) {
    body = Buffer.alloc(0);
    status ??= 204;
  } else if (typeof result === 'string') {
    body = Buffer.from(result, 'utf8');
    type = 'text/plain; charset=utf-8';
  } else if (result instanceof Uint8Array) {
    body = Buffer.from(result.buffer, result.byteOffset, result.byteLength);
    type = 'application/octet-stream';
  } else if (result instanceof ArrayBuffer || ArrayBuffer.isView(result)) {
    body = ArrayBuffer.isView(result)
      ? Buffer.from(result.buffer, result.byteOffset, result.byteLength) : Buffer.from(result);
    type = 'application/octet-stream';
  } else if (typeof result === 'object' && !Array.isArray(result) && isStream(result)) {
    body = result;
  } else if (typeof result === 'object' || typeof result === 'number' || typeof result === 'boolean') {
    const json = JSON.stringify(result);
    if (json === undefined) throw new ResponseError('the result has no JSON form');
    body = Buffer.from(json, 'utf8');
    type = 'application/json';
  } else {
    throw new ResponseError(`cannot send a ${typeof result}: return an object, array, string, Buffer, `
      + 'undefined, an (async) iterator, or {status, headers, body}');
  }
  status ??= 200;
  if ((status === 204 || status === 304) && (!Buffer.isBuffer(body) || body.length > 0)) {
    throw new ResponseError(`a ${status} response has no body`);
  }
  return { status, headers, body, type };
}

function chunkBytes(chunk) {
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new ResponseError(`stream chunks must be strings or Uint8Arrays, not ${typeof chunk}`);
}

function head(status, type, headers, length) {
  const lines = [`Status: ${status} ${REASONS[status] || 'Unknown'}`];
  const names = new Set(headers.map(([name]) => name.toLowerCase()));
  if (type && !names.has('content-type')) lines.push(`Content-Type: ${type}`);
  for (const [name, value] of headers) lines.push(`${name}: ${value}`);
  if (length !== null && !names.has('content-length') && status !== 204 && status !== 304) {
    lines.push(`Content-Length: ${length}`);
  }
  return Buffer.from(`${lines.join('\n')}\n\n`, 'utf8');
}

/** An RFC 9457 problem response, whole. */
function problem(kind, title, status, detail) {
  const doc = { type: PROBLEM + kind, title, status };
  if (detail !== undefined) doc.detail = detail;
  const body = Buffer.from(JSON.stringify(doc), 'utf8');
  return Buffer.concat([head(status, 'application/problem+json', [], body.length), body]);
}

const HANDLER_ERROR = ['handler-error', 'handler raised an exception', 500];
const HANDLER_NOT_FOUND = ['handler-not-found', 'handler not found', 500];

// Output ---------------------------------------------------------------------------------------

let claimed = false; // someone has started to answer: the handler's result or a fatal error
let finished = false; // a whole response has been written

function write(buf) {
  return io.write(buf);
}

function exit(code) {
  // The sandbox ends with the response: timers and sockets left open do not keep it alive.
  process.exit(code);
}

function describe(err, streaming) {
  const cut = streaming ? '; the response is cut short' : '';
  if (err instanceof ResponseError) log(`handler returned an invalid response: ${err.message}${cut}`);
  else logError(`handler raised an exception${streaming ? ' while streaming' : ''}${cut}`, err);
}

const END = Symbol('end of stream');

async function nextChunk(it) {
  const step = await it.next();
  return step.done ? END : step.value;
}

async function closeStream(it) {
  try {
    if (it && typeof it.return === 'function') await it.return();
  } catch (err) {
    logError('closing the response stream raised an exception', err);
  }
}

async function respond(handler, request) {
  let response;
  let stream = null;
  try {
    const { status, headers, body, type } = shape(await handler(request));
    if (Buffer.isBuffer(body)) {
      const declared = headers.find(([n]) => n.toLowerCase() === 'content-length');
      if (declared && declared[1] !== String(body.length)) {
        throw new ResponseError(`Content-Length ${declared[1]} but the body has ${body.length} bytes`);
      }
      response = Buffer.concat([head(status, type, headers, body.length), body]);
    } else {
      // The headers wait for the first chunk: an error until then is still a clean 500, and
      // the chunk's type picks the default Content-Type. An empty chunk sends them at once.
      const it = body[Symbol.asyncIterator] ? body[Symbol.asyncIterator]() : body[Symbol.iterator]();
      const first = await nextChunk(it);
      if (first === END) {
        response = head(status, null, headers, null);
      } else {
        const chunkType = typeof first === 'string' ? 'text/plain; charset=utf-8' : 'application/octet-stream';
        response = Buffer.concat([head(status, chunkType, headers, null), chunkBytes(first)]);
        stream = it;
      }
    }
  } catch (err) {
    if (claimed) return; // a fatal error answered already
    stream = null;
    if (err instanceof BadRequestError) {
      log(`bad request: ${err.message}`);
      response = problem('bad-request', err.title, 400, err.detail);
    } else {
      describe(err, false);
      response = problem(...HANDLER_ERROR);
    }
  }
  if (claimed) return;
  claimed = true;
  try {
    await write(response);
    if (stream !== null) {
      for (let chunk = await nextChunk(stream); chunk !== END; chunk = await nextChunk(stream)) {
        const buf = chunkBytes(chunk);
        if (buf.length > 0) await write(buf);
      }
    }
  } catch (err) {
    if (err && (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED')) {
      log('the reader closed stdout; the response is cut short');
    } else {
      describe(err, true);
    }
    await closeStream(stream);
    exit(1);
  }
  finished = true;
  exit(0);
}

/** An exception thrown or a promise rejected outside the handler's own await chain. */
function onStrayError(err) {
  if (finished) return;
  if (claimed) {
    describe(err, true);
    exit(1);
  }
  claimed = true;
  describe(err, false);
  write(problem(...HANDLER_ERROR)).then(() => exit(0), () => exit(1));
}

// With network = "egress" the sandbox's only way out is faas's HTTP proxy, named in
// HTTPS_PROXY/HTTP_PROXY. Node 20 reads neither: fetch (undici) and the http/https modules
// connect directly, which the sandbox refuses. So, when a proxy is named, the default agents
// of http and https open each connection as a CONNECT tunnel through it (TLS on top for
// https), and fetch is replaced by one built on them (buffered request body, streamed
// response body, redirects followed as fetch does). Libraries on the default agents (axios,
// node-fetch, got) follow; a client with an agent or socket of its own does not.
function routeThroughProxy(proxyUrl) {
  const http = require('http');
  const https = require('https');
  const net = require('net');
  const tls = require('tls');
  const { Readable } = require('stream');
  const proxy = new URL(proxyUrl);
  if (proxy.protocol !== 'http:') {
    log(`ignoring proxy ${proxyUrl}: only http:// proxies are supported`);
    return;
  }
  // The proxy itself is reached directly (`agent: false` would build another agent of the
  // default agent's class, which would tunnel again).
  const direct = new http.Agent({ keepAlive: false });
  const tunnel = (host, port, cb) => {
    const target = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
    const req = http.request({
      host: proxy.hostname, port: proxy.port || 80, method: 'CONNECT', path: target,
      headers: { host: target }, agent: direct,
    });
    req.once('connect', (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        const err = new Error(`the egress proxy refused ${target}: ${res.statusCode} ${res.statusMessage}`);
        err.code = 'EGRESS_REFUSED';
        err.statusCode = res.statusCode;
        cb(err);
        return;
      }
      if (head && head.length) socket.unshift(head);
      cb(null, socket);
    });
    req.once('error', cb);
    req.end();
  };
  class TunnelAgent extends http.Agent {
    createConnection(options, cb) { tunnel(options.host, options.port, cb); }
  }
  class TlsTunnelAgent extends https.Agent {
    createConnection(options, cb) {
      tunnel(options.host, options.port, (err, socket) => {
        if (err) return cb(err);
        const servername = options.servername || (net.isIP(options.host) ? undefined : options.host);
        return cb(null, tls.connect({ ...options, socket, servername }));
      });
    }
  }
  http.globalAgent = new TunnelAgent({ keepAlive: false });
  https.globalAgent = new TlsTunnelAgent({ keepAlive: false });
  const REDIRECTS = new Set([301, 302, 303, 307, 308]);
  const once = (url, method, headers, body, signal) => new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method, headers, signal }, resolve);
    req.once('error', reject);
    req.end(body);
  });
  globalThis.fetch = async function fetch(input, init) {
    const request = new globalThis.Request(input, init);
    let url = new URL(request.url);
    let method = request.method;
    let body = request.body ? Buffer.from(await request.arrayBuffer()) : undefined;
    const headers = {};
    request.headers.forEach((v, k) => { headers[k] = v; });
    for (let hops = 0; ; hops++) {
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new TypeError('fetch failed', { cause: new Error(`unsupported scheme ${url.protocol}`) });
      }
      let res;
      try {
        res = await once(url, method, headers, body, request.signal);
      } catch (cause) {
        if (cause && cause.name === 'AbortError') throw cause;
        throw new TypeError('fetch failed', { cause });
      }
      const status = res.statusCode;
      if (REDIRECTS.has(status) && res.headers.location && request.redirect !== 'manual') {
        res.resume();
        if (request.redirect === 'error' || hops >= 20) throw new TypeError('fetch failed', { cause: new Error('redirect') });
        url = new URL(res.headers.location, url);
        if (status === 303 || ((status === 301 || status === 302) && method === 'POST')) {
          method = method === 'HEAD' ? 'HEAD' : 'GET';
          body = undefined;
          delete headers['content-type'];
          delete headers['content-length'];
        }
        continue;
      }
      const out = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        for (const one of Array.isArray(v) ? v : [v]) out.append(k, one);
      }
      const empty = method === 'HEAD' || status === 204 || status === 205 || status === 304;
      if (empty) res.resume();
      const response = new Response(empty ? null : Readable.toWeb(res), { status, statusText: res.statusMessage, headers: out });
      Object.defineProperty(response, 'url', { value: url.href });
      Object.defineProperty(response, 'redirected', { value: hops > 0 });
      return response;
    }
  };
}

async function main(argv) {
  const [codeDir, spec] = argv;
  const proxyUrl = process.env.HTTPS_PROXY || process.env.https_proxy || process.env.HTTP_PROXY || process.env.http_proxy;
  if (proxyUrl) routeThroughProxy(proxyUrl);
  if (argv.length !== 2) {
    log('usage: node node.js CODE_DIR MODULE.FUNCTION');
    claimed = true;
    await write(problem(...HANDLER_NOT_FOUND)).catch(() => {});
    exit(2);
  }
  process.on('uncaughtException', onStrayError);
  process.on('unhandledRejection', onStrayError);
  process.on('beforeExit', () => {
    if (claimed) return;
    log('the handler returned a promise that can never settle: nothing is left that could settle it');
    claimed = true;
    write(problem(...HANDLER_ERROR)).then(() => exit(0), () => exit(1));
  });
  let handler;
  try {
    handler = await loadHandler(codeDir, spec);
  } catch (err) {
    if (err instanceof HandlerNotFound) log(`cannot load handler "${spec}" from ${codeDir}: ${err.message}`);
    else logError(`cannot load handler "${spec}" from ${codeDir}: loading it raised`, err);
    claimed = true;
    await write(problem(...HANDLER_NOT_FOUND)).catch(() => {});
    exit(0);
  }
  await respond(handler, new Request(process.env, await readBody()));
}

main(process.argv.slice(2)).catch((err) => {
  logError('the wrapper failed', err);
  exit(1);
});
