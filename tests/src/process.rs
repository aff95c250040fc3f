//! Child processes that die with the test process.
//!
//! Linux delivers the parent-death signal when the spawning *thread* exits, and test
//! threads are short-lived, so every service is spawned from one thread that lives as long
//! as the process.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Request = (Command, i32, Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut command, signal, reply) in rx {
                    let _ = reply.send(spawn_now(&mut command, signal));
                }
                // The sender lives in a static, so the loop only ends with the process.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the harness thread");
        Mutex::new(tx)
    })
}

fn spawn_now(command: &mut Command, signal: i32) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            // Runs after any uid change, which would otherwise clear the setting.
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Spawns `command`; the child gets `signal` when this process exits, however it exits.
pub fn spawn_tied(command: Command, signal: i32) -> io::Result<Child> {
    let (tx, rx) = channel();
    spawner().lock().expect("spawner lock").send((command, signal, tx)).expect("spawner alive");
    rx.recv().expect("spawner replies")
}

/// A free TCP port on loopback (bound, then released for the service to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on `port`, or panics after `seconds`.
pub fn wait_for_port(port: u16, seconds: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not listen on port {port} within {seconds} s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
