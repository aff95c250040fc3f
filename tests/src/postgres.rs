//! A throwaway PostgreSQL cluster: its own data directory, a free loopback port,
//! SCRAM-SHA-256 over TCP, TLS with the harness's certificate (sent alone, without its
//! intermediate CA, as RDS sends it), every statement logged (so tests can prove no
//! password reaches the server's log). By default it accepts TLS connections only, as RDS
//! for PostgreSQL 15 and later does (`rds.force_ssl = 1`). The server is Debian's
//! PostgreSQL 15, or the one whose bin directory `KEYTURN_PG_BIN` names (`make test-pg16`,
//! `make test-pg17`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Pki;
use crate::process::{free_port, spawn_tied};

/// A running cluster.
pub struct Postgres {
    pub port: u16,
    pub superuser: String,
    pub superuser_password: String,
    /// The admin keyturn is given, made as RDS and Aurora make their master user: `LOGIN
    /// CREATEROLE CREATEDB`, not a superuser, a member of `rds_superuser` (which may end
    /// other sessions and read every session's row of `pg_stat_activity`). A test that
    /// passes only with a superuser hides a bug users on RDS meet.
    pub admin: String,
    pub admin_password: String,
    pub log_file: PathBuf,
    /// The server's `server_version_num` (150018 for 15.18, 170010 for 17.10), for tests
    /// whose expectations differ between versions.
    pub version_num: u32,
    /// Held for the life of the process; the server dies with it.
    _server: std::process::Child,
}

/// The server's bin directory: only initdb and postgres are run from it (npm's 16 and 17
/// hold no pg_isready, no psql).
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
    let version_num = server_version_num(&data, uid, gid);

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
    let mut server = spawn_tied(command, libc::SIGINT).expect("start postgres");
    wait_ready(&mut server, &data, &log_file);
    let admin_password = crate::random_token();
    create_rds_admin(port, &pki.ca_bundle, &superuser_password, RDS_ADMIN, &admin_password);
    Postgres {
        port,
        superuser: "postgres".into(),
        superuser_password,
        admin: RDS_ADMIN.into(),
        admin_password,
        log_file,
        version_num,
        _server: server,
    }
}

/// The name of the harness's RDS-like admin.
pub const RDS_ADMIN: &str = "keyturn_admin";

/// Makes `rds_superuser` as RDS has it (the privileges keyturn may rely on: ending other
/// sessions, seeing them) and `admin` as RDS makes its master user. Sends a SCRAM verifier,
/// never the password (the server log is searched for passwords).
fn create_rds_admin(port: u16, ca_bundle: &Path, superuser_password: &str, admin: &str, admin_password: &str) {
    use postgres_protocol::escape::{escape_identifier, escape_literal};
    let verifier = postgres_protocol::password::scram_sha_256(admin_password.as_bytes());
    let sql = format!(
        "CREATE ROLE rds_superuser NOLOGIN;\n\
         GRANT pg_signal_backend, pg_monitor TO rds_superuser;\n\
         CREATE ROLE {a} WITH LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE NOREPLICATION PASSWORD {v};\n\
         GRANT rds_superuser TO {a};",
        a = escape_identifier(admin),
        v = escape_literal(&verifier),
    );
    // On a thread of its own: the harness may be started from inside a test's runtime.
    let superuser_password = superuser_password.to_owned();
    let tls = keyturn::backend::tls::client_config(&[ca_bundle.to_owned()]).expect("TLS config");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    let created = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let mut config = tokio_postgres::Config::new();
            config
                .host("localhost")
                .hostaddr(std::net::Ipv4Addr::LOCALHOST.into())
                .port(port)
                .ssl_mode(tokio_postgres::config::SslMode::Require)
                .user("postgres")
                .password(superuser_password)
                .dbname("postgres");
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await
        })
    })
    .join()
    .expect("the admin's thread");
    if let Err(e) = created {
        panic!("creating the RDS-like admin failed: {e:?}");
    }
}

/// `server_version_num` as the server binary reports it (`postgres -C`, which reads the
/// setting without starting a server; the value is compiled in, as `SHOW` would give it).
fn server_version_num(data: &Path, uid: u32, gid: u32) -> u32 {
    let out = Command::new(bin_dir().join("postgres"))
        .args(["-C", "server_version_num", "-D", data.to_str().unwrap()])
        .uid(uid)
        .gid(gid)
        .current_dir(data)
        .output()
        .expect("run postgres -C server_version_num");
    assert!(out.status.success(), "postgres -C failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| panic!("server_version_num is not a number: {text:?}"))
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open postgresql.conf");
    f.write_all(text.as_bytes()).expect("append postgresql.conf");
}

/// Waits until the server accepts connections, as `pg_ctl start --wait` does: the status
/// line of `postmaster.pid` (its eighth) reads `ready`, in a file written by this server.
/// Fails at once, with the server's log, if the server exits first.
fn wait_ready(server: &mut Child, data: &Path, log_file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = server.id().to_string();
    loop {
        if let Ok(lock) = std::fs::read_to_string(data.join("postmaster.pid")) {
            let lines: Vec<&str> = lock.lines().collect();
            if lines.first() == Some(&pid.as_str()) && lines.get(7).map(|s| s.trim()) == Some("ready") {
                return;
            }
        }
        if let Some(status) = server.try_wait().expect("wait for postgres") {
            let log = std::fs::read_to_string(log_file).unwrap_or_default();
            panic!("postgres ({}) exited with {status} before it was ready:\n{log}", bin_dir().display());
        }
        assert!(Instant::now() < deadline, "postgres did not become ready within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
