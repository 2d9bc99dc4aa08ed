//! Shell completion: the bash, zsh and fish scripts come from the clap definition
//! (clap_complete), with one addition each: the function name of `faas invoke NAME` completes
//! from `faas complete-functions`, which asks the running daemon (the admin socket's
//! `/_/functions`) and falls back to the function files. It is called on every TAB, so it is
//! quick (a short deadline), prints nothing but names, and never fails.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::CommandFactory;

use super::Cli;
use crate::config::Config;

/// Where faas-admin.socket listens (systemd/faas-admin.socket).
const ADMIN_SOCKET: &str = "/run/faas/admin.sock";

/// How long a TAB may wait for the daemon. A socket-activated faas that is not running is
/// started by the connection and is rarely ready this soon: the file names answer then.
const DAEMON_DEADLINE: Duration = Duration::from_millis(500);

/// The most of `/_/functions` that is read: names of a few thousand functions.
const MAX_RESPONSE: u64 = 4 << 20;

/// The shells there are scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    /// bash (bash-completion loads /usr/share/bash-completion/completions/faas).
    Bash,
    /// zsh (`_faas` in a directory on $fpath).
    Zsh,
    /// fish (vendor_completions.d/faas.fish).
    Fish,
}

/// The command line as users see it: clap_complete (unlike clap_mangen) lists hidden
/// subcommands, so they are left out here.
pub(super) fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("faas").subcommand_required(true).arg_required_else_help(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if full.get_version().is_some() {
        cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    }
    for arg in full.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    cmd.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// Prints the completion script for `shell`.
pub fn print_script(shell: CompletionShell) -> Result<(), String> {
    let script = script(shell)?;
    std::io::stdout().write_all(script.as_bytes()).map_err(|e| format!("failed to write the completion script: {e}"))
}

/// clap_complete's script for `shell` with function names completed for `faas invoke`.
fn script(shell: CompletionShell) -> Result<String, String> {
    let generator = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut visible_command(), "faas", &mut out);
    let generated = String::from_utf8(out).map_err(|_| "clap_complete wrote a script that is not UTF-8".to_owned())?;
    // Each edit is checked: a clap_complete update that changes what it generates must fail
    // the build's tests, not ship a script where names quietly stop completing.
    match shell {
        CompletionShell::Bash => {
            let registered = generated.matches("complete -F _faas ").count();
            if registered == 0 {
                return Err("the bash script registers no `complete -F _faas`; clap_complete changed".into());
            }
            Ok(generated.replace("complete -F _faas ", "complete -F _faas_with_function_names ") + BASH_NAMES)
        }
        CompletionShell::Zsh => {
            // The invoke subcommand's positional: `':name -- The function:_default' \`.
            let lines: Vec<&str> =
                generated.lines().filter(|l| l.starts_with("':name -- ") && l.ends_with(":_default' \\")).collect();
            if lines.len() != 1 {
                return Err(format!(
                    "expected one `':name -- …:_default'` spec in the zsh script, found {}; clap_complete changed",
                    lines.len()
                ));
            }
            let hooked = lines[0].replace(":_default' \\", ":_faas_function_names' \\");
            let body = generated.replacen(lines[0], &hooked, 1);
            let (first, rest) = body.split_once('\n').ok_or("the zsh script is one line")?;
            if first != "#compdef faas" {
                return Err(format!("the zsh script starts with {first:?}, not #compdef faas"));
            }
            Ok(format!("{first}\n{ZSH_NAMES}{rest}\n"))
        }
        CompletionShell::Fish => {
            if !generated.contains("function __fish_faas_global_optspecs") {
                return Err("the fish script has no __fish_faas_global_optspecs; clap_complete changed".into());
            }
            Ok(generated + FISH_NAMES)
        }
    }
}

/// bash: the first word that is not an option (or an option's value) is the subcommand; for
/// `invoke`, the next such word is the function name.
const BASH_NAMES: &str = r#"
# Function names for `faas invoke NAME`, from the running daemon (or the function files).
_faas_with_function_names() {
    local cur=${COMP_WORDS[COMP_CWORD]} i word sub="" positional=0 value=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if ((value)); then
            # COMP_WORDBREAKS splits --config=x into --config, =, x.
            [[ $word == = ]] || value=0
            continue
        fi
        case $word in
            --config | --functions | --wrappers | --state-dir | -X | --method | --path | --query | -H | --header) value=1 ;;
            -*) ;;
            *)
                if [[ -z $sub ]]; then sub=$word; else positional=$((positional + 1)); fi
                ;;
        esac
    done
    if [[ $sub == invoke ]] && ((positional == 0 && value == 0)) && [[ $cur != -* && $cur != = ]]; then
        COMPREPLY=($(compgen -W "$(faas complete-functions 2>/dev/null)" -- "$cur"))
        return 0
    fi
    _faas "$@"
}
"#;

