//! The fault suite's workload and checker: clients record every operation
//! (invoke, ok / fail / unknown, times) while faults run; the checker then
//! proves nothing acknowledged was lost and every history is linearizable.
//! Beside them, the `hostile-outsider` scenario's attackers: [`hostile`]
//! (peer calls from a process that is no member) and [`flood`] (session
//! streams without limit on one client connection).

pub mod checker;
pub mod flood;
pub mod history;
pub mod hostile;
pub mod workload;

use anyhow::Context;
use ensemble_client::{Options, TlsOptions};

/// The client options of the fault suite's processes (`ensemble-fault` and
/// the holders it spawns, which inherit its environment) for the cluster's
/// mode, read from the environment the `ensemble` CLI reads too:
/// `ENSEMBLE_TLS_CA` (a PEM file; with `ENSEMBLE_TLS_CERT` and
/// `ENSEMBLE_TLS_KEY` for a client certificate) turns TLS on, and
/// `ENSEMBLE_USER` with `ENSEMBLE_PASSWORD` opens sessions as that user.
/// Unset variables leave `base` as it is (plaintext, no credentials).
pub fn options_from_env(base: Options) -> anyhow::Result<Options> {
    options_from(base, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

fn options_from(base: Options, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Options> {
    let mut options = base;
    let read =
        |name: &str, path: &str| std::fs::read(path).with_context(|| format!("{name}: can not read {path}"));
    if let Some(ca) = var("ENSEMBLE_TLS_CA") {
        let mut tls = TlsOptions::new(read("ENSEMBLE_TLS_CA", &ca)?);
        match (var("ENSEMBLE_TLS_CERT"), var("ENSEMBLE_TLS_KEY")) {
            (Some(cert), Some(key)) => {
                tls = tls.with_identity(read("ENSEMBLE_TLS_CERT", &cert)?, read("ENSEMBLE_TLS_KEY", &key)?);
            }
            (None, None) => {}
            _ => anyhow::bail!("ENSEMBLE_TLS_CERT and ENSEMBLE_TLS_KEY go together"),
        }
        options.tls = Some(tls);
    } else if var("ENSEMBLE_TLS_CERT").is_some() || var("ENSEMBLE_TLS_KEY").is_some() {
        anyhow::bail!("ENSEMBLE_TLS_CERT/ENSEMBLE_TLS_KEY need ENSEMBLE_TLS_CA");
    }
    match (var("ENSEMBLE_USER"), var("ENSEMBLE_PASSWORD")) {
        (Some(user), Some(password)) => options = options.with_user(&user, &password),
        (Some(user), None) => anyhow::bail!("ENSEMBLE_USER={user} needs ENSEMBLE_PASSWORD"),
        (None, Some(_)) => anyhow::bail!("ENSEMBLE_PASSWORD is set but ENSEMBLE_USER is not"),
        (None, None) => {}
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Options> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        options_from(Options::default(), |name| vars.get(name).cloned())
    }

    #[test]
    fn unset_leaves_the_options_plain() {
        let o = from(&[]).unwrap();
        assert!(o.tls.is_none() && o.credentials.is_none());
    }

    #[test]
    fn tls_and_credentials_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"CA PEM").unwrap();
        let o = from(&[
            ("ENSEMBLE_TLS_CA", ca.to_str().unwrap()),
            ("ENSEMBLE_USER", "admin"),
            ("ENSEMBLE_PASSWORD", "pw"),
        ])
        .unwrap();
        assert_eq!(o.tls.unwrap().ca_pem, b"CA PEM");
        assert_eq!(o.credentials, Some(("digest".to_string(), b"admin:pw".to_vec())));
    }

    #[test]
    fn half_settings_are_errors() {
        assert!(from(&[("ENSEMBLE_USER", "admin")]).is_err());
        assert!(from(&[("ENSEMBLE_PASSWORD", "pw")]).is_err());
        assert!(from(&[("ENSEMBLE_TLS_CA", "/nonexistent/ca.pem")]).is_err());
        assert!(from(&[("ENSEMBLE_TLS_CERT", "/x")]).is_err());
    }
}
