//! The CLI's release archive (scripts/cli-archive, what `make cli` and the release
//! workflow write) and the composite action's installer
//! (.github/actions/keyturn-exec/install-cli), with the archives served from a loopback
//! HTTP server as a GitHub release serves its assets: the archive is reproducible; the
//! installer puts a `keyturn` that runs in place; an archive that does not match
//! SHA256SUMS, or that SHA256SUMS does not list, is refused and nothing is installed.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keyturn_tests::lambda::function_binary;

const VERSION: &str = "9.8.7-test";

fn root() -> PathBuf {
    keyturn_tests::project_root()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory for this test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keyturn-{test}-{}", keyturn_tests::random_token()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// scripts/cli-archive BINARY VERSION TARGET OUT with the commit time `epoch`.
fn archive(binary: &Path, target: &str, out: &Path, epoch: &str) -> Output {
    let output = Command::new("python3")
        .arg(root().join("scripts/cli-archive"))
        .args([binary.as_os_str(), VERSION.as_ref(), target.as_ref(), out.as_os_str()])
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .expect("run scripts/cli-archive");
    assert!(output.status.success(), "cli-archive: {}", text(&output.stderr));
    output
}

/// Serves the files of `dir` over HTTP on a loopback port (GET only, 404 for anything
/// else); the base URL.
fn serve(dir: PathBuf) -> String {
    serve_on("127.0.0.1", dir)
}

fn install(base: &str, dest: &Path, target: Option<&str>) -> Output {
    install_pinned(base, dest, target, None)
}

/// [`install`] with the archive's hash pinned by the caller (`KEYTURN_ARCHIVE_SHA256`).
fn install_pinned(base: &str, dest: &Path, target: Option<&str>, sha256: Option<&str>) -> Output {
    let mut command = Command::new(root().join(".github/actions/keyturn-exec/install-cli"));
    command.args([base, VERSION]).arg(dest).env_remove("KEYTURN_ARCHIVE_SHA256");
    if let Some(target) = target {
        command.arg(target);
    }
    if let Some(sha256) = sha256 {
        command.env("KEYTURN_ARCHIVE_SHA256", sha256);
    }
    command.output().expect("run install-cli")
}

/// A release whose archive and SHA256SUMS were replaced together passes SHA256SUMS; the
/// hash the caller recorded for the version (the action's `sha256`) refuses it.
#[test]
fn a_pinned_hash_refuses_a_release_replaced_as_a_whole() {
    let work = scratch("install-pinned");
    let dist = work.join("dist");
    archive(&function_binary("keyturn"), host_target(), &dist, "1700000000");
    let name = format!("keyturn-{VERSION}-{}.tar.gz", host_target());
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let recorded = sums.split_whitespace().next().unwrap().to_owned();
    let base = serve(dist.clone());

    let dest = work.join("bin");
    let out = install_pinned(&base, &dest, None, Some(&recorded));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dest.join("keyturn").exists());

    // The archive replaced by another build, and SHA256SUMS with it.
    archive(&function_binary("keyturn"), host_target(), &dist, "1700000001");
    assert_ne!(std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap(), sums, "another archive");
    let fresh = work.join("replaced");
    let out = install_pinned(&base, &fresh, None, Some(&recorded));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pinned KEYTURN_ARCHIVE_SHA256"), "{}", text(&out.stderr));
    assert!(!fresh.join("keyturn").exists(), "nothing installed");
    let out = install_pinned(&base, &fresh, None, Some("not-a-hash"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!fresh.join(&name).exists() && !fresh.join("keyturn").exists());
    let _ = std::fs::remove_dir_all(&work);
}

/// This machine's archive name, as install-cli picks it.
fn host_target() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-unknown-linux-gnu",
        _ => "x86_64-unknown-linux-gnu",
    }
}

