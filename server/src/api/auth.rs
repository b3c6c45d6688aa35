//! Authentication: who a session is. The users file names each user with
//! an argon2 hash of the password (never the password); credentials are
//! checked here, on the node that receives them, off the async workers
//! (a check costs tens of milliseconds and MiBs by design), and only the
//! resulting identity enters the log. Passwords are never logged.
//! Failed attempts slow down further ones from the same address and for
//! the same user (`throttle`), before a check is queued for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use ensemble_proto::v1 as pb;
use sha1::Digest;
use tokio::sync::Semaphore;
use tokio::time::Instant;

mod throttle;
use throttle::{Source, Throttle, Verdict};

use crate::config::Users;
use crate::state::acl::Identity;
use crate::state::{ErrorCode, Refusal};

/// Checks running at once: each holds argon2's memory (19 MiB by
/// default), so a flood of bad passwords queues instead of exhausting it.
const CONCURRENT_CHECKS: usize = 2;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HashError(String);

/// The users a node accepts, and who among them is the super user.
pub struct Authenticator {
    /// User name → PHC string of its password's argon2 hash.
    users: BTreeMap<String, String>,
    /// Passes every ACL check.
    super_user: Option<String>,
    /// Refuse sessions that present no credentials.
    require: bool,
    checks: Semaphore,
    /// Slows down sources and users with many recent failures, and logs them.
    throttle: Throttle,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.len())
            .field("super_user", &self.super_user)
            .field("require", &self.require)
            .finish()
    }
}

/// An argon2id hash of `password` with a random salt, as a PHC string for
/// the users file.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(format!("can not hash the password: {e}")))
}

/// ZooKeeper's digest of a user: `user:base64(sha1(user:password))`, so ACLs
/// written for ZooKeeper's digest scheme match the same users here.
fn zookeeper_digest(user: &str, password: &str) -> String {
    let sha = sha1::Sha1::digest(format!("{user}:{password}").as_bytes());
    format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(sha))
}

/// A hash no password is checked against successfully (its password is
/// random and forgotten), made once.
fn unknown_user_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut forgotten = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut forgotten);
        hash_password(&format!("{forgotten:?}")).unwrap_or_default()
    })
}

fn failed(message: String) -> Refusal {
    crate::metrics::auth_failed();
    Refusal::new(ErrorCode::AuthFailed, message)
}

impl Authenticator {
    /// An authenticator over the configured users (`crate::config` checked
    /// that the super user is one of them).
    pub fn new(users: &Users, super_user: Option<String>, require: bool) -> Self {
        Authenticator {
            users: users.hashes().clone(),
            super_user,
            require,
            checks: Semaphore::new(CONCURRENT_CHECKS),
            throttle: Throttle::default(),
        }
    }

    /// Whether sessions must present credentials.
    pub fn required(&self) -> bool {
        self.require
    }

