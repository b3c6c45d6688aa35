//! TLS for a member's two listeners and its calls to other members
//! (rustls; the listeners' handshakes run in `listen`, calls to peers
//! through tonic's `tls` feature).
//!
//! One certificate and key serve both listeners and identify this member
//! when it dials a peer. The peer listener takes only members: a caller
//! must present a certificate the CA signed that could also serve one of
//! the members' peer hosts (its names cover that host and it allows server
//! authentication), so a client certificate from the same CA is refused at
//! the handshake. Clients are asked for a certificate only when
//! `--tls-client-auth` is on.
//!
//! The files are read and their PEM checked once, at startup, so a missing
//! or garbled file stops the member with a message naming the setting
//! rather than failing on the first connection.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

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

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &self.ca[..]) {
            let cert = cert.map_err(|e| TlsError(format!("--tls-ca: not valid PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| TlsError(format!("--tls-ca: not a usable CA certificate: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    /// A listener's rustls settings: this member's certificate, `verifier`
    /// for callers' certificates, HTTP/2 only.
    fn server_config(
        &self,
        verifier: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &self.cert[..])
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError(format!("--tls-cert: not valid PEM: {e}")))?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &self.key[..])
            .ok()
            .flatten()
            .ok_or_else(|| TlsError("--tls-key: holds no usable private key".into()))?;
        let builder = ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS can not be set up: {e}")))?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError(format!("--tls-cert/--tls-key can not be used: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
            .build()
            .map_err(|e| TlsError(format!("--tls-ca: can not verify certificates with it: {e}")))
    }

    /// The client listener's TLS: this member's certificate, and the CA
    /// that clients' certificates must be signed by when client
    /// authentication is on.
    pub fn client_listener(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = if self.client_auth {
            Some(self.client_verifier()?)
        } else {
            None
        };
        self.server_config(verifier)
    }

    /// The peer listener's TLS: a caller must present a certificate signed
    /// by the CA that could also serve one of `member_hosts` (the host
    /// parts of the members' peer addresses), whatever the client setting.
    pub fn peer_listener(&self, member_hosts: &[String]) -> Result<Arc<ServerConfig>, TlsError> {
        let names = member_hosts
            .iter()
            .map(|h| {
                ServerName::try_from(h.clone())
                    .map_err(|_| TlsError(format!("the member host {h:?} is not a valid TLS name")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let server = WebPkiServerVerifier::builder_with_provider(self.roots()?, Self::provider())
            .build()
            .map_err(|e| TlsError(format!("--tls-ca: can not verify certificates with it: {e}")))?;
        let members = MembersOnly {
            inner: self.client_verifier()?,
            server,
            names,
        };
        self.server_config(Some(Arc::new(members)))
    }

    /// TLS for this member's own calls, to peers and to other members'
    /// client ports: it trusts the CA only and presents its certificate.
    pub fn dialer(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca())
            .identity(self.identity())
    }
}

/// The host part of `HOST:PORT` (`[v6]:port` too), as a certificate names it.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The peer listener's check of callers: a member's certificate, never a
/// client's. The CA may sign both; what sets a member's apart is that it
/// can serve a member's peer host, so it is checked as a server
/// certificate for each member host (names and serverAuth usage) after the
/// usual client-certificate checks.
#[derive(Debug)]
struct MembersOnly {
    inner: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for MembersOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let member = self.names.iter().any(|name| {
            self.server
                .verify_server_cert(end_entity, intermediates, name, &[], now)
                .is_ok()
        });
        if member {
            Ok(verified)
        } else {
            Err(rustls::Error::General(
                "the certificate names no member of this cluster (a member's certificate must be valid \
                 for serving a member's peer host); client certificates are refused on the peer port"
                    .into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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