#[test]
fn the_archive_is_reproducible_and_holds_the_binary_and_readme_owned_by_root() {
    let work = scratch("archive");
    let (one, two) = (work.join("one"), work.join("two"));
    archive(&function_binary("keyturn"), host_target(), &one, "1700000000");
    archive(&function_binary("keyturn"), host_target(), &two, "1700000000");
    let name = format!("keyturn-{VERSION}-{}.tar.gz", host_target());
    let (a, b) = (std::fs::read(one.join(&name)).unwrap(), std::fs::read(two.join(&name)).unwrap());
    assert!(a == b, "the same inputs give the same bytes");
    let sums = std::fs::read_to_string(one.join("SHA256SUMS")).unwrap();
    let check = Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(&one).output().unwrap();
    assert!(check.status.success(), "{sums}: {}", text(&check.stdout));
    assert_eq!(sums.lines().count(), 1, "{sums}");

    let listing = Command::new("tar").args(["--numeric-owner", "-tvzf"]).arg(one.join(&name)).output().unwrap();
    let listing = text(&listing.stdout);
    let top = format!("keyturn-{VERSION}-{}", host_target());
    let names: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(names, [format!("{top}/"), format!("{top}/README.md"), format!("{top}/keyturn")], "{listing}");
    for line in listing.lines() {
        assert!(line.contains(" 0/0 ") && line.contains("2023-11-14"), "owner 0, the commit's time: {line}");
    }
    assert!(listing.lines().last().unwrap().starts_with("-rwxr-xr-x"), "{listing}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn the_installer_installs_a_checked_archive_and_refuses_a_tampered_one() {
    let work = scratch("install");
    let dist = work.join("dist");
    archive(&function_binary("keyturn"), host_target(), &dist, "1700000000");
    // Another target's archive beside it, as a release has: SHA256SUMS lists both.
    archive(&function_binary("keyturn"), "aarch64-apple-darwin", &dist, "1700000000");
    let base = serve(dist.clone());

    let dest = work.join("bin");
    let out = install(&base, &dest, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), dest.join("keyturn").display().to_string());
    let version = Command::new(dest.join("keyturn")).arg("--version").output().expect("run the installed keyturn");
    assert!(version.status.success() && text(&version.stdout).starts_with("keyturn "), "{}", text(&version.stdout));

    // The archive changed after SHA256SUMS was written (a swapped asset, a corrupted
    // mirror): refused, nothing installed.
    let name = format!("keyturn-{VERSION}-{}.tar.gz", host_target());
    let mut bytes = std::fs::read(dist.join(&name)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dist.join(&name), &bytes).unwrap();
    let fresh = work.join("tampered");
    let out = install(&base, &fresh, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("does not match SHA256SUMS"), "{}", text(&out.stderr));
    assert!(!fresh.join("keyturn").exists(), "nothing installed");

    // An archive SHA256SUMS does not list, a release without it, a URL in cleartext to
    // another machine: refused too.
    let out = install(&base, &fresh, Some("x86_64-unknown-freebsd"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot download") || text(&out.stderr).contains("does not list"));
    std::fs::write(dist.join("keyturn-9.8.7-test-riscv64gc-unknown-linux-gnu.tar.gz"), b"x").unwrap();
    let out = install(&base, &fresh, Some("riscv64gc-unknown-linux-gnu"));
    assert!(text(&out.stderr).contains("SHA256SUMS does not list"), "{}", text(&out.stderr));
    let out = install("http://keyturn.example.com/releases", &fresh, None);
    assert!(text(&out.stderr).contains("is not an https:// URL"), "{}", text(&out.stderr));
    let out = install(&base, &fresh, Some("x/../../etc"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!fresh.join("keyturn").exists());
    let _ = std::fs::remove_dir_all(&work);
}

/// Cleartext goes to this machine only: a URL whose host hides behind user info
/// (`http://127.0.0.1:x@HOST/`, curl's host is HOST) is refused, here with HOST
/// 127.0.0.2 (loopback: the only addresses a test may reach).
#[test]
fn the_installer_refuses_cleartext_to_a_host_hidden_behind_user_info() {
    let work = scratch("install-userinfo");
    let dist = work.join("dist");
    archive(&function_binary("keyturn"), host_target(), &dist, "1700000000");
    let other = serve_on("127.0.0.2", dist.clone());
    let base = other.replace("http://", "http://127.0.0.1:x@");
    let dest = work.join("bin");
    let out = install(&base, &dest, None);
    assert!(
        !dest.join("keyturn").exists(),
        "installed from {base}, a host other than 127.0.0.1, localhost or ::1: {}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&work);
}

/// [`serve`] on a port of loopback address `address`.
fn serve_on(address: &str, dir: PathBuf) -> String {
    let listener = TcpListener::bind((address, 0)).expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).map_or(true, |n| n == 0) || line.trim().is_empty() {
                    break;
                }
            }
            let name = first.split(' ').nth(1).unwrap_or("").trim_start_matches('/').to_owned();
            let file =
                (!name.contains('/') && !name.starts_with('.')).then(|| std::fs::read(dir.join(&name)).ok()).flatten();
            let mut stream = stream;
            let _ = match file {
                Some(body) => stream
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len())
                            .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                None => stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
            };
        }
    });
    url
}
