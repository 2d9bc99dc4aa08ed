//! Language → interpreter, wrapper and argv. The wrappers sit at `/faas` and the code at
//! `/code` inside every sandbox; the interpreters are the host's, under the read-only `/usr`.

use std::ffi::CString;

use crate::config::Runtimes;
use crate::function::Runtime;

/// The program to exec and its argv (argv[0] included).
pub fn command(runtime: Runtime, handler: &str, runtimes: &Runtimes) -> (CString, Vec<CString>) {
    let c = |s: &str| CString::new(s).expect("handlers and paths are checked to hold no NUL");
    let path = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_encoded_bytes()).expect("paths from the config hold no NUL")
    };
    let script = format!("/code/{handler}");
    match runtime {
        // -I: ignore PYTHON* variables and the user site; -B: /code is read-only anyway.
        Runtime::Python => (
            path(&runtimes.python),
            vec![path(&runtimes.python), c("-I"), c("-B"), c("/faas/python.py"), c("/code"), c(handler)],
        ),
        Runtime::Node => (path(&runtimes.node), vec![path(&runtimes.node), c("/faas/node.js"), c("/code"), c(handler)]),
        Runtime::Sh => (path(&runtimes.sh), vec![path(&runtimes.sh), c(&script)]),
        Runtime::Exec => (c(&script), vec![c(&script)]),
    }
}

/// A Python zygote's program and argv: the same interpreter and flags as a cold start, running
/// `/faas/zygote.py` (which takes its handler from the daemon).
pub fn zygote_command(runtimes: &Runtimes) -> (CString, Vec<CString>) {
    let (exe, mut argv) = command(Runtime::Python, "-", runtimes);
    argv.truncate(3);
    argv.push(c"/faas/zygote.py".into());
    (exe, argv)
}

/// The compile sandbox's argv (bytecode.rs): the zygote script, compiling `/code`.
pub fn compile_argv(runtimes: &Runtimes) -> Vec<CString> {
    let (_, mut argv) = zygote_command(runtimes);
    argv.extend([c"--compile".into(), c"/code".into()]);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_per_runtime() {
        let r = Runtimes::default();
        let (exe, argv) = command(Runtime::Python, "main.handle", &r);
        assert_eq!(exe.to_str().unwrap(), "/usr/bin/python3");
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(argv, ["/usr/bin/python3", "-I", "-B", "/faas/python.py", "/code", "main.handle"]);
        let (exe, argv) = command(Runtime::Exec, "bin/run.cgi", &r);
        assert_eq!(exe.to_str().unwrap(), "/code/bin/run.cgi");
        assert_eq!(argv.len(), 1);
        let (_, argv) = command(Runtime::Sh, "env.sh", &r);
        assert_eq!(argv[1].to_str().unwrap(), "/code/env.sh");
    }
}
