//! The test harness: real services for keyturn's integration tests, demo and bench.
//!
//! One moto server and one PostgreSQL cluster (TLS only, with a certificate chain generated
//! here as RDS's is shaped) are started per process on free loopback ports, the first time a
//! test asks for them, and die with the process. Tests share them and isolate themselves by
//! name ([`TestEnv::unique`]). MariaDB, a second PostgreSQL cluster that also accepts
//! plaintext, a second moto server that checks signatures, and MariaDB servers of a test
//! module's own, start only when a test asks for them. Every integration test runs in one
//! process (tests/it), so whatever a test changes server-wide is done on a server no other
//! module's tests use.

pub mod apigw;
pub mod fake_postgres;
pub mod gateway;
pub mod iam;
pub mod lambda;
pub mod lease;
pub mod mariadb;
pub mod moto;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod stall;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use keyturn::aws::dynamodb::DynamoLeaseStore;
use keyturn::aws::secretsmanager::SecretsManagerStore;
use keyturn::backend::mysql::MysqlBackend;
use keyturn::backend::postgres::PostgresBackend;
use keyturn::backend::tls;
use keyturn::backend::Timeouts;
use keyturn::config::RotateDatabaseConfig;
use keyturn::password::PasswordPolicy;
use keyturn::rotation::database::Strategy;
use keyturn::rotation::{Outcome, RotationError, RotationEvent, RotationTarget, Rotator, Step};
use rand::Rng;
use serde_json::Value;

pub use keyturn;

/// The project's root: the nearest directory, from the working directory up, that holds
/// `tests/moto_setup.py`. Found at run time, not baked in with `env!`, because build
/// artifacts are shared between checkouts through the fixed target directory.
pub fn project_root() -> PathBuf {
    let start = std::env::current_dir().expect("current dir");
    start
        .ancestors()
        .find(|dir| dir.join("tests/moto_setup.py").is_file())
        .unwrap_or_else(|| panic!("no keyturn checkout at or above {}", start.display()))
        .to_path_buf()
}

/// An expiry event on the harness MariaDB: when it runs (seconds since the epoch), in
/// which zone its time was written, and as whom it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryEvent {
    pub execute_at: i64,
    pub zone: String,
    pub definer: String,
}

/// The services of one process.
pub struct Harness {
    pub work: PathBuf,
    /// The CA bundle clients trust (root and intermediate, as RDS's `global-bundle.pem`).
    pub ca_file: PathBuf,
    pub moto: moto::Moto,
    /// The PostgreSQL cluster, TLS only (as RDS for PostgreSQL 15 and later).
    pub pg: postgres::Postgres,
    pki: pki::Pki,
    pg_plaintext: OnceLock<postgres::Postgres>,
    pg_tls: OnceLock<tokio_postgres_rustls::MakeRustlsConnect>,
    mariadb: OnceLock<mariadb::Mariadb>,
    mariadb_events: OnceLock<mariadb::Mariadb>,
    /// MariaDB servers of one test module each, by module path ([`Harness::mariadb_of_its_own`]).
    mariadb_own: Mutex<BTreeMap<&'static str, &'static mariadb::Mariadb>>,
    /// The moto server with IAM authentication on, and its administrator's key.
    moto_authenticated: OnceLock<(moto::Moto, (String, String))>,
}

impl Harness {
    /// The key of the administrator every client of [`Harness::moto_authenticated`] signs
    /// with (starting that server on first use).
    pub fn moto_auth(&self) -> &(String, String) {
        &self.authenticated().1
    }

    /// A second moto server, with IAM authentication on, started on first use: it refuses
    /// a request signed with any key but one of its own IAM users', so a key keyturn revoked
    /// is really refused. A server of its own rather than authentication turned on in
    /// [`Harness::moto`], which would refuse every other test's requests (signed with
    /// `testing`). Its clients sign with [`Harness::moto_auth`]'s key.
    pub fn moto_authenticated(&self) -> &moto::Moto {
        &self.authenticated().0
    }

    fn authenticated(&self) -> &(moto::Moto, (String, String)) {
        self.moto_authenticated.get_or_init(|| {
            let dir = self.work.join("moto-authenticated");
            std::fs::create_dir_all(&dir).expect("create the moto work dir");
            let moto = moto::start(&dir);
            let out = std::process::Command::new(moto::venv().join("bin/python"))
                .arg(project_root().join("tests/moto_auth.py"))
                .arg(&moto.endpoint)
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run moto_auth.py");
            assert!(out.status.success(), "moto_auth.py failed");
            let text = String::from_utf8(out.stdout).expect("utf-8");
            let mut lines = text.lines();
            let key = (lines.next().expect("key id").to_owned(), lines.next().expect("secret").to_owned());
            (moto, key)
        })
    }

