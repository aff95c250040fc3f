//! A plaintext PostgreSQL connection that never answers a request for the password in
//! cleartext.
//!
//! tokio-postgres sends the password as it is when the server asks with
//! `AuthenticationCleartextPassword`; over a connection without TLS, whoever answers on
//! the host's port (a server the secret's writer runs, or anyone on the path) reads it.
//! This stream reads the server's messages during authentication and fails the read that
//! carries such a request, so the driver never gets to answer it. MD5 and SCRAM exchanges
//! pass (the server learns no password from them); after `AuthenticationOk` nothing is
//! inspected. Over verified TLS the server is the one the certificate names, and
//! cleartext is allowed there, as libpq's `require_auth` would.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error the stream fails with; recognised by the backend's error mapping.
#[derive(Debug, thiserror::Error)]
#[error("the server asked for the password in cleartext over a connection without TLS")]
pub struct CleartextRequested;

/// `AuthenticationCleartextPassword`'s code in an `R` message.
const CLEARTEXT: u32 = 3;
/// `AuthenticationOk`'s code.
const OK: u32 = 0;

/// Wraps the TCP stream of a plaintext connection (see the module docs).
pub struct NoCleartextPassword<S> {
    inner: S,
    /// The current message's first bytes: tag, length, and for `R` the auth code.
    header: [u8; 9],
    have: usize,
    /// Bytes of the current message's body still to pass over.
    skip: usize,
    /// Authentication is over: nothing more to inspect.
    done: bool,
}

impl<S> NoCleartextPassword<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, header: [0; 9], have: 0, skip: 0, done: false }
    }

    /// Follows the message framing over `data`, failing on a cleartext request.
    fn inspect(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let need = if self.have > 0 && self.header[0] == b'R' { 9 } else { 5 };
            let n = (need - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            // A tag just read may be R, which needs four more bytes.
            let need = if self.header[0] == b'R' { 9 } else { 5 };
            if self.have < need {
                continue;
            }
            let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
            let read = need - 1;
            if len < read {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed message from the server"));
            }
            if self.header[0] == b'R' {
                match u32::from_be_bytes([self.header[5], self.header[6], self.header[7], self.header[8]]) {
                    CLEARTEXT => return Err(io::Error::new(io::ErrorKind::PermissionDenied, CleartextRequested)),
                    OK => self.done = true,
                    _ => {}
                }
            }
            self.skip = len - read;
            self.have = 0;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoCleartextPassword<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if !self.done => {
                let new = buf.filled()[before..].to_vec();
                Poll::Ready(self.inspect(&new))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoCleartextPassword<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    fn feed(bytes: &[u8], chunk: usize) -> io::Result<bool> {
        let mut s = NoCleartextPassword::new(());
        for part in bytes.chunks(chunk) {
            s.inspect(part)?;
        }
        Ok(s.done)
    }

    #[test]
    fn a_cleartext_request_is_refused_however_it_is_split() {
        let mut stream = auth(CLEARTEXT, &[]);
        stream.extend(auth(OK, &[]));
        for chunk in 1..stream.len() {
            let err = feed(&stream, chunk).unwrap_err();
            assert!(err.get_ref().is_some_and(|e| e.is::<CleartextRequested>()), "chunk {chunk}");
        }
    }

    #[test]
    fn md5_and_scram_pass_and_inspection_ends_at_ok() {
        let mut stream = auth(5, b"salt");
        stream.extend(auth(10, b"SCRAM-SHA-256\0\0"));
        stream.extend(auth(OK, &[]));
        // After AuthenticationOk, bytes that look like a cleartext request are data.
        stream.extend(auth(CLEARTEXT, &[]));
        for chunk in 1..=stream.len() {
            assert!(feed(&stream, chunk).unwrap(), "chunk {chunk}");
        }
        let mut error = vec![b'E'];
        error.extend_from_slice(&9u32.to_be_bytes());
        error.extend_from_slice(b"SFATA");
        error.extend(auth(CLEARTEXT, &[]));
        assert!(feed(&error, 3).is_err(), "messages before the request are framed, not misread");
    }
}
