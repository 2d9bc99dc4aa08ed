//! A deployed directory's function file: `faas.toml` at its top, the same keys as a file in
//! `/etc/faas/functions`, with `code` relative to the directory (left out: the directory
//! itself). Without one, the runtime is inferred from the top-level files. Either way the
//! stored text is the uploader's with `code` pointed at the version's own copy, so that the
//! registry parses it like any other function file.

use std::path::{Component, Path};

use serde::Deserialize;
use toml::Spanned;

use crate::config::ConfigError;

/// The function file's name inside a deployed directory.
pub const FILE: &str = "faas.toml";

/// Why no function file could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FunctionFileError {
    #[error("no faas.toml, and no file to infer the runtime from\nhint: add main.py (python), main.js or index.js (node), main.sh (sh) or an executable main (exec), or a faas.toml naming runtime and handler")]
    NothingToInfer,
    #[error("no faas.toml, and the runtime is ambiguous ({0})\nhint: add a faas.toml naming runtime and handler")]
    Ambiguous(String),
    #[error("faas.toml:{line}:{column}: code {code:?} must be a relative path inside the deployed directory\nhint: leave code out to use the whole directory")]
    CodeOutside { code: String, line: usize, column: usize },
}

/// The text to store, and what the uploader should be told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionText {
    pub text: String,
    /// One line added at the top (`code = …`): error lines are one further down.
    pub prepended: bool,
    /// What was inferred, when there was no faas.toml: `python (main.py, handler main.handle)`.
    pub inferred: Option<String>,
}

/// The top-level files inference looks at, in order; more than one present is ambiguous.
/// (file, needs the execute bit, runtime, handler)
const CANDIDATES: &[(&str, bool, &str, &str)] = &[
    ("main.py", false, "python", "main.handle"),
    ("main.js", false, "node", "main.handle"),
    ("index.js", false, "node", "index.handle"),
    ("main.sh", false, "sh", "main.sh"),
    ("main", true, "exec", "main"),
];

/// Infers a function file from the top-level files; `top_file(name)` says whether `name` is
/// a top-level regular file, and whether it is executable.
pub fn infer(code: &str, top_file: impl Fn(&str) -> Option<bool>) -> Result<FunctionText, FunctionFileError> {
    let found: Vec<_> = CANDIDATES
        .iter()
        .filter(|(file, needs_exec, _, _)| top_file(file).is_some_and(|exec| exec || !needs_exec))
        .collect();
    match found.as_slice() {
        [] => Err(FunctionFileError::NothingToInfer),
        [(file, _, runtime, handler)] => Ok(FunctionText {
            text: format!("runtime = \"{runtime}\"\ncode = {}\nhandler = \"{handler}\"\n", quote(code)),
            prepended: false,
            inferred: Some(format!("{runtime} ({file}, handler {handler})")),
        }),
        many => Err(FunctionFileError::Ambiguous(many.iter().map(|c| c.0).collect::<Vec<_>>().join(", "))),
    }
}

#[derive(Deserialize)]
struct Peek {
    code: Option<Spanned<String>>,
    source: Option<toml::Value>,
}