    /// The MariaDB server, started on first use (PostgreSQL-only tests never pay for it),
    /// with its event scheduler and performance_schema OFF as on RDS's default parameter
    /// group (and MariaDB's own defaults).
    pub fn mariadb(&self) -> &mariadb::Mariadb {
        self.mariadb.get_or_init(|| mariadb::start(&self.work, &self.pki, "mariadb", false))
    }

    /// A second MariaDB server whose event scheduler is ON, for the tests of expiry
    /// events: a server of its own rather than `SET GLOBAL event_scheduler` on the shared
    /// one, which would change what every other test running beside them sees. Its
    /// performance_schema is ON too (as a parameter group sets it), so that the tests see
    /// both ways keyturn finds a session's login: with it here, without it on the other.
    pub fn mariadb_with_events(&self) -> &mariadb::Mariadb {
        self.mariadb_events.get_or_init(|| mariadb::start(&self.work, &self.pki, "mariadb-events", true))
    }

    /// A MariaDB server for the test module `module` alone (pass `module_path!()`), set up
    /// as [`Harness::mariadb`] and started on its first use: for the tests that change what
    /// the whole server does (a global setting, a session that makes revocations there
    /// fail), which would otherwise change what other modules' tests, running beside them
    /// in this process, see.
    pub fn mariadb_of_its_own(&self, module: &'static str) -> &'static mariadb::Mariadb {
        // Held while the server starts: a second test of the module waits for it.
        let mut servers = self.mariadb_own.lock().unwrap_or_else(|e| e.into_inner());
        servers.entry(module).or_insert_with(|| {
            let name = format!("mariadb-{}", module.rsplit("::").next().unwrap_or(module));
            Box::leak(Box::new(mariadb::start(&self.work, &self.pki, &name, false)))
        })
    }

    /// The certificate chain the servers use ([`pki::Pki`]).
    pub fn pki(&self) -> &pki::Pki {
        &self.pki
    }

    /// A second PostgreSQL cluster that also accepts plaintext (RDS with `rds.force_ssl = 0`),
    /// started on first use, for the tests of the `"ssl": false` path.
    pub fn pg_plaintext(&self) -> &postgres::Postgres {
        self.pg_plaintext.get_or_init(|| {
            postgres::start_with(&self.work.join("pg-plaintext"), &self.pki, postgres::Transport::TlsOrPlaintext)
        })
    }

    /// The harness's own PostgreSQL sessions' TLS: verify-full against the CA bundle.
    fn pg_tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        self.pg_tls
            .get_or_init(|| {
                let config = tls::client_config(std::slice::from_ref(&self.ca_file)).expect("TLS config");
                tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone())
            })
            .clone()
    }
}

/// A random 36-character token shaped like a UUID (Secrets Manager wants 32 to 64).
/// A policy document allowing `actions` on every resource.
pub fn allow_policy(actions: &[&str]) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})
        .to_string()
}

pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// A password shown without revealing any of it: 8 hex digits of SHA-256 over a key drawn
/// once per process and the password. Equal passwords show the same within one run (which
/// is what a reader compares); across runs, and to anyone without the key, it says nothing,
/// not even for a guessable password, as a plain hash or the first characters would.
pub fn password_fingerprint(password: &str) -> String {
    use sha2::{Digest, Sha256};
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| rand::rng().random());
    let digest = Sha256::new().chain_update(key).chain_update(password.as_bytes()).finalize();
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the services on first use.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        capture_logs();
        let work = std::env::temp_dir().join(format!("keyturn-{}", std::process::id()));
        remove_stale_work_dirs();
        std::fs::create_dir_all(&work).expect("create work dir");
        let pki = pki::generate(&work, "keyturn test", &["localhost"]);
        let pg = postgres::start(&work, &pki);
        let moto = moto::start(&work);
        Harness {
            work,
            ca_file: pki.ca_bundle.clone(),
            moto,
            pg,
            pki,
            pg_plaintext: OnceLock::new(),
            pg_tls: OnceLock::new(),
            mariadb: OnceLock::new(),
            mariadb_events: OnceLock::new(),
            mariadb_own: Mutex::new(BTreeMap::new()),
            moto_authenticated: OnceLock::new(),
        }
    })
}

