//! The handler contract end to end: the shipped examples, and what each return type of a
//! Python or Node handler becomes, through the real daemon and sandbox.

mod common;

use common::{python, require_root, Daemon};

fn examples() -> Daemon {
    let dir = common::repo().join("config/functions");
    Daemon::start_with(&[], &format!("functions_dir = \"{}\"\n[limits]\nconcurrency = 4\n", dir.display()))
}

fn node(source: &str) -> String {
    format!("runtime = \"node\"\nsource = '''\n{source}\n'''\n")
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn shipped_examples_answer() {
    require_root();
    let d = examples();
    let r = d.get("/hello?name=ada");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), d.logs());
    assert_eq!(r.json()["hello"], "ada");
    let r = d.post("/hello", br#"{"x": [1, 2]}"#);
    assert_eq!(r.json()["echo"], serde_json::json!({"x": [1, 2]}), "{}", r.text());
    assert_eq!(d.request("DELETE", "/hello", b"").status, 405);
    let r = common::request_to(&d.url("/echo-node/a/b?q=1"), "PUT", b"payload", &[("X-Trace", "t1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!((j["method"].as_str(), j["path"].as_str(), j["body"].as_str()), (Some("PUT"), Some("/a/b"), Some("payload")), "{j}");
    let r = d.get("/env-sh?a=b");
    assert!(r.text().contains("QUERY_STRING=a=b") && r.text().contains("REQUEST_METHOD=GET"), "{}", r.text());
    let r = d.get("/cgi-exec");
    assert_eq!((r.status, r.header("x-example")), (201, Some("cgi")), "{}", r.text());
    let r = d.get("/inline?name=ada");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(d.logs().contains("hello["), "the hello handler's stderr reaches the log:\n{}", d.logs());
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn python_return_types() {
    require_root();
    let src = r#"
def handle(request):
    kind = request.query.get("kind")
    if kind == "dict": return {"a": 1}
    if kind == "str": return "text"
    if kind == "bytes": return b"\x00\x01"
    if kind == "none": return None
    if kind == "tuple": return 201, {"X-A": "1", "Location": "/x"}, {"made": True}
    if kind == "stream":
        def chunks():
            yield "one\n"
            yield "two\n"
        return chunks()
    if kind == "inject": return 200, {"X-A": "1\r\nX-B: 2"}, "x"
    if kind == "raise": raise RuntimeError("secret detail")
    if kind == "json": return request.json()
    if kind == "print":
        print("stray print")
        return "ok"
"#;
    let d = Daemon::start(&[("p", &python(src, ""))]);
    let r = d.get("/p?kind=dict");
    assert_eq!((r.status, r.header("content-type"), r.text().as_str()), (200, Some("application/json"), r#"{"a":1}"#));
    let r = d.get("/p?kind=str");
    assert_eq!((r.header("content-type"), r.text().as_str()), (Some("text/plain; charset=utf-8"), "text"));
    let r = d.get("/p?kind=bytes");
    assert_eq!((r.header("content-type"), r.body.as_slice()), (Some("application/octet-stream"), &b"\x00\x01"[..]));
    assert_eq!(d.get("/p?kind=none").status, 204);
    let r = d.get("/p?kind=tuple");
    assert_eq!((r.status, r.header("x-a"), r.header("location")), (201, Some("1"), Some("/x")));
    assert_eq!(d.get("/p?kind=stream").text(), "one\ntwo\n");
    let r = d.get("/p?kind=inject");
    assert_eq!(r.status, 500, "header injection must be refused: {:?}", r.headers);
    assert!(r.header("x-b").is_none());
    let r = d.get("/p?kind=raise");
    assert_eq!(r.status, 500);
    assert!(!r.text().contains("secret detail") && !r.text().contains("Traceback"), "traceback leaked: {}", r.text());
    assert!(d.logs().contains("Traceback") && d.logs().contains("secret detail"), "traceback missing from the log:\n{}", d.logs());
    let r = d.post("/p?kind=json", b"{not json");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = d.get("/p?kind=print");
    assert_eq!(r.text(), "ok");
    assert!(d.logs().contains("stray print"));
}

#[test]
#[ignore = "needs root: sudo -E cargo test -- --include-ignored"]
fn node_return_types() {
    require_root();
    let src = r#"
exports.handle = async (request) => {
  switch (request.query.kind) {
    case 'obj': return { a: 1 };
    case 'str': return 'text';
    case 'none': return undefined;
    case 'resp': return { status: 202, headers: { 'X-A': '1' }, body: 'accepted' };
    case 'stream': return (async function* () { yield 'one\n'; yield 'two\n'; })();
    case 'raise': throw new Error('secret detail');
    case 'reject': return Promise.reject(new Error('rejected detail'));
  }
};
"#;
    let d = Daemon::start(&[("n", &node(src))]);
    let r = d.get("/n?kind=obj");
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"a":1}"#), "{}", d.logs());
    assert_eq!(d.get("/n?kind=str").text(), "text");
    assert_eq!(d.get("/n?kind=none").status, 204);
    let r = d.get("/n?kind=resp");
    assert_eq!((r.status, r.header("x-a"), r.text().as_str()), (202, Some("1"), "accepted"));
    assert_eq!(d.get("/n?kind=stream").text(), "one\ntwo\n");
    for kind in ["raise", "reject"] {
        let r = d.get(&format!("/n?kind={kind}"));
        assert_eq!(r.status, 500, "{kind}");
        assert!(!r.text().contains("detail\""), "{}", r.text());
    }
    assert!(d.logs().contains("secret detail") && d.logs().contains("rejected detail"), "{}", d.logs());
}
