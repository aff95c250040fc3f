//! Databases that stop answering. [`StallProxy`]: a TCP proxy that stops forwarding, in
//! both directions, once the client sends a chosen byte string: a database that accepted
//! the login and then went silent mid-statement (a network partition, a frozen host). It
//! only sees plaintext, so it serves connections without TLS. [`Silent`]: a listener that
//! accepts and never answers (a black-holed endpoint). [`FreezeProxy`]: a proxy whose open
//! connections go silent on demand while new ones pass (a connection the network dropped
//! without a word, as an idle NAT entry or a frozen Lambda container's).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// A listener on a free loopback port that accepts every connection, holds it open and
/// never sends a byte; it serves until the process ends.
pub struct Silent {
    pub port: u16,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming().flatten() {
                held.push(client);
            }
        });
        Silent { port }
    }
}

/// A proxy to `127.0.0.1:upstream` on a free loopback port that forwards bytes as they
/// come (TLS included); [`FreezeProxy::freeze_open`] makes every connection open at that
/// moment go silent for good, while connections made later pass.
pub struct FreezeProxy {
    pub port: u16,
    /// How many connections were accepted (each is numbered from 1 in that order).
    accepted: Arc<AtomicU64>,
    /// Connections numbered below this are silent.
    frozen_before: Arc<AtomicU64>,
}

impl FreezeProxy {
    pub fn start(upstream: u16) -> FreezeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (accepted, frozen_before) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (count, frozen) = (accepted.clone(), frozen_before.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let number = count.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (f1, f2) = (frozen.clone(), frozen.clone());
                std::thread::spawn(move || forward(client, server, number, &f1));
                std::thread::spawn(move || forward(s2, c2, number, &f2));
            }
        });
        FreezeProxy { port, accepted, frozen_before }
    }

    /// Every connection open now stops forwarding, in both directions, and stays open.
    pub fn freeze_open(&self) {
        self.frozen_before.store(self.accepted.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes, or, once its connection is frozen,
/// holds both open and silent.
fn forward(mut from: TcpStream, mut to: TcpStream, number: u64, frozen_before: &AtomicU64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if number < frozen_before.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_secs(60));
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