/// Work directories of earlier runs whose process is gone.
fn remove_stale_work_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("keyturn-").and_then(|p| p.parse::<u32>().ok()) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                std::fs::remove_dir_all(entry.path()).ok();
            }
        }
    }
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this process at debug level and above (keyturn at trace), as
/// JSON lines: what an operator who turned logging all the way up would see.
fn capture_logs() {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug,keyturn=trace"))
        .json()
        .with_writer(|| Capture)
        .finish();
    tracing::subscriber::set_global_default(subscriber).ok();
}

/// The logs captured so far in this process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// The rotator the tests use, built as the function builds it.
pub type TestRotator = keyturn::app::rotate_database::DatabaseRotator;

/// One test's view of the harness: SDK clients bound to the test's runtime, and names
/// that no other test uses.
pub struct TestEnv {
    pub h: &'static Harness,
    /// The PostgreSQL cluster this test uses: [`Harness::pg`] unless the test asked for
    /// one that accepts plaintext ([`TestEnv::accepting_plaintext`]).
    pub pg: &'static postgres::Postgres,
    /// The moto server this test uses: [`Harness::moto`] unless the test asked for the one
    /// that checks signatures ([`TestEnv::authenticated`]).
    pub moto: &'static moto::Moto,
    pub sdk: aws_config::SdkConfig,
    pub sm: aws_sdk_secretsmanager::Client,
    /// The access key (id, secret) this environment's clients sign with, and the functions
    /// it deploys ([`TestEnv::aws_env`]).
    key: (String, String),
    prefix: String,
    /// The MariaDB server the `mariadb_*` methods use, when not [`Harness::mariadb`].
    maria: Option<&'static mariadb::Mariadb>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestEnv {
    pub async fn new(test: &str) -> TestEnv {
        let h = harness();
        Self::with_credentials(test, &h.moto, "testing", "testing").await
    }

    /// A test environment on the PostgreSQL cluster that also accepts plaintext
    /// ([`Harness::pg_plaintext`]), for the tests of the `"ssl": false` path.
    pub async fn accepting_plaintext(test: &str) -> TestEnv {
        let mut env = Self::new(test).await;
        env.pg = env.h.pg_plaintext();
        env
    }

    /// A test environment on the moto server that checks signatures
    /// ([`Harness::moto_authenticated`]); clients sign as its administrator.
    pub async fn authenticated(test: &str) -> TestEnv {
        let h = harness();
        let (id, secret) = h.moto_auth();
        Self::with_credentials(test, h.moto_authenticated(), id, secret).await
    }

    async fn with_credentials(test: &str, moto: &'static moto::Moto, key_id: &str, secret: &str) -> TestEnv {
        let h = harness();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(Credentials::new(key_id, secret, None, None, "harness"))
            .load()
            .await;
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        let prefix = format!("{test}_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let key = (key_id.to_owned(), secret.to_owned());
        TestEnv { h, pg: &h.pg, moto, sdk, sm, key, prefix, maria: None }
    }

    /// This environment on the MariaDB server whose event scheduler is ON
    /// ([`Harness::mariadb_with_events`]): every `mariadb_*` method then uses that server.
    pub fn with_event_scheduler(mut self) -> TestEnv {
        self.maria = Some(self.h.mariadb_with_events());
        self
    }

    /// This environment on the MariaDB server of test module `module`
    /// ([`Harness::mariadb_of_its_own`]): every `mariadb_*` method then uses that server.
    pub fn with_mariadb_of_its_own(mut self, module: &'static str) -> TestEnv {
        self.maria = Some(self.h.mariadb_of_its_own(module));
        self
    }

    /// The MariaDB server this environment uses.
    pub fn maria(&self) -> &'static mariadb::Mariadb {
        self.maria.unwrap_or_else(|| self.h.mariadb())
    }

    /// A customer managed policy named `name` (made unique) with `document`; its ARN.
    pub async fn create_policy(&self, name: &str, document: &str) -> String {
        let out = aws_sdk_iam::Client::new(&self.sdk)
            .create_policy()
            .policy_name(self.unique(name))
            .policy_document(document)
            .send()
            .await
            .expect("CreatePolicy");
        out.policy().and_then(|p| p.arn()).expect("policy ARN").to_owned()
    }