/// zsh: `_arguments` calls this for the invoke positional (its spec is edited to name it).
const ZSH_NAMES: &str = r#"
# Function names for `faas invoke NAME`, from the running daemon (or the function files).
(( $+functions[_faas_function_names] )) ||
_faas_function_names() {
    local -a names
    names=(${(f)"$(_call_program functions faas complete-functions 2>/dev/null)"})
    _describe -t functions 'faas function' names
}
"#;

/// fish: after `invoke` and before its one positional, offer the names.
const FISH_NAMES: &str = r#"
# Function names for `faas invoke NAME`, from the running daemon (or the function files).
function __fish_faas_needs_function_name
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_faas_global_optspecs) -- $cmd 2>/dev/null
    or return 1
    test "$argv[1]" = invoke
    or return 1
    set -e argv[1]
    argparse (__fish_faas_global_optspecs) X/method= path= query= H/header= i/include -- $argv 2>/dev/null
    or return 1
    test (count $argv) -eq 0
end
complete -c faas -n __fish_faas_needs_function_name -f -a '(faas complete-functions 2>/dev/null)'
"#;

/// Prints the function names, one a line: the daemon's when its admin socket answers within
/// the deadline (and no other settings were asked for), else those of the files in the
/// functions directory that `config` gives. Prints nothing when neither is there.
pub fn print_function_names(cli: &Cli, config: impl FnOnce() -> Option<Config>) {
    let default_settings = cli.config.is_none() && cli.functions.is_none();
    let from_daemon = if default_settings { names_from_daemon(Path::new(ADMIN_SOCKET), DAEMON_DEADLINE) } else { None };
    let names = from_daemon.or_else(|| config().and_then(|c| names_from_dir(&c.functions_dir))).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    for name in names {
        // A closed pipe (the shell gave up) is not worth a word.
        if writeln!(stdout, "{name}").is_err() {
            return;
        }
    }
}

/// The names in the daemon's `/_/functions`, or None if it does not answer 200 with them
/// before `deadline`.
fn names_from_daemon(socket: &Path, deadline: Duration) -> Option<Vec<String>> {
    let until = Instant::now() + deadline;
    let left = || until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_write_timeout(left()).ok()?;
    stream.write_all(b"GET /_/functions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        stream.set_read_timeout(Some(left()?)).ok()?;
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() as u64 > MAX_RESPONSE {
            return None;
        }
    }
    names_from_response(&response)
}

/// The names in an HTTP/1.1 response to `GET /_/functions`.
fn names_from_response(response: &[u8]) -> Option<Vec<String>> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let mut body = response[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    if !status.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        body = dechunk(&body)?;
    }
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let mut names: Vec<String> = json
        .get("functions")?
        .as_array()?
        .iter()
        .filter_map(|f| f.get("name")?.as_str())
        .filter(|n| crate::function::valid_name(n))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// The body of a chunked transfer coding (RFC 9112 section 7.1), without trailers.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The names of the function files in `dir` (`NAME.toml` with a valid NAME).
