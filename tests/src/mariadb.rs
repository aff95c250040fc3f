//! A throwaway MariaDB server from Debian's packages: its own data directory, a free
//! loopback port, TLS with the harness's certificate (sent alone, as RDS sends it), the
//! general log on (so tests can prove no password reaches it), and the event scheduler on.
//! Started the first time a test asks for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keyturn::backend::mysql::native_password_hash;
use secrecy::SecretString;

use crate::pki::Pki;
use crate::process::{free_port, spawn_tied, wait_for_port};

/// A running server.
pub struct Mariadb {
    pub port: u16,
    pub admin: String,
    pub admin_password: String,
    pub general_log: PathBuf,
    /// Held for the life of the process; the server dies with it.
    _server: std::process::Child,
}

pub fn start(dir: &Path, pki: &Pki) -> Mariadb {
    let data = dir.join("mariadb");
    std::fs::create_dir_all(&data).expect("create MariaDB data dir");
    let install = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .stdout(Stdio::null())
        .output()
        .expect("run mariadb-install-db (make setup installs mariadb-server)");
    assert!(install.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&install.stderr));

    let (cert, key) = (dir.join("mariadb-server.crt"), dir.join("mariadb-server.key"));
    std::fs::write(&cert, &pki.server_cert_pem).expect("write server cert");
    std::fs::write(&key, &pki.server_key_pem).expect("write server key");

    // An admin reachable over TCP, created at start-up with a hash (never a password).
    let admin_password = crate::random_token();
    let hash = native_password_hash(&SecretString::from(admin_password.clone()));
    let init = dir.join("mariadb-init.sql");
    std::fs::write(
        &init,
        format!(
            "CREATE OR REPLACE USER 'keyturn_admin'@'%' IDENTIFIED BY PASSWORD '{hash}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'keyturn_admin'@'%' WITH GRANT OPTION;\n"
        ),
    )
    .expect("write init file");

    let port = free_port();
    let general_log = dir.join("mariadb-general.log");
    let log = std::fs::File::create(dir.join("mariadb.log")).expect("create mariadb.log");
    let mut command = Command::new("mariadbd");
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
        .arg("--user=root")
        .arg("--skip-name-resolve")
        .arg(format!("--ssl-cert={}", cert.display()))
        .arg(format!("--ssl-key={}", key.display()))
        // The root alone: OpenSSL completes a server's chain from its CA file, and the
        // server must send its certificate alone, as RDS does.
        .arg(format!("--ssl-ca={}", pki.root_cert.display()))
        .arg("--general-log=1")
        .arg(format!("--general-log-file={}", general_log.display()))
        .arg(format!("--init-file={}", init.display()))
        .args(["--innodb-buffer-pool-size=32M", "--skip-log-bin", "--max-connections=300"])
        // Expiry events run (keyturn makes them only where the scheduler is ON), in a zone
        // that is not UTC, so an event scheduled in the server's zone would fire hours late.
        .args(["--event-scheduler=ON", "--default-time-zone=-05:00"])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let server = spawn_tied(command, libc::SIGTERM).expect("start mariadbd");
    wait_for_port(port, 60, "mariadbd");
    Mariadb { port, admin: "keyturn_admin".into(), admin_password, general_log, _server: server }
}