    /// A name unique to this test (for roles and secrets).
    pub fn unique(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// A lease table of its own in moto, created from the store's schema
    /// ([`DynamoLeaseStore::create_table_request`]), and the store on it.
    pub async fn lease_store(&self, name: &str) -> DynamoLeaseStore {
        let store = DynamoLeaseStore::new(&self.sdk, self.unique(name));
        store.create_table_request().expect("CreateTable request").send().await.expect("CreateTable");
        store
    }

    /// The environment a deployed function would get, pointing at the harness.
    pub fn function_env(&self, strategy: Strategy) -> Vec<(String, String)> {
        let strategy = match strategy {
            Strategy::SingleUser => "single-user",
            Strategy::AlternatingUsers => "alternating-users",
        };
        self.deployed_env(&[("KEYTURN_STRATEGY", strategy)])
    }

    /// What every function gets pointing at the harness (moto, trusting the harness CA),
    /// plus `settings`.
    fn deployed_env(&self, settings: &[(&str, &str)]) -> Vec<(String, String)> {
        let ca = [("KEYTURN_EXTRA_CA_FILES", self.h.ca_file.to_str().expect("utf-8 path"))];
        self.aws_env(&[&ca[..], settings].concat())
    }

    /// The AWS settings a function gets: this environment's moto, signing with its key
    /// (on [`TestEnv::authenticated`], moto's administrator), plus `settings`.
    pub fn aws_env(&self, settings: &[(&str, &str)]) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", self.key.0.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.key.1.as_str()),
        ]
        .iter()
        .chain(settings)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The environment of rotate-iam-key deployed for the users under `path`, its
    /// testSecret waiting 5 seconds at most for a new key.
    pub fn iam_rotation_env(&self, path: &str) -> Vec<(String, String)> {
        self.aws_env(&[("KEYTURN_IAM_PATH_PREFIX", path), ("KEYTURN_IAM_TEST_TIMEOUT_SECS", "5")])
    }

    /// A rotator wired as rotate-database wires it, trusting the harness CA.
    pub fn rotator(&self, strategy: Strategy) -> TestRotator {
        self.rotator_with(strategy, PasswordPolicy::default())
    }

    /// [`TestEnv::rotator`] with another password policy: built by the function's own
    /// builder from the environment a deployment would give it.
    pub fn rotator_with(&self, strategy: Strategy, passwords: PasswordPolicy) -> TestRotator {
        let mut config = RotateDatabaseConfig::from_vars(self.function_env(strategy)).expect("function env");
        config.passwords = passwords;
        keyturn::app::rotate_database::build(&config, &self.sdk).expect("rotator")
    }

    /// The PostgreSQL backend as the function builds it, trusting the harness CA.
    pub fn pg_backend(&self, timeouts: Timeouts) -> PostgresBackend {
        PostgresBackend::new(tls::client_config(std::slice::from_ref(&self.h.ca_file)).expect("TLS config"), timeouts)
    }

    /// The harness PostgreSQL as a secret would name it (`localhost`, the name its
    /// certificate holds).
    pub fn pg_endpoint(&self, tls: keyturn::backend::TlsMode) -> keyturn::backend::Endpoint {
        keyturn::backend::Endpoint {
            engine: keyturn::backend::Engine::Postgres,
            host: "localhost".into(),
            port: self.pg.port,
            dbname: Some("postgres".into()),
            tls,
        }
    }

    /// The MySQL-family backend as the function builds it, trusting the harness CA; each
    /// one keeps its own admin sessions.
    pub fn mariadb_backend(&self) -> MysqlBackend {
        MysqlBackend::new(std::slice::from_ref(&self.h.ca_file), Timeouts::default()).expect("TLS config")
    }

    /// The harness MariaDB as a secret would name it, over verified TLS.
    pub fn mariadb_endpoint(&self) -> keyturn::backend::Endpoint {
        keyturn::backend::Endpoint {
            engine: keyturn::backend::Engine::Mariadb,
            host: "localhost".into(),
            port: self.maria().port,
            dbname: None,
            tls: keyturn::backend::TlsMode::VerifyFull,
        }
    }

    /// A MariaDB role that may read a table of its own database. Returns (role, table).
    pub async fn mariadb_group_with_table(&self, name: &str) -> (String, String) {
        use keyturn::backend::mysql::grants::identifier;
        use mysql_async::prelude::Queryable;
        let role = self.unique(name);
        let table = format!("{}.items", identifier(&role));
        let mut a = self.mariadb_admin().await;
        for sql in [
            format!("CREATE DATABASE {}", identifier(&role)),
            format!("CREATE TABLE {table} (id INT)"),
            format!("INSERT INTO {table} VALUES (7)"),
            format!("CREATE ROLE {}", identifier(&role)),
            format!("GRANT SELECT ON {table} TO {}", identifier(&role)),
        ] {
            a.query_drop(sql).await.expect("create a MariaDB group");
        }
        (role, table)
    }