fn names_from_dir(dir: &Path) -> Option<Vec<String>> {
    let files = crate::registry::function_files(dir).ok()?;
    let names = files
        .iter()
        .filter_map(|f| f.file_stem()?.to_str())
        .filter(|n| crate::function::valid_name(n))
        .map(str::to_owned)
        .collect();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::process::{Command, Stdio};

    const FUNCTIONS: &str = r#"{"functions":[{"name":"zeta","status":"ready"},{"name":"alpha","status":"invalid","reason":"x"},{"name":"../etc","status":"ready"}],"layers":"x"}"#;

    /// Answers one request for /_/functions on a unix socket in `dir` with `response` (and
    /// anything else with a 404, as the daemon would); returns the socket's path.
    fn serve_once(dir: &Path, response: Vec<u8>) -> std::path::PathBuf {
        let path = dir.join("admin.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let n = conn.read(&mut request).unwrap_or(0);
                let asked = request[..n].starts_with(b"GET /_/functions HTTP/1.1\r\n");
                let _ = conn.write_all(if asked {
                    &response
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
                });
            }
        });
        path
    }

    #[test]
    fn names_come_from_the_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{FUNCTIONS}",
            FUNCTIONS.len()
        );
        let sock = serve_once(dir.path(), response.into_bytes());
        assert_eq!(
            names_from_daemon(&sock, Duration::from_secs(10)),
            Some(vec!["alpha".to_owned(), "zeta".to_owned()])
        );
    }

    #[test]
    fn chunked_answers_are_read() {
        let body = FUNCTIONS.as_bytes();
        let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(10) {
            response.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            response.extend_from_slice(part);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(names_from_response(&response), Some(vec!["alpha".to_owned(), "zeta".to_owned()]));
    }

    #[test]
    fn no_daemon_no_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(names_from_daemon(&dir.path().join("absent.sock"), Duration::from_secs(1)), None);
        assert_eq!(names_from_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"), None);
        assert_eq!(names_from_response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n{}}"), None);
    }

    #[test]
    fn a_silent_daemon_is_given_up_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        // Accepts (as systemd's socket does while faas starts) and never answers.
        let listener = UnixListener::bind(&path).expect("bind");
        let started = Instant::now();
        assert_eq!(names_from_daemon(&path, Duration::from_millis(200)), None);
        // A hang guard only: the deadline is what ends it, not a reply.
        assert!(started.elapsed() < Duration::from_secs(30));
        drop(listener);
    }

    #[test]
    fn names_come_from_the_files_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["hello.toml", "echo-node.toml", "Bad.toml", "notes.txt"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        assert_eq!(names_from_dir(dir.path()), Some(vec!["echo-node".to_owned(), "hello".to_owned()]));
        assert_eq!(names_from_dir(&dir.path().join("absent")), None);
    }

    #[test]
    fn hidden_subcommands_are_not_completed() {
        for shell in [CompletionShell::Bash, CompletionShell::Zsh, CompletionShell::Fish] {
            let s = script(shell).expect("script");
            assert!(s.contains("invoke") && s.contains("doctor"), "{shell:?}");
            for hidden in ["complete-functions\"", "completions", "man)", "'man:"] {
                assert!(!s.contains(hidden), "{shell:?} script offers the hidden {hidden}");
            }
        }
    }

    #[test]
    fn zsh_and_fish_ask_for_names() {
        let zsh = script(CompletionShell::Zsh).expect("zsh");
        assert!(zsh.starts_with("#compdef faas\n"));
        assert!(zsh.contains(":_faas_function_names' \\"), "{zsh}");
        assert!(zsh.contains("_call_program functions faas complete-functions"), "{zsh}");
        let fish = script(CompletionShell::Fish).expect("fish");
        assert!(
            fish.contains(
                "complete -c faas -n __fish_faas_needs_function_name -f -a '(faas complete-functions 2>/dev/null)'"
            ),
            "{fish}"
        );
    }

    /// Runs the bash script's completion for `words` (the last one is being completed) with a
    /// `faas` on PATH that prints "hello" and "hi-there"; returns COMPREPLY.
    fn bash_complete(words: &[&str]) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("faas");
        std::fs::write(&fake, "#!/bin/sh\n[ \"$1\" = complete-functions ] && printf 'hello\\nhi-there\\n'\n")
            .expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let script_path = dir.path().join("faas.bash");
        std::fs::write(&script_path, script(CompletionShell::Bash).expect("bash")).expect("write");
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let driver = format!(
            "source {}\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_faas_with_function_names faas '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            script_path.display(),
            quoted.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words.get(words.len().wrapping_sub(2)).copied().unwrap_or(""),
        );
        let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new("bash")
            .arg("-c")
            .arg(driver)
            .env("PATH", path)
            .stderr(Stdio::inherit())
            .output()
            .expect("bash");
        assert!(out.status.success(), "bash failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn bash_completes_function_names_after_invoke() {
        assert_eq!(bash_complete(&["faas", "invoke", "h"]), ["hello", "hi-there"]);
        assert_eq!(bash_complete(&["faas", "invoke", "he"]), ["hello"]);
        assert_eq!(bash_complete(&["faas", "--config", "/x.toml", "invoke", "-X", "GET", ""]), ["hello", "hi-there"]);
        // Not in the name's place: the generated completion answers.
        assert_eq!(bash_complete(&["faas", "invoke", "hello", "--inc"]), ["--include"]);
        assert_eq!(bash_complete(&["faas", "inv"]), ["invoke"]);
        let after_name = bash_complete(&["faas", "invoke", "hello", "h"]);
        assert!(!after_name.contains(&"hello".to_owned()), "offered a second name: {after_name:?}");
        let method = bash_complete(&["faas", "invoke", "-X", "h"]);
        assert!(!method.contains(&"hello".to_owned()), "offered a name as the method: {method:?}");
    }
}