    /// The identities credentials prove, or AUTH_FAILED (logged and
    /// counted; the message names the user, never the password, and does
    /// not say whether the user exists). An attempt from a source, or for
    /// a user, with many recent failures waits first (see [`throttle`]),
    /// or is refused unchecked when it would wait too long.
    pub async fn verify(
        self: &Arc<Self>,
        info: &pb::AuthInfo,
        from: Option<IpAddr>,
    ) -> Result<Vec<Identity>, Refusal> {
        let source = Source::of(from);
        // What the attempt claims, before any waiting: the throttle keys on
        // the user name too.
        let claim = if info.scheme != "digest" {
            Err(format!(
                "authentication scheme {:?} is not supported (use digest with user:password)",
                info.scheme
            ))
        } else {
            match std::str::from_utf8(&info.auth)
                .ok()
                .and_then(|t| t.split_once(':'))
            {
                Some((user, password)) => Ok((user.to_string(), password.to_string())),
                None => Err("digest credentials must be user:password".to_string()),
            }
        };
        let user = match &claim {
            Ok((user, _)) if ensemble_proto::acl::valid_user(user) => Some(user.as_str()),
            _ => None,
        };
        self.wait_turn(source, user).await?;
        let (user, password) = match claim {
            Ok(c) => c,
            Err(message) => {
                self.throttle.failed(source, None, Instant::now());
                return Err(failed(message));
            }
        };
        let rejected = |user: &str, valid: bool| {
            self.throttle
                .failed(source, valid.then_some(user), Instant::now());
            failed(format!("digest credentials for user {user:?} were rejected"))
        };
        if !ensemble_proto::acl::valid_user(&user) {
            return Err(rejected(&user, false));
        }
        // An unknown user costs a check too, so timing does not tell
        // which users exist.
        let known = self.users.get(&user).cloned();
        let permit = self
            .checks
            .acquire()
            .await
            .map_err(|_| Refusal::new(ErrorCode::SystemError, "the node is stopping"))?;
        let (checking, stored) = (password.clone(), known.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let hash = stored.as_deref().unwrap_or_else(|| unknown_user_hash());
            PasswordHash::new(hash)
                .map(|h| Argon2::default().verify_password(checking.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        drop(permit);
        if !ok || known.is_none() {
            return Err(rejected(&user, true));
        }
        self.throttle.succeeded(source, Instant::now());
        let mut identities = vec![Identity {
            scheme: "digest".into(),
            id: zookeeper_digest(&user, &password),
        }];
        if self.super_user.as_deref() == Some(user.as_str()) {
            identities.push(Identity {
                scheme: "super".into(),
                id: user,
            });
        }
        Ok(identities)
    }

    /// Holds an attempt while its source or user owes too many failures
    /// (no checking slot is held meanwhile), or refuses it unchecked when
    /// the wait would be too long.
    async fn wait_turn(&self, source: Source, user: Option<&str>) -> Result<(), Refusal> {
        let arrived = Instant::now();
        let mut counted = false;
        loop {
            let now = Instant::now();
            match self.throttle.verdict(source, user, arrived, now) {
                Verdict::Go => {
                    self.throttle.sweep(now);
                    return Ok(());
                }
                Verdict::WaitUntil(at) => {
                    if !counted {
                        counted = true;
                        crate::metrics::auth_throttled();
                    }
                    tokio::time::sleep_until(at).await;
                }
                Verdict::Refuse(after) => {
                    if !counted {
                        crate::metrics::auth_throttled();
                    }
                    self.throttle.refused(source, user, now);
                    let whom = match user {
                        Some(u) => format!("from {source} or for user {u:?}"),
                        None => format!("from {source}"),
                    };
                    return Err(failed(format!(
                        "too many failed authentication attempts {whom}: retry in {} ms",
                        after.as_millis().max(1)
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zookeeper_digest_is_zookeepers() {
        // ZooKeeper's DigestAuthenticationProvider.generateDigest("super:test").
        assert_eq!(
            zookeeper_digest("super", "test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[tokio::test]
    async fn a_password_is_checked_against_its_hash_only() {
        let mut users = BTreeMap::new();
        users.insert("alice".to_string(), hash_password("s3cret").unwrap());
        let auth = Arc::new(Authenticator::new(
            &Users::new(users),
            Some("alice".into()),
            false,
        ));
        let info = |a: &str| pb::AuthInfo {
            scheme: "digest".into(),
            auth: a.as_bytes().to_vec(),
        };
        let ids = auth.verify(&info("alice:s3cret"), None).await.unwrap();
        assert_eq!(ids[0].user(), "alice");
        assert_eq!(ids[1].scheme, "super");
        for bad in ["alice:wrong", "bob:s3cret", "alice", ""] {
            let e = auth.verify(&info(bad), None).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::AuthFailed, "{bad}");
            assert!(!e.message.contains("s3cret"), "{e}");
        }
    }
}