    /// The event keyturn made to drop `user` at its expiry, as the server holds it.
    pub async fn mariadb_expiry_event(&self, user: &str) -> Option<ExpiryEvent> {
        use keyturn::backend::mysql::expiry::{event_name, EVENT_SCHEMA};
        use mysql_async::prelude::Queryable;
        let name = event_name(&keyturn::backend::Username::parse(user).expect("username"));
        let mut a = self.mariadb_root().await;
        // EXECUTE_AT is a wall-clock time in the event's own zone: converted to UTC, then
        // read as UTC by UNIX_TIMESTAMP in a UTC session, it is the instant the event runs.
        a.query_drop("SET time_zone = '+00:00'").await.expect("set the time zone");
        let row: Option<mysql_async::Row> = a
            .exec_first(
                "SELECT UNIX_TIMESTAMP(CONVERT_TZ(EXECUTE_AT, TIME_ZONE, '+00:00')) AS execute_at, \
                 TIME_ZONE AS zone, DEFINER AS definer \
                 FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ?",
                (EVENT_SCHEMA, name),
            )
            .await
            .expect("read the expiry event");
        row.map(|row| ExpiryEvent {
            execute_at: row.get("execute_at").expect("EXECUTE_AT"),
            zone: row.get("zone").expect("TIME_ZONE"),
            definer: row.get("definer").expect("DEFINER"),
        })
    }

    /// Whether `user` has any account on the harness MariaDB.
    pub async fn mariadb_user_exists(&self, user: &str) -> bool {
        use mysql_async::prelude::Queryable;
        let found: Option<String> = self
            .mariadb_root()
            .await
            .exec_first("SELECT User FROM mysql.user WHERE User = ?", (user,))
            .await
            .expect("look up a MariaDB user");
        found.is_some()
    }

    /// The harness's RDS-like admin as keyturn's backends take an admin.
    pub fn pg_admin_credentials(&self) -> keyturn::backend::Credentials {
        let username = keyturn::backend::Username::parse(&self.pg.admin).expect("admin name");
        keyturn::backend::Credentials { username, password: self.pg.admin_password.clone().into() }
    }

    /// The harness superuser as keyturn's backends take an admin: only for the tests that
    /// show what changes with a superuser (self-managed servers).
    pub fn pg_superuser_credentials(&self) -> keyturn::backend::Credentials {
        let username = keyturn::backend::Username::parse(&self.pg.superuser).expect("superuser name");
        keyturn::backend::Credentials { username, password: self.pg.superuser_password.clone().into() }
    }

    /// The MariaDB admin as keyturn's backends take an admin.
    pub fn mariadb_admin_credentials(&self) -> keyturn::backend::Credentials {
        let m = self.maria();
        let username = keyturn::backend::Username::parse(&m.admin).expect("admin name");
        keyturn::backend::Credentials { username, password: m.admin_password.clone().into() }
    }

    /// A fresh lease table and a roles file holding `roles`: the environment the lease
    /// functions get in a deployment, pointing at the harness.
    pub async fn lease_env(&self, roles: &str) -> Vec<(String, String)> {
        // A deployment of its own each call: a test may run two.
        let name = format!("leases_{}", &random_token()[..8]);
        self.lease_store(&name).await;
        let table = self.unique(&name);
        let roles_file = self.h.work.join(format!("{table}-roles.toml"));
        std::fs::write(&roles_file, roles).expect("write the roles file");
        self.deployed_env(&[
            ("KEYTURN_ROLES_FILE", roles_file.to_str().expect("utf-8 path")),
            ("KEYTURN_LEASE_TABLE", &table),
        ])
    }

    /// The lease service as the functions build it from `env` ([`TestEnv::lease_env`]),
    /// with its clock `clock_offset` seconds ahead.
    pub fn lease_service(&self, env: &[(String, String)], clock_offset: u64) -> keyturn::app::lease::Issuer {
        let mut config = keyturn::config::LeaseConfig::from_vars(env.to_vec()).expect("lease env");
        config.clock_offset = clock_offset;
        keyturn::app::lease::build(&config, &self.sdk).expect("lease service")
    }

    /// A group role with SELECT on a table of its own schema, where it may also create
    /// tables. Returns (group, table). The admin makes the group, as on RDS (from
    /// PostgreSQL 16 that gives it ADMIN OPTION on the group, without INHERIT or SET); the
    /// schema and table are the superuser's, like an application's objects made by its
    /// migrations as another owner.
    pub async fn pg_group_with_table(&self, name: &str) -> (String, String) {
        use postgres_protocol::escape::escape_identifier;
        let group = self.unique(name);
        let g = escape_identifier(&group);
        let table = format!("{g}.items");
        self.pg_admin_session()
            .await
            .batch_execute(&format!("CREATE ROLE {g} NOLOGIN"))
            .await
            .expect("create the group");
        self.pg_superuser()
            .await
            .batch_execute(&format!(
                "CREATE SCHEMA {g}; CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (7);
                 GRANT USAGE, CREATE ON SCHEMA {g} TO {g}; GRANT SELECT ON {table} TO {g}"
            ))
            .await
            .expect("create the group's schema and table");
        (group, table)
    }

