//! moto in server mode on a free loopback port: the AWS APIs without an AWS account.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::process::{free_port, spawn_tied, wait_for_port};

/// A running moto server and the rotation function registered in it.
pub struct Moto {
    pub endpoint: String,
    pub rotation_lambda_arn: String,
    /// Held for the life of the process; the server dies with it.
    _server: std::process::Child,
}

impl Moto {
    /// Makes moto refuse every request signed with the access key `access_key_id` as AWS
    /// refuses a key IAM has not propagated yet (`withheld`), or accept it again. moto
    /// accepts a new key at once; `tests/moto_server.py` does this for the request.
    pub fn withhold_key(&self, access_key_id: &str, withheld: bool) {
        let body = serde_json::json!({"AccessKeyId": access_key_id, "Withheld": withheld});
        self.post("/keyturn-test/iam/withhold-key", &body);
    }

    /// POSTs `body` to one of `tests/moto_server.py`'s own routes; panics unless it answers 200.
    /// One short loopback request: a blocking one does not hold a test up.
    pub fn post(&self, path: &str, body: &serde_json::Value) {
        use std::io::{Read as _, Write as _};
        let body = body.to_string();
        let authority = self.endpoint.strip_prefix("http://").expect("moto's endpoint is http://");
        let mut stream = std::net::TcpStream::connect(authority).expect("connect to moto");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send to moto");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("moto's answer");
        assert_eq!(answer.split(' ').nth(1), Some("200"), "POST {path} {body}: {answer}");
    }
}

/// The project's virtualenv (made by `make setup`), overridable with `KEYTURN_VENV`.
pub fn venv() -> std::path::PathBuf {
    std::env::var_os("KEYTURN_VENV").map(Into::into).unwrap_or_else(|| crate::project_root().join(".venv"))
}

/// Starts moto through `tests/moto_server.py`: `moto_server` with DynamoDB's requests served
/// one at a time, as DynamoDB isolates them (moto's threaded server does not; see the script).
pub fn start(dir: &Path) -> Moto {
    let python = venv().join("bin/python");
    assert!(
        venv().join("bin/moto_server").exists(),
        "moto is missing from {}: run `make setup` first",
        venv().display()
    );
    let port = free_port();
    let log = std::fs::File::create(dir.join("moto.log")).expect("create moto.log");
    let mut command = Command::new(python);
    command
        .arg(crate::project_root().join("tests/moto_server.py"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SIGKILL: moto's SIGTERM handler exits only once every request thread is done, so a
    // moto busy with a test's backlog lingered for minutes after its test process, taking
    // the CPU the next test binary needs. It keeps nothing worth a clean exit.
    let server = spawn_tied(command, libc::SIGKILL).expect("start moto_server.py");
    wait_for_port(port, 60, "moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");

    let setup = Command::new(venv().join("bin/python"))
        .arg(crate::project_root().join("tests/moto_setup.py"))
        .arg(&endpoint)
        .stderr(Stdio::inherit())
        .output()
        .expect("run moto_setup.py");
    assert!(setup.status.success(), "moto_setup.py failed");
    let rotation_lambda_arn = String::from_utf8(setup.stdout).expect("utf-8").trim().to_owned();
    Moto { endpoint, rotation_lambda_arn, _server: server }
}
