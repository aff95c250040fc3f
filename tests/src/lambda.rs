//! The real function binaries under cargo-lambda's Lambda Runtime API emulator
//! (`cargo lambda watch --only-lambda-apis`), invoked with `cargo lambda invoke`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::moto::venv;
use crate::process::{free_port, spawn_tied, wait_for_port};

/// A running emulator and the function processes polling it; all are stopped on drop.
pub struct Emulator {
    pub port: u16,
    watch: Child,
    functions: Vec<Child>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        for child in self.functions.iter_mut().chain(std::iter::once(&mut self.watch)) {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// The built binary of a function crate, next to the running executable (tests live in
/// `target/debug/deps`, the demo and bench in `target/<profile>`).
pub fn function_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not built next to {}: cargo build -p {name}", exe.display()))
}

impl Emulator {
    /// Starts the emulator on a free port; `log` receives its output.
    pub fn start(log: &Path) -> Emulator {
        let port = free_port();
        let log = std::fs::File::create(log).expect("create emulator log");
        let mut command = Command::new(venv().join("bin/cargo-lambda"));
        command
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(crate::project_root())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let watch = spawn_tied(command, libc::SIGTERM).expect("start cargo lambda watch");
        wait_for_port(port, 60, "cargo lambda watch");
        Emulator { port, watch, functions: Vec::new() }
    }

    /// Starts `binary` as Lambda would, polling this emulator for `function`'s events.
    /// Its stdout and stderr (the function's logs) go to `log`.
    pub fn run_function(&mut self, binary: &Path, function: &str, env: &[(String, String)], log: &Path) {
        let log = std::fs::File::create(log).expect("create function log");
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{}/.rt/{function}", self.port))
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.functions.push(spawn_tied(command, libc::SIGTERM).expect("start the function"));
    }

    /// One rotation of the secret `arn` by `function`, as Secrets Manager runs one after
    /// `RotateSecret` left the version `token` pending: createSecret, setSecret,
    /// testSecret and finishSecret in turn, each event with a `RotationToken` of its own.
    /// `Err` names the step that failed and what the function reported.
    pub fn rotate(&self, function: &str, arn: &str, token: &str) -> Result<(), String> {
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            let file = crate::harness().work.join(format!("{token}-{step}.json"));
            let event = serde_json::json!({
                "Step": step, "SecretId": arn, "ClientRequestToken": token, "RotationToken": crate::random_token()
            });
            std::fs::write(&file, event.to_string()).expect("write the event");
            self.invoke(function, &file).map_err(|e| format!("{step}: {e}"))?;
        }
        Ok(())
    }

    /// Invokes `function` with `event` and returns its JSON answer; panics on a failure.
    pub fn invoke_json(&self, function: &str, event: &serde_json::Value) -> serde_json::Value {
        let file = crate::harness().work.join(format!("{}.json", crate::random_token()));
        std::fs::write(&file, event.to_string()).expect("write the event");
        let out = self.invoke(function, &file).unwrap_or_else(|e| panic!("{function}: {e}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{function} answered {out:?}: {e}"))
    }

    /// `cargo lambda invoke FUNCTION --data-file FILE`: `Ok(response)` or `Err(what the
    /// function reported)`.
    pub fn invoke(&self, function: &str, event_file: &Path) -> Result<String, String> {
        let out = Command::new(venv().join("bin/cargo-lambda"))
            .args(["lambda", "invoke", function, "-A", "127.0.0.1", "-P", &self.port.to_string(), "--data-file"])
            .arg(event_file)
            .output()
            .expect("run cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{stderr}"))
        }
    }
}
