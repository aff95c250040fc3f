//! A TCP proxy that stops forwarding, in both directions, once the client sends a chosen
//! byte string: a database that accepted the login and then went silent mid-statement (a
//! network partition, a frozen host). It only sees plaintext, so it serves connections
//! without TLS.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A running proxy to `127.0.0.1:upstream` on a free loopback port; it serves until the
/// process ends.
pub struct StallProxy {
    pub port: u16,
    /// Set once a client sent the trigger.
    pub stalled: Arc<AtomicBool>,
}

impl StallProxy {
    pub fn start(upstream: u16, trigger: &'static [u8]) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (f1, f2) = (flag.clone(), flag.clone());
                std::thread::spawn(move || pump(client, server, Some(trigger), &f1));
                std::thread::spawn(move || pump(s2, c2, None, &f2));
            }
        });
        StallProxy { port, stalled }
    }
}

/// Copies `from` to `to` until the trigger passes (then holds both open, silent) or
/// either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, trigger: Option<&[u8]>, stalled: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if trigger.is_some_and(|t| buf[..n].windows(t.len()).any(|w| w == t)) {
            stalled.store(true, Ordering::SeqCst);
        }
        if stalled.load(Ordering::SeqCst) {
            // Keep the sockets open and say nothing, as a frozen server does.
            std::thread::sleep(std::time::Duration::from_secs(60));
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
