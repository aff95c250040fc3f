//! A throwaway MariaDB server from Debian's packages, set up as Amazon RDS sets one up:
//! its own data directory, a free loopback port, TLS with the harness's certificate (sent alone, as RDS sends it), the general
//! log on (so tests can prove no password reaches it), and the event scheduler and
//! performance_schema OFF unless asked for (RDS's default parameter group; MariaDB's
//! defaults). Started the first time a test asks for it.
//!
//! Two accounts over TCP:
//! - the admin keyturn is given (`keyturn_admin`), holding exactly what RDS gives a
//!   MariaDB master user ([`RDS_MASTER_PRIVILEGES`] `WITH GRANT OPTION`): no SUPER, no
//!   CONNECTION ADMIN, no `SET GLOBAL`, and `KILL` only of its own sessions. It ends other
//!   sessions with `CALL mysql.rds_kill(id)`, installed as RDS installs it ([`RDS_KILL`]);
//! - a superuser (`harness_root`), for what the tests set up or inspect beyond what an
//!   RDS master user could (`SET GLOBAL`, killing an admin's session). keyturn never gets it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keyturn::backend::mysql::native_password_hash;
use secrecy::SecretString;

use crate::pki::Pki;
use crate::process::{free_port, spawn_tied, wait_for_port};

/// The global privileges RDS gives the master user of a MariaDB instance (the RDS user
/// guide, "Master user account privileges"; 11.4 adds SHOW CREATE ROUTINE, which 10.11 does
/// not have). PROCESS lets it see every session, EXECUTE call `mysql.rds_kill`, UPDATE
/// write `mysql.*` (MariaDB's `SET DEFAULT ROLE ... FOR` another user), EVENT and CREATE
/// make the expiry events and their schema.
pub const RDS_MASTER_PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, \
     INDEX, ALTER, SHOW DATABASES, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION CLIENT, CREATE VIEW, \
     SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT, TRIGGER, REPLICATION SLAVE";

/// The internal account RDS's procedures run as; it cannot log in (`ACCOUNT LOCK`).
pub const RDS_INTERNAL: &str = "rdsadmin";

/// `mysql.rds_kill(thread)` as RDS provides it: owned by the internal account, run with
/// its privileges (SQL SECURITY DEFINER), callable by whoever may EXECUTE it (the master
/// user), ending any session but the internal account's. A session that is gone already is
/// the server's own error 1094 (unknown thread), as with `KILL`.
pub const RDS_KILL: &str = "CREATE DEFINER = 'rdsadmin'@'localhost' PROCEDURE mysql.rds_kill(IN thread BIGINT)
SQL SECURITY DEFINER
BEGIN
  DECLARE owner VARCHAR(128);
  SELECT USER INTO owner FROM information_schema.PROCESSLIST WHERE ID = thread;
  IF owner = 'rdsadmin' THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'ERROR (RDS): CANNOT KILL RDSADMIN SESSION';
  END IF;
  KILL CONNECTION thread;
END";

/// A running server.
pub struct Mariadb {
    pub port: u16,
    /// The admin keyturn is given, made as RDS makes its master user.
    pub admin: String,
    pub admin_password: String,
    /// The harness's superuser, never given to keyturn.
    pub root: String,
    pub root_password: String,
    pub general_log: PathBuf,
    /// Whether `event_scheduler` is ON.
    pub event_scheduler: bool,
    /// Held for the life of the process; the server dies with it.
    _server: std::process::Child,
}

/// Starts a server named `name` (its files in `dir` carry the name), with the event
/// scheduler and performance_schema both ON or both OFF for its whole life: a test never
/// changes them, so tests sharing a server cannot race on them. performance_schema is
/// what tells keyturn a session's login name while the session runs as a routine's definer.
pub fn start(dir: &Path, pki: &Pki, name: &str, event_scheduler: bool) -> Mariadb {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).expect("create MariaDB data dir");
    let install = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .stdout(Stdio::null())
        .output()
        .expect("run mariadb-install-db (make setup installs mariadb-server)");
    assert!(install.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&install.stderr));

    let (cert, key) = (dir.join(format!("{name}-server.crt")), dir.join(format!("{name}-server.key")));
    std::fs::write(&cert, &pki.server_cert_pem).expect("write server cert");
    std::fs::write(&key, &pki.server_key_pem).expect("write server key");

    // Accounts reachable over TCP, created at start-up with hashes (never passwords).
    let admin_password = crate::random_token();
    let root_password = crate::random_token();
    let hash = |p: &str| native_password_hash(&SecretString::from(p.to_owned()));
    let init = dir.join(format!("{name}-init.sql"));
    std::fs::write(
        &init,
        format!(
            "CREATE OR REPLACE USER 'harness_root'@'%' IDENTIFIED BY PASSWORD '{root}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'harness_root'@'%' WITH GRANT OPTION;\n\
             CREATE OR REPLACE USER '{RDS_INTERNAL}'@'localhost' ACCOUNT LOCK;\n\
             GRANT ALL PRIVILEGES ON *.* TO '{RDS_INTERNAL}'@'localhost' WITH GRANT OPTION;\n\
             DELIMITER ;;\n{RDS_KILL};;\nDELIMITER ;\n\
             CREATE OR REPLACE USER 'keyturn_admin'@'%' IDENTIFIED BY PASSWORD '{admin}';\n\
             GRANT {RDS_MASTER_PRIVILEGES} ON *.* TO 'keyturn_admin'@'%' WITH GRANT OPTION;\n",
            root = hash(&root_password),
            admin = hash(&admin_password),
        ),
    )
    .expect("write init file");

    let port = free_port();
    let general_log = dir.join(format!("{name}-general.log"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("create the server log");
    let scheduler = if event_scheduler { "ON" } else { "OFF" };
    let mut command = Command::new("mariadbd");
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join(format!("{name}.sock")).display()))
        .arg(format!("--pid-file={}", dir.join(format!("{name}.pid")).display()))
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
        // Expiry events run only where the scheduler is ON, in a zone that is not UTC, so
        // an event scheduled in the server's zone would fire hours late.
        .arg(format!("--event-scheduler={scheduler}"))
        .arg(format!("--performance-schema={scheduler}"))
        .arg("--default-time-zone=-05:00")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let server = spawn_tied(command, libc::SIGTERM).expect("start mariadbd");
    wait_for_port(port, 60, "mariadbd");
    Mariadb {
        port,
        admin: "keyturn_admin".into(),
        admin_password,
        root: "harness_root".into(),
        root_password,
        general_log,
        event_scheduler,
        _server: server,
    }
}