    /// A session as `user` (verified TLS over loopback), or the server's refusal.
    pub async fn pg_login(&self, user: &str, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.pg_login_to("postgres", user, password).await
    }

    /// [`TestEnv::pg_login`] to database `db`.
    pub async fn pg_login_to(
        &self,
        db: &str,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.pg_config(user, password, db).connect(self.h.pg_tls()).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A superuser session (verified TLS over loopback) for setting up and inspecting; never
    /// what keyturn is given (that is [`TestEnv::pg_admin_session`]'s admin).
    pub async fn pg_superuser(&self) -> tokio_postgres::Client {
        self.pg_session_as(&self.pg.superuser, &self.pg.superuser_password).await
    }

    /// A session as the RDS-like admin keyturn is given ([`postgres::Postgres::admin`]):
    /// what a user on RDS does by hand, they do as this admin.
    pub async fn pg_admin_session(&self) -> tokio_postgres::Client {
        self.pg_session_as(&self.pg.admin, &self.pg.admin_password).await
    }

    async fn pg_session_as(&self, user: &str, password: &str) -> tokio_postgres::Client {
        let (client, connection) = self
            .pg_config(user, password, "postgres")
            .connect(self.h.pg_tls())
            .await
            .unwrap_or_else(|e| panic!("login as {user}: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Creates a login role with `password`, as the admin (on RDS, the master user makes
    /// the application's users, so from PostgreSQL 16 it holds ADMIN OPTION on them). Sends
    /// a SCRAM verifier, not the password: the server log (`log_statement = all`) is
    /// searched for passwords.
    pub async fn create_role(&self, name: &str, password: &str) {
        use postgres_protocol::escape::{escape_identifier, escape_literal};
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let sql = format!("CREATE ROLE {} LOGIN PASSWORD {}", escape_identifier(name), escape_literal(&verifier));
        self.pg_admin_session().await.batch_execute(&sql).await.expect("create role");
    }

    /// Verified TLS to `localhost` (the certificate's name) at 127.0.0.1 (where the server
    /// listens), never plaintext: the server takes TLS only.
    fn pg_config(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("localhost")
            .hostaddr(std::net::Ipv4Addr::LOCALHOST.into())
            .port(self.pg.port)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .user(user)
            .password(password)
            .dbname(db);
        config
    }

    /// A MariaDB session over verified TLS (accounts may REQUIRE SSL).
    pub async fn mariadb_session(&self, user: &str, password: &str) -> Result<mysql_async::Conn, mysql_async::Error> {
        let m = self.maria();
        let ssl = mysql_async::SslOpts::default().with_root_certs(vec![self.h.ca_file.clone().into()]);
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("localhost")
            .tcp_port(m.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .ssl_opts(Some(ssl));
        mysql_async::Conn::new(opts).await
    }

    /// A session of the MariaDB admin keyturn is given, made as RDS makes its master user
    /// (see [`mariadb`]), which is also what an operator sets things up with on RDS.
    pub async fn mariadb_admin(&self) -> mysql_async::Conn {
        let m = self.maria();
        self.mariadb_session(&m.admin, &m.admin_password).await.expect("MariaDB admin login")
    }

    /// A session of the harness's MariaDB superuser, for setting up what an RDS master user
    /// could not (`SET GLOBAL`, killing another admin's session) and for inspecting the
    /// server. Never handed to keyturn.
    pub async fn mariadb_root(&self) -> mysql_async::Conn {
        let m = self.maria();
        self.mariadb_session(&m.root, &m.root_password).await.expect("MariaDB superuser login")
    }

    /// The ids of the sessions `user` has open on the MariaDB server, as the superuser
    /// sees them.
    pub async fn mariadb_sessions_of(&self, user: &str) -> Vec<String> {
        use mysql_async::prelude::Queryable;
        self.mariadb_root()
            .await
            .exec(
                "SELECT CAST(ID AS CHAR) AS id FROM information_schema.PROCESSLIST WHERE USER = ? ORDER BY ID",
                (user,),
            )
            .await
            .expect("list a MariaDB user's sessions")
    }

    /// Whether `user` logs in to MariaDB with `password`; panics on anything but success
    /// or refusal.
    pub async fn can_login_mariadb(&self, user: &str, password: &str) -> bool {
        match self.mariadb_session(user, password).await {
            Ok(conn) => {
                conn.disconnect().await.ok();
                true
            }
            Err(mysql_async::Error::Server(e)) if e.code == 1045 => false,
            Err(e) => panic!("MariaDB login check for {user:?} failed unexpectedly: {e}"),
        }
    }

    /// Creates `'user'@'%'` on MariaDB with a hash (the general log is searched for
    /// passwords); `extra` is appended (`REQUIRE SSL`, ...).
    pub async fn create_mariadb_account(&self, user: &str, password: &str, extra: &str) {
        use keyturn::backend::mysql::{literal, native_password_hash};
        use mysql_async::prelude::Queryable;
        let hash = native_password_hash(&secrecy::SecretString::from(password.to_owned()));
        let sql = format!("CREATE USER {}@'%' IDENTIFIED BY PASSWORD '{hash}' {extra}", literal(user));
        self.mariadb_admin().await.query_drop(sql).await.expect("create MariaDB account");
    }

    /// A MariaDB user secret in AWS's format.
    pub fn mariadb_secret(&self, username: &str, password: &str) -> Value {
        serde_json::json!({
            "engine": "mariadb",
            "host": "localhost",
            "port": self.maria().port,
            "username": username,
            "password": password,
        })
    }

    /// The MariaDB admin as an admin secret.
    pub fn mariadb_admin_secret(&self) -> Value {
        let m = self.maria();
        self.mariadb_secret(&m.admin, &m.admin_password)
    }

    /// Whether `user` logs in with `password`. Panics on anything but success or a
    /// refused login, so an unreachable server cannot pass for a refusal.
    pub async fn can_login(&self, user: &str, password: &str) -> bool {
        match self.pg_config(user, password, "postgres").connect(self.h.pg_tls()).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client.simple_query("SELECT 1").await.expect("query after login");
                true
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) => false,
            Err(e) => panic!("login check for {user:?} failed unexpectedly: {e:?}"),
        }
    }

    /// A user secret in AWS's format for `username`, on the harness database.
    pub fn user_secret(&self, username: &str, password: &str) -> Value {
        serde_json::json!({
            "engine": "postgres",
            "host": "localhost",
            "port": self.pg.port,
            "username": username,
            "password": password,
            "dbname": "postgres",
        })
    }

    /// The harness's RDS-like admin as an admin secret.
    pub fn admin_secret(&self) -> Value {
        self.user_secret(&self.pg.admin, &self.pg.admin_password)
    }

    /// The harness superuser as an admin secret (see [`TestEnv::pg_superuser_credentials`]).
    pub fn superuser_secret(&self) -> Value {
        self.user_secret(&self.pg.superuser, &self.pg.superuser_password)
    }

    /// Creates a secret and returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &Value) -> String {
        let out = self
            .sm
            .create_secret()
            .name(self.unique(name))
            .secret_string(value.to_string())
            .send()
            .await
            .expect("CreateSecret");
        out.arn().unwrap().to_owned()
    }

    /// Starts a rotation as Secrets Manager does: `RotateSecret` naming the registered
    /// function leaves a version for the new token with AWSPENDING. Returns the token.
    pub async fn start_rotation(&self, arn: &str) -> String {
        let token = random_token();
        self.sm
            .rotate_secret()
            .secret_id(arn)
            .client_request_token(&token)
            .rotation_lambda_arn(&self.moto.rotation_lambda_arn)
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder().automatically_after_days(30).build(),
            )
            .send()
            .await
            .expect("RotateSecret");
        token
    }

    /// Runs one step as Secrets Manager would invoke it.
    pub async fn step<T: RotationTarget>(
        &self,
        rotator: &Rotator<SecretsManagerStore, T>,
        arn: &str,
        token: &str,
        step: Step,
    ) -> Result<Outcome, RotationError> {
        let event = RotationEvent { step, secret_id: arn.to_owned(), token: token.to_owned(), rotation_token: None };
        rotator.handle(&event).await
    }

    /// A whole rotation: RotateSecret, then the four steps. Returns the token.
    pub async fn rotate<T: RotationTarget>(&self, rotator: &Rotator<SecretsManagerStore, T>, arn: &str) -> String {
        let token = self.start_rotation(arn).await;
        for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
            self.step(rotator, arn, &token, step).await.unwrap_or_else(|e| panic!("{}: {e}", step.as_str()));
        }
        token
    }

