//! A throwaway PostgreSQL 15 cluster from Debian's packages: its own data directory, a free
//! loopback port, SCRAM-SHA-256 over TCP, TLS with the harness's certificate (sent alone,
//! without its intermediate CA, as RDS sends it), every statement logged (so tests can
//! prove no password reaches the server's log). By default it accepts TLS connections only,
//! as RDS for PostgreSQL 15 and later does (`rds.force_ssl = 1`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::pki::Pki;
use crate::process::{free_port, spawn_tied};

/// A running cluster.
pub struct Postgres {
    pub port: u16,
    pub superuser: String,
    pub superuser_password: String,
    pub log_file: PathBuf,
    /// Held for the life of the process; the server dies with it.
    _server: std::process::Child,
}

fn bin_dir() -> PathBuf {
    std::env::var_os("KEYTURN_PG_BIN").map(PathBuf::from).unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into())
}

/// uid and gid of the `postgres` account (PostgreSQL refuses to run as root).
fn postgres_account() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres")).then(|| (fields[2].parse().unwrap(), fields[3].parse().unwrap()))
        })
        .expect("no postgres account: install postgresql-15 (make setup)")
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

/// Which connections pg_hba.conf lets in (SCRAM-SHA-256 from 127.0.0.1 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS only (`hostssl` lines only): RDS with `rds.force_ssl = 1`, the default from
    /// PostgreSQL 15. A connection without TLS gets SQLSTATE 28000 "no pg_hba.conf entry".
    TlsOnly,
    /// TLS or plaintext (`host` lines): RDS with `rds.force_ssl = 0`, for the tests of the
    /// `"ssl": false` path.
    TlsOrPlaintext,
}

/// Initialises and starts a cluster under `dir` that accepts TLS connections only.
pub fn start(dir: &Path, pki: &Pki) -> Postgres {
    start_with(dir, pki, Transport::TlsOnly)
}

/// Initialises and starts a cluster under `dir` that accepts `transport`.
pub fn start_with(dir: &Path, pki: &Pki, transport: Transport) -> Postgres {
    let (uid, gid) = postgres_account();
    let data = dir.join("pgdata");
    std::fs::create_dir_all(&data).expect("create data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod data dir");
    chown(&data, uid, gid);

    let superuser_password = crate::random_token();
    let pwfile = dir.join("pg-superuser-password");
    std::fs::write(&pwfile, &superuser_password).expect("write pwfile");
    chown(&pwfile, uid, gid);
    let initdb = Command::new(bin_dir().join("initdb"))
        .args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .uid(uid)
        .gid(gid)
        .current_dir(dir)
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
    std::fs::remove_file(&pwfile).ok();

    // The server certificate alone and no ssl_ca_file: the server sends no intermediate.
    for (name, pem) in [("server.crt", &pki.server_cert_pem), ("server.key", &pki.server_key_pem)] {
        let path = data.join(name);
        std::fs::write(&path, pem).expect("write TLS file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod TLS file");
        chown(&path, uid, gid);
    }
    let port = free_port();
    let settings = format!(
        "\n# keyturn test harness\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n\
         ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\npassword_encryption = 'scram-sha-256'\n\
         log_statement = 'all'\nlog_connections = on\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
         max_connections = 200\n",
        data = data.display()
    );
    append(&data.join("postgresql.conf"), &settings);
    let hba = match transport {
        Transport::TlsOnly => "hostssl all all 127.0.0.1/32 scram-sha-256\n",
        Transport::TlsOrPlaintext => "host all all 127.0.0.1/32 scram-sha-256\n",
    };
    std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");

    let log_file = dir.join("postgres.log");
    let log = std::fs::File::create(&log_file).expect("create postgres.log");
    let mut command = Command::new(bin_dir().join("postgres"));
    command.args(["-D", data.to_str().unwrap()]).uid(uid).gid(gid).current_dir(&data).stdout(Stdio::null()).stderr(log);
    // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients.
    let server = spawn_tied(command, libc::SIGINT).expect("start postgres");
    wait_ready(port);
    Postgres { port, superuser: "postgres".into(), superuser_password, log_file, _server: server }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open postgresql.conf");
    f.write_all(text.as_bytes()).expect("append postgresql.conf");
}

fn wait_ready(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = Command::new(bin_dir().join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .expect("run pg_isready");
        if status.success() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "postgres did not become ready on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
