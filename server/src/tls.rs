//! TLS for a member's two listeners and its calls to other members
//! (rustls, through tonic's `tls` feature).
//!
//! One certificate and key serve both listeners and identify this member
//! when it dials a peer. Peers always authenticate each other: the peer
//! listener requires a client certificate signed by the configured CA, so a
//! process without one can not vote, append entries or forward writes.
//! Clients are asked for a certificate only when `--tls-client-auth` is on.
//!
//! The files are read and their PEM checked once, at startup, so a missing
//! or garbled file stops the member with a message naming the setting
//! rather than failing on the first connection.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why the TLS files can not be used; the message names the setting and
/// the file, never a key's contents.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// A member's TLS material, checked. The private key is never printed
/// (its `Debug` leaves it out), so logging a configuration leaks nothing.
#[derive(Clone)]
pub struct Tls {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
    /// Whether clients must present a certificate signed by the CA.
    pub client_auth: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &format_args!("<{} bytes>", self.cert.len()))
            .field("key", &format_args!("<hidden>"))
            .field("ca", &format_args!("<{} bytes>", self.ca.len()))
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{setting}: can not read {}: {e}", path.display())))
}

/// Checks that `pem` holds at least one certificate and nothing unparsable.
fn check_certs(setting: &str, path: &Path, pem: &[u8]) -> Result<(), TlsError> {
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        cert.map_err(|e| TlsError(format!("{setting}: {} is not valid PEM: {e}", path.display())))?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError(format!(
            "{setting}: {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(())
}

/// An error with its causes, `outer: inner: ...` (tonic's transport error
/// says only "transport error"; the reason is in its source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Tls {
    /// Reads and checks the certificate chain, its key and the CA; the
    /// error names the setting and the file.
    pub fn load(cert: &Path, key: &Path, ca: &Path, client_auth: bool) -> Result<Tls, TlsError> {
        let cert_pem = read("--tls-cert", cert)?;
        check_certs("--tls-cert", cert, &cert_pem)?;
        let ca_pem = read("--tls-ca", ca)?;
        check_certs("--tls-ca", ca, &ca_pem)?;
        let key_pem = read("--tls-key", key)?;
        // The error of a key file must not quote it: name the file only.
        match rustls_pemfile::private_key(&mut &key_pem[..]) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(TlsError(format!(
                    "--tls-key: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    key.display()
                )))
            }
            Err(_) => return Err(TlsError(format!("--tls-key: {} is not valid PEM", key.display()))),
        }
        Ok(Tls {
            cert: cert_pem,
            key: key_pem,
            ca: ca_pem,
            client_auth,
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, &self.key)
    }

    fn ca(&self) -> Certificate {
        Certificate::from_pem(&self.ca)
    }

    /// The client listener's TLS: this member's certificate, and the CA
    /// that clients' certificates must be signed by when client
    /// authentication is on.
    pub fn client_listener(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity());
        if self.client_auth {
            config.client_ca_root(self.ca())
        } else {
            config
        }
    }

    /// The peer listener's TLS: a caller must present a certificate signed
    /// by the CA (mutual TLS), whatever the client setting.
    pub fn peer_listener(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(self.ca())
    }

    /// TLS for this member's own calls, to peers and to other members'
    /// client ports: it trusts the CA only and presents its certificate.
    pub fn dialer(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca())
            .identity(self.identity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2b4\n-----END CERTIFICATE-----\n";

    #[test]
    fn refuses_missing_and_garbled_files_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("cert.pem"), CERT).unwrap();
        std::fs::write(path("empty.pem"), "nothing here\n").unwrap();
        std::fs::write(
            path("key.pem"),
            "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let load = |c: &str, k: &str, a: &str| Tls::load(&path(c), &path(k), &path(a), false);
        for (c, k, a, why) in [
            ("missing.pem", "key.pem", "cert.pem", "--tls-cert: can not read"),
            ("empty.pem", "key.pem", "cert.pem", "--tls-cert: "),
            ("cert.pem", "key.pem", "empty.pem", "--tls-ca: "),
            ("cert.pem", "missing.pem", "cert.pem", "--tls-key: can not read"),
            ("cert.pem", "empty.pem", "cert.pem", "--tls-key: "),
            ("cert.pem", "key.pem", "cert.pem", "--tls-key: "),
        ] {
            let e = load(c, k, a).unwrap_err().to_string();
            assert!(e.contains(why), "{c} {k} {a}: {e}");
        }
    }

    #[test]
    fn the_key_is_never_printed() {
        let tls = Tls {
            cert: CERT.into(),
            key: b"SECRET KEY MATERIAL".to_vec(),
            ca: CERT.into(),
            client_auth: true,
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("client_auth: true"), "{shown}");
    }
}