    /// A rotation that changed the credentials (createSecret, setSecret) and was then
    /// abandoned: its AWSPENDING label removed by hand, as an operator does to unblock
    /// RotateSecret. Returns its token, now a version without labels.
    pub async fn abandon_after_set<T: RotationTarget>(
        &self,
        rotator: &Rotator<SecretsManagerStore, T>,
        arn: &str,
    ) -> String {
        let token = self.start_rotation(arn).await;
        self.step(rotator, arn, &token, Step::Create).await.expect("createSecret");
        self.step(rotator, arn, &token, Step::Set).await.expect("setSecret");
        self.sm
            .update_secret_version_stage()
            .secret_id(arn)
            .version_stage("AWSPENDING")
            .remove_from_version_id(&token)
            .send()
            .await
            .expect("UpdateSecretVersionStage");
        token
    }

    /// Starts a rotation and runs its steps until one fails; returns that error. Panics
    /// if the whole rotation succeeds.
    pub async fn rotation_error<T: RotationTarget>(
        &self,
        rotator: &Rotator<SecretsManagerStore, T>,
        arn: &str,
    ) -> RotationError {
        let token = self.start_rotation(arn).await;
        for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
            if let Err(e) = self.step(rotator, arn, &token, step).await {
                return e;
            }
        }
        panic!("the rotation of {arn} succeeded");
    }

    /// Removes an unlabelled version of the secret, as Secrets Manager does once a secret
    /// has more than about 100 versions: at once, or, with `after_next_list`, right after
    /// the next ListSecretVersionIds of the secret has listed it. moto never removes
    /// versions; `tests/moto_server.py` does it for this request.
    pub fn remove_secret_version(&self, arn: &str, version_id: &str, after_next_list: bool) {
        let body = serde_json::json!({"SecretId": arn, "VersionId": version_id, "AfterNextList": after_next_list});
        self.moto.post("/keyturn-test/secretsmanager/remove-version", &body);
    }

    /// Version id to staging labels, as DescribeSecret reports them.
    pub async fn stages(&self, arn: &str) -> BTreeMap<String, BTreeSet<String>> {
        let out = self.sm.describe_secret().secret_id(arn).send().await.expect("DescribeSecret");
        out.version_ids_to_stages()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect()
    }

    /// The JSON value of the version carrying `stage`.
    pub async fn value(&self, arn: &str, stage: &str) -> Value {
        let out = self.sm.get_secret_value().secret_id(arn).version_stage(stage).send().await.expect("GetSecretValue");
        serde_json::from_str(out.secret_string().unwrap()).unwrap()
    }

    /// (username, password) of the version carrying `stage`.
    pub async fn login_of(&self, arn: &str, stage: &str) -> (String, String) {
        let v = self.value(arn, stage).await;
        (v["username"].as_str().unwrap().to_owned(), v["password"].as_str().unwrap().to_owned())
    }

    /// Every password any version of the secret holds (for leak checks).
    pub async fn all_passwords(&self, arn: &str) -> Vec<String> {
        self.all_values_of(arn, "password").await
    }

    /// Every value of `key` in any version of the secret.
    pub async fn all_values_of(&self, arn: &str, key: &str) -> Vec<String> {
        let out = self
            .sm
            .list_secret_version_ids()
            .secret_id(arn)
            .include_deprecated(true)
            .send()
            .await
            .expect("ListSecretVersionIds");
        let mut passwords = Vec::new();
        for v in out.versions() {
            let value = self
                .sm
                .get_secret_value()
                .secret_id(arn)
                .version_id(v.version_id().unwrap())
                .send()
                .await
                .expect("GetSecretValue");
            if let Some(s) = value.secret_string() {
                if let Ok(json) = serde_json::from_str::<Value>(s) {
                    if let Some(p) = json[key].as_str() {
                        passwords.push(p.to_owned());
                    }
                }
            }
        }
        passwords
    }

    /// Asserts no value of `key` in any version of the secret appears in this process's logs.
    pub async fn assert_no_password_logged_for(&self, arn: &str, key: &str) {
        let values = self.all_values_of(arn, key).await;
        assert!(!values.is_empty());
        let logs = captured_logs();
        for v in values {
            assert!(!logs.contains(&v), "a {key} of {arn} appears in keyturn's logs");
        }
    }

    /// Asserts no password of the secret appears in this process's logs or the server's.
    pub async fn assert_no_password_logged(&self, arn: &str) {
        let passwords = self.all_passwords(arn).await;
        assert!(!passwords.is_empty());
        let logs = captured_logs();
        let server_log = std::fs::read_to_string(&self.pg.log_file).expect("read postgres.log");
        for p in passwords {
            assert!(!logs.contains(&p), "a password of {arn} appears in keyturn's logs");
            assert!(!server_log.contains(&p), "a password of {arn} appears in the PostgreSQL server log");
        }
    }
}
