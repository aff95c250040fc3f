//! A server that a hostile secret's writer might run: it speaks just enough of
//! PostgreSQL's startup protocol to ask for a password (in cleartext, or as MD5), records
//! every password message it receives, and refuses the login; or it lets anyone in
//! (`trust`) and answers every query with an empty success.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// How the fake server asks for the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `AuthenticationCleartextPassword`: the client would send the password as it is.
    Cleartext,
    /// `AuthenticationMD5Password` with a fixed salt.
    Md5,
    /// No password at all: every login succeeds, every query "works".
    Trust,
}

/// A running fake server on a free loopback port. It serves until the process ends.
pub struct FakePostgres {
    pub port: u16,
    /// Startups seen (one per login attempt).
    pub logins: Arc<Mutex<usize>>,
    /// The body of every password message received.
    pub passwords: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The MD5 salt the server sends.
pub const SALT: [u8; 4] = [1, 2, 3, 4];

impl FakePostgres {
    pub fn start(ask: Ask) -> FakePostgres {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let logins = Arc::new(Mutex::new(0));
        let passwords = Arc::new(Mutex::new(Vec::new()));
        let (l, p) = (logins.clone(), passwords.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (l, p) = (l.clone(), p.clone());
                std::thread::spawn(move || serve(stream, ask, &l, &p));
            }
        });
        FakePostgres { port, logins, passwords }
    }

    /// The MD5 answer a client gives for `user` and `password` to [`SALT`].
    pub fn md5_answer(user: &str, password: &str) -> Vec<u8> {
        postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), SALT).into_bytes()
    }
}

fn serve(mut stream: std::net::TcpStream, ask: Ask, logins: &Mutex<usize>, passwords: &Mutex<Vec<Vec<u8>>>) {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return;
    }
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
    if stream.read_exact(&mut startup).is_err() {
        return;
    }
    *logins.lock().unwrap() += 1;
    let request: Vec<u8> = match ask {
        Ask::Cleartext => [&b"R"[..], &8u32.to_be_bytes(), &3u32.to_be_bytes()].concat(),
        Ask::Md5 => [&b"R"[..], &12u32.to_be_bytes(), &5u32.to_be_bytes(), &SALT].concat(),
        Ask::Trust => return trust(stream),
    };
    if stream.write_all(&request).is_err() {
        return;
    }
    let mut tag = [0u8; 1];
    if stream.read_exact(&mut tag).is_ok() && tag[0] == b'p' && stream.read_exact(&mut len).is_ok() {
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        if stream.read_exact(&mut body).is_ok() {
            body.pop(); // the terminating NUL
            passwords.lock().unwrap().push(body);
        }
    }
    let fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0";
    let error = [&b"E"[..], &((fields.len() + 4) as u32).to_be_bytes(), fields].concat();
    stream.write_all(&error).ok();
}

/// AuthenticationOk, then an empty success for every query until the client leaves.
fn trust(mut stream: std::net::TcpStream) {
    let ready = [&b"Z"[..], &5u32.to_be_bytes(), b"I"].concat();
    let ok = [&b"R"[..], &8u32.to_be_bytes(), &0u32.to_be_bytes(), &ready].concat();
    if stream.write_all(&ok).is_err() {
        return;
    }
    let (mut tag, mut len) = ([0u8; 1], [0u8; 4]);
    while stream.read_exact(&mut tag).is_ok() && tag[0] != b'X' && stream.read_exact(&mut len).is_ok() {
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let done = [&b"C"[..], &13u32.to_be_bytes(), b"SELECT 1\0", &ready].concat();
        if stream.write_all(&done).is_err() {
            return;
        }
    }
}
