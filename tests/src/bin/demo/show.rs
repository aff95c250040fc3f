//! How the demo prints: a part's and a section's heading with one line of what the reader
//! is seeing, outputs indented under them, and `keyturn` runs shown as a shell session
//! would show them, with every secret in their output replaced by its fingerprint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Mutex;

use keyturn_tests::gateway;
use keyturn_tests::password_fingerprint;

/// Under a section: what the demo does and shows.
pub const OUT: &str = "   ";
/// Under a command: what it printed.
pub const OUT2: &str = "       ";

/// The variables of `keyturn creds`' env format whose value is secret.
const SECRET_VARIABLES: [&str; 4] = ["PGPASSWORD", "MYSQL_PWD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// A part of the demo: its title and what the reader is seeing in it.
pub fn part(title: &str, what: &str) {
    println!("\n\n======== {title}");
    println!("{OUT}{what}");
}

/// A section of a part.
pub fn section(title: &str, what: &str) {
    println!("\n---- {title}");
    println!("{OUT}{what}");
}

/// A line of the demo's own, under a section.
pub fn note(line: &str) {
    println!("{OUT}{line}");
}

/// A secret as the demo shows it.
pub fn fingerprint(secret: &str) -> String {
    format!("[fingerprint {}]", password_fingerprint(secret))
}

/// `args` as a shell would take them: a word that needs quoting in single quotes, or in
/// double quotes when it holds a single quote (and nothing a shell expands there).
pub fn shell_words(args: &[&str]) -> String {
    let plain = |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    let word = |a: &&str| match *a {
        a if plain(a) => a.to_owned(),
        a if !a.contains('\'') => format!("'{a}'"),
        a if !a.contains(['"', '$', '`', '\\']) => format!("\"{a}\""),
        a => format!("'{}'", a.replace('\'', r"'\''")),
    };
    args.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// One `keyturn` run: what it printed on stderr and the variables of its env-format output
/// (secrets included: never print these).
pub struct Run {
    pub stderr: String,
    pub vars: BTreeMap<String, String>,
}

impl Run {
    /// The lease id of `keyturn: lease ID expires at ...` on stderr.
    pub fn lease_id(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("keyturn: lease ")?.split_once(" expires at ").map(|(id, _)| id.to_owned()))
            .unwrap_or_else(|| panic!("no lease line from keyturn:\n{}", self.stderr))
    }

    /// A variable of the env-format output.
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map_or_else(|| panic!("keyturn printed no {name}"), String::as_str)
    }
}

/// The `keyturn` command against the demo's gateway.
pub struct Cli {
    pub url: String,
    /// The CA psql verifies the harness's PostgreSQL with (`PGSSLROOTCERT`).
    pub ca: PathBuf,
    /// Every secret any run printed so far: no printed line may hold one.
    secrets: Mutex<Vec<String>>,
}

impl Cli {
    pub fn new(url: &str, ca: PathBuf) -> Cli {
        Cli { url: url.to_owned(), ca, secrets: Mutex::new(Vec::new()) }
    }

    /// Runs `keyturn ARGS` signing with `key` and prints it as `$ keyturn ARGS   # note`,
    /// then its output (secrets as fingerprints) and its exit status.
    pub fn run(&self, key: (&str, &str), args: &[&str], note: &str) -> Run {
        println!("\n{OUT}$ keyturn {}      # {note}", shell_words(args));
        let mut command = gateway::cli(&self.url, key);
        command.args(args).env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", &self.ca);
        // The gateway serves on this runtime's other workers meanwhile.
        let out: Output = tokio::task::block_in_place(|| command.output()).expect("run keyturn");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let vars = env_variables(&stdout);
        let mut secrets = self.secrets.lock().unwrap();
        secrets.extend(vars.iter().filter(|(n, _)| SECRET_VARIABLES.contains(&n.as_str())).map(|(_, v)| v.clone()));
        let shown = format!("{}{stderr}", if vars.is_empty() { stdout.to_string() } else { redacted(&stdout, &vars) });
        // The last line of defence: a secret that reached the output unredacted stops the
        // demo (the message names no secret).
        assert!(!secrets.iter().any(|s| shown.contains(s.as_str())), "keyturn's output holds a secret; not printed");
        for line in shown.lines() {
            println!("{OUT2}{line}");
        }
        let code = out.status.code();
        println!("{OUT2}(exit {})", code.map_or("by a signal".to_owned(), |c| c.to_string()));
        Run { stderr: stderr.into_owned(), vars }
    }
}

/// The `export NAME='value'` lines of `keyturn creds`' env format, unquoted.
fn env_variables(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| {
            let (name, quoted) = line.strip_prefix("export ")?.split_once('=')?;
            let value = quoted.strip_prefix('\'')?.strip_suffix('\'')?.replace(r"'\''", "'");
            Some((name.to_owned(), value))
        })
        .collect()
}

/// The env format with each secret variable's value as its fingerprint, and the password
/// in `DATABASE_URL` as the same fingerprint as the password's variable.
fn redacted(stdout: &str, vars: &BTreeMap<String, String>) -> String {
    let password = vars.get("PGPASSWORD").or(vars.get("MYSQL_PWD"));
    let mut shown = String::new();
    for line in stdout.lines() {
        let name = line.strip_prefix("export ").and_then(|l| l.split_once('=')).map(|(n, _)| n);
        let line = match (name, name.and_then(|n| vars.get(n))) {
            (Some(name), Some(value)) if SECRET_VARIABLES.contains(&name) => {
                format!("export {name}={}", fingerprint(value))
            }
            (Some("DATABASE_URL"), Some(url)) => format!("export DATABASE_URL='{}'", url_redacted(url, password)),
            _ => line.to_owned(),
        };
        shown.push_str(&line);
        shown.push('\n');
    }
    shown
}

/// `scheme://user:PASSWORD@rest` with the password as `password`'s fingerprint; the whole
/// URL's fingerprint if it is not of that shape.
fn url_redacted(url: &str, password: Option<&String>) -> String {
    let parts = url.split_once("://").and_then(|(scheme, rest)| {
        let (userinfo, host) = rest.rsplit_once('@')?;
        Some((scheme, userinfo.split_once(':')?.0, host))
    });
    match (parts, password) {
        (Some((scheme, user, host)), Some(password)) => format!("{scheme}://{user}:{}@{host}", fingerprint(password)),
        _ => fingerprint(url),
    }
}
