//! Telling a TLS mismatch from an unreachable node. When a connection to a
//! node fails, the client asks the port what it speaks: it sends the
//! HTTP/2 preface in plaintext and reads the first bytes of the answer. A
//! TLS record (an alert or handshake: `0x15`/`0x16`, then `0x03`) means the
//! port speaks TLS; an HTTP/2 SETTINGS frame means plaintext gRPC. A
//! mismatch with the client's own settings is then reported as such
//! (naming the flag to change) instead of as a lost connection, and is not
//! retried: every retry would meet the same answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::endpoints::error_chain;
use crate::error::Error;
use crate::options::TlsOptions;

/// How long the probe may take: a node that answers at all answers at once.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP/2 client preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// What a port answered the probe with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Tls,
    Plaintext,
}

/// What the first bytes a port sent back say it speaks, if they say.
fn classify(answer: &[u8]) -> Option<Speaks> {
    match answer {
        [0x15 | 0x16, 0x03, ..] => Some(Speaks::Tls),
        // A frame header: 24-bit length, then type 4 (SETTINGS).
        [_, _, _, 0x04, ..] => Some(Speaks::Plaintext),
        _ => None,
    }
}

/// Asks `addr` what it speaks; None if it can not be reached or does not say.
async fn probe(addr: &str) -> Option<Speaks> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(PREFACE).await.ok()?;
        let mut answer = [0u8; 4];
        let mut got = 0;
        while got < answer.len() {
            match stream.read(&mut answer[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if classify(&answer[..got]) == Some(Speaks::Tls) {
                break;
            }
        }
        classify(&answer[..got])
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange).await.ok().flatten()
}

/// The TLS mismatch behind a failed connection to `addr`, if that is what
/// it was; `cause` is the failure, `tls` the client's settings.
pub(crate) async fn diagnose(addr: &str, tls: Option<&TlsOptions>, cause: &tonic::Status) -> Option<Error> {
    // Read before any await: a status's source need not be Send.
    let chain = error_chain(cause);
    if tls.is_some() {
        if let Some(at) = chain.find("invalid peer certificate") {
            return Some(Error::TlsMismatch(format!(
                "the certificate of {addr} is not trusted ({}): --tls-ca (ENSEMBLE_TLS_CA; Options::tls \
                 in the library) must name the CA that signed the nodes' certificates",
                &chain[at..]
            )));
        }
    }
    match (probe(addr).await?, tls.is_some()) {
        (Speaks::Tls, false) => Some(Error::TlsMismatch(format!(
            "{addr} speaks TLS and this client does not: pass --tls-ca with the CA of the cluster's \
             certificates (or ENSEMBLE_TLS_CA; Options::tls in the library)"
        ))),
        (Speaks::Plaintext, true) => Some(Error::TlsMismatch(format!(
            "{addr} does not speak TLS: drop --tls-ca (and ENSEMBLE_TLS_CA; Options::tls in the \
             library), or turn TLS on in the cluster"
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn first_bytes_tell_tls_from_http2() {
        assert_eq!(classify(&[0x15, 0x03, 0x03, 0x00]), Some(Speaks::Tls));
        assert_eq!(classify(&[0x16, 0x03]), Some(Speaks::Tls));
        assert_eq!(classify(&[0x00, 0x00, 0x12, 0x04]), Some(Speaks::Plaintext));
        assert_eq!(classify(b"HTTP/1.1 400"), None);
        assert_eq!(classify(&[]), None);
    }

    /// A port that answers like a TLS server is told apart from one that
    /// answers like plaintext HTTP/2, and from one that is closed.
    #[tokio::test]
    async fn a_probe_reads_what_the_port_answers() {
        async fn port_answering(answer: &'static [u8]) -> String {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer).await;
                }
            });
            addr
        }
        let tls = port_answering(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await;
        let h2 = port_answering(&[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]).await;
        assert_eq!(probe(&tls).await, Some(Speaks::Tls));
        assert_eq!(probe(&h2).await, Some(Speaks::Plaintext));
        let cause = tonic::Status::unavailable("transport error");
        let e = diagnose(&tls, None, &cause).await.unwrap();
        assert!(
            e.to_string().contains("speaks TLS") && e.to_string().contains("--tls-ca"),
            "{e}"
        );
        let ca = TlsOptions::new("");
        let e = diagnose(&h2, Some(&ca), &cause).await.unwrap();
        assert!(e.to_string().contains("does not speak TLS"), "{e}");
        assert!(diagnose(&tls, Some(&ca), &cause).await.is_none());
        assert!(diagnose(&h2, None, &cause).await.is_none());
        // Nothing listening: not a TLS question.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        assert!(diagnose(&closed, None, &cause).await.is_none());
    }
}
