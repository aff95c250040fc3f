//! What `keyturn` says on stderr: `keyturn: ` and the line, with `error:` in red and
//! `warning:` in yellow when stderr is a terminal that takes colour (not when `NO_COLOR`
//! is set or `TERM` is `dumb`), so that logs and pipes get plain text. A line's own
//! control characters are written as escapes (see [`printable`]): a message can quote
//! what others wrote (an API URL from a stack's output, a library's error), and none of it
//! may move the cursor, start a line of its own or send a terminal command.

use std::io::{IsTerminal as _, Write as _};

use crate::api::printable;

fn coloured() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

// A stderr that cannot be written (a full disk, a pipe whose reader is gone) loses the
// line and nothing else: `eprintln!` would panic instead, and a panic in `exec` between
// the issue and the revocation leaves the lease live and the command not run.
fn say(label: &str, colour: &str, line: &str) {
    let line = printable(line);
    let _ = if coloured() {
        writeln!(std::io::stderr(), "keyturn: \x1b[1;{colour}m{label}\x1b[0m {line}")
    } else {
        writeln!(std::io::stderr(), "keyturn: {label} {line}")
    };
}

/// A failure that ends the command.
pub fn error(line: &str) {
    say("error:", "31", line);
}

/// Something the user must know: the credentials will stop working, or a lease was left.
pub fn warning(line: &str) {
    say("warning:", "33", line);
}

/// Progress: which lease, until when (left out with `--quiet`).
pub fn info(line: &str) {
    let _ = writeln!(std::io::stderr(), "keyturn: {}", printable(line));
}