/// The uploader's `faas.toml` with `code` pointing at `code` (joined with theirs, if they
/// gave a relative one). Text that is not TOML is returned as it is, for the real parse to
/// report where it breaks.
pub fn rewrite(text: &str, code: &str) -> Result<FunctionText, FunctionFileError> {
    let Ok(peek) = toml::from_str::<Peek>(text) else {
        return Ok(FunctionText { text: text.to_owned(), prepended: false, inferred: None });
    };
    match (peek.code, peek.source) {
        (Some(theirs), _) => {
            let rel = Path::new(theirs.get_ref());
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
                let (line, column) = crate::config::line_column(text, theirs.span().start);
                return Err(FunctionFileError::CodeOutside { code: theirs.get_ref().clone(), line, column });
            }
            let joined = Path::new(code).join(rel);
            let span = theirs.span();
            let mut out = String::with_capacity(text.len() + code.len());
            out.push_str(&text[..span.start]);
            out.push_str(&quote(&joined.to_string_lossy()));
            out.push_str(&text[span.end..]);
            Ok(FunctionText { text: out, prepended: false, inferred: None })
        }
        // Inline source: the uploaded files are there but the handler is in the file.
        (None, Some(_)) => Ok(FunctionText { text: text.to_owned(), prepended: false, inferred: None }),
        (None, None) => {
            Ok(FunctionText { text: format!("code = {}\n{text}", quote(code)), prepended: true, inferred: None })
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// An error from parsing the stored text, told as the uploader wrote it: `faas.toml` (or
/// `shown`) instead of the stored path, the line we added taken off.
pub fn relabel(err: ConfigError, shown: &Path, prepended: bool) -> ConfigError {
    match err {
        ConfigError::Invalid { line, column, message, hint, .. } => ConfigError::Invalid {
            path: shown.to_owned(),
            line: if prepended && line > 1 { line - 1 } else { line },
            column,
            message,
            hint,
        },
        ConfigError::Read { source, .. } => ConfigError::Read { path: shown.to_owned(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_names_what_it_chose() {
        let only = |name: &'static str, exec: bool| move |f: &str| (f == name).then_some(exec);
        let t = infer("code", only("main.py", false)).unwrap();
        assert_eq!(t.text, "runtime = \"python\"\ncode = \"code\"\nhandler = \"main.handle\"\n");
        assert_eq!(t.inferred.as_deref(), Some("python (main.py, handler main.handle)"));
        assert_eq!(
            infer("c", only("index.js", false)).unwrap().inferred.as_deref(),
            Some("node (index.js, handler index.handle)")
        );
        assert_eq!(infer("c", only("main", true)).unwrap().inferred.as_deref(), Some("exec (main, handler main)"));
        assert_eq!(infer("c", only("main", false)), Err(FunctionFileError::NothingToInfer), "main must be executable");
        assert_eq!(
            infer("c", only("main.sh", false)).unwrap().inferred.as_deref(),
            Some("sh (main.sh, handler main.sh)")
        );
        let both = |f: &str| matches!(f, "main.py" | "main.js").then_some(false);
        assert_eq!(infer("c", both), Err(FunctionFileError::Ambiguous("main.py, main.js".into())));
    }

    #[test]
    fn code_is_pointed_at_the_copy() {
        let t = rewrite("runtime = \"sh\"\nhandler = \"run.sh\"\n", "code").unwrap();
        assert_eq!(t.text, "code = \"code\"\nruntime = \"sh\"\nhandler = \"run.sh\"\n");
        assert!(t.prepended);
        let t = rewrite("runtime = \"sh\"\ncode = \"src\"\nhandler = \"run.sh\"\n", "code").unwrap();
        assert_eq!(t.text, "runtime = \"sh\"\ncode = \"code/src\"\nhandler = \"run.sh\"\n");
        assert!(!t.prepended);
        let t = rewrite("runtime = \"sh\"\nsource = \"echo\"\n", "code").unwrap();
        assert_eq!(t.text, "runtime = \"sh\"\nsource = \"echo\"\n");
        assert_eq!(
            rewrite("runtime = \"sh\"\ncode = \"/etc\"\n", "code"),
            Err(FunctionFileError::CodeOutside { code: "/etc".into(), line: 2, column: 8 })
        );
        assert!(matches!(rewrite("code = \"a/../..\"\n", "code"), Err(FunctionFileError::CodeOutside { .. })));
    }

    #[test]
    fn errors_are_told_as_written() {
        let config = crate::config::Config::default();
        let t = rewrite("runtime = \"sh\"\nhandler = \"run.sh\"\nbogus = 1\n", "/nonexistent").unwrap();
        let err = crate::function::Function::parse(Path::new("/x/name.toml"), &t.text, &config).unwrap_err();
        let err = relabel(err, Path::new("faas.toml"), t.prepended);
        assert!(err.to_string().starts_with("faas.toml:3:1: unknown field `bogus`"), "{err}");
    }
}
