//! Where access is decided: ACL entries as the tree keeps them, the
//! identities a session holds, and whether they grant a permission. Pure
//! and deterministic: a write is checked when its entry is applied, with
//! the identities in the session table and the client address the entry
//! carries, so every replica decides alike; a read is checked by the node
//! that serves it, against the same replicated state.

use std::net::IpAddr;

use ensemble_proto::acl::{self, perm_name};
use ensemble_proto::SessionId;
use serde::{Deserialize, Serialize};

use super::error::{ErrorCode, Refusal};

/// One ACL entry of a znode. `auth` never appears here: it is expanded
/// into the creating session's users when applied.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclEntry {
    /// Permission bits (`ensemble_proto::acl::READ`, ...).
    pub perms: u32,
    /// `world`, `digest` or `ip`.
    pub scheme: String,
    /// `anyone`, a user (or ZooKeeper's `user:hash`), an address or block.
    pub id: String,
}

impl AclEntry {
    /// `world:anyone` with every permission: what an empty ACL stands for.
    pub fn open() -> AclEntry {
        AclEntry {
            perms: acl::ALL,
            scheme: "world".into(),
            id: "anyone".into(),
        }
    }
}

/// One identity of a session, proven when it was added (by a password
/// checked on the node that received it). Its `Debug` leaves the digest
/// hash out: an unsalted hash invites guessing the password offline.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `digest` for a user, `super` for the configured super user.
    pub scheme: String,
    /// For `digest`, ZooKeeper's `user:base64(sha1(user:password))`, so
    /// ACLs written for ZooKeeper match; for `super`, the user.
    pub id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.scheme, self.user())
    }
}

impl Identity {
    /// The user it names: the id up to its first `:`.
    pub fn user(&self) -> &str {
        self.id.split_once(':').map_or(&self.id, |(u, _)| u)
    }
}

/// Most identities one session may hold (each check costs entries ×
/// identities).
pub const MAX_IDENTITIES: usize = 16;

/// Who a request acts as.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// The session.
    pub session_id: SessionId,
    /// Its identities, from the session table.
    pub identities: &'a [Identity],
    /// The client's address as the receiving node saw it, if known.
    pub ip: Option<IpAddr>,
}

impl Who<'_> {
    fn is_super(&self) -> bool {
        self.identities.iter().any(|i| i.scheme == "super")
    }

    fn matches(&self, entry: &AclEntry) -> bool {
        match entry.scheme.as_str() {
            "world" => entry.id == "anyone",
            "digest" => self.identities.iter().any(|i| {
                i.scheme == "digest"
                    && if entry.id.contains(':') {
                        i.id == entry.id
                    } else {
                        i.user() == entry.id
                    }
            }),
            "ip" => self.ip.is_some_and(|ip| acl::ip_matches(&entry.id, ip)),
            _ => false,
        }
    }

    /// Whether `acl` grants any permission of `mask` (an empty ACL is
    /// open to all; the super user passes everything).
    pub fn permitted(&self, acl: &[AclEntry], mask: u32) -> bool {
        acl.is_empty() || self.is_super() || acl.iter().any(|e| e.perms & mask != 0 && self.matches(e))
    }

    /// Refuses with NO_AUTH, naming the path and the permission, unless
    /// `acl` grants `mask`.
    pub fn check(&self, acl: &[AclEntry], mask: u32, path: &str) -> Result<(), Refusal> {
        if self.permitted(acl, mask) {
            return Ok(());
        }
        Err(Refusal::new(
            ErrorCode::NoAuth,
            format!(
                "session {} lacks {} permission on {path}",
                self.session_id,
                perm_name(mask)
            ),
        ))
    }
}

/// An ACL as a request gives it: entries as sent, `auth` included.
pub type RequestedAcl = Vec<AclEntry>;

/// The ACL to store for a requested one: `auth` entries become one
/// `digest` entry per user of the session; duplicates go; the open ACL is
/// stored as an empty list (no allocation per znode). INVALID_ACL if
/// `auth` stands for nobody.
pub fn resolve(requested: &[AclEntry], identities: &[Identity]) -> Result<Vec<AclEntry>, Refusal> {
    let mut out: Vec<AclEntry> = Vec::with_capacity(requested.len());
    for e in requested {
        if e.scheme == "auth" {
            let users: Vec<&str> = identities
                .iter()
                .filter(|i| i.scheme == "digest")
                .map(Identity::user)
                .collect();
            if users.is_empty() {
                return Err(Refusal::new(
                    ErrorCode::InvalidAcl,
                    "an auth ACL entry needs a session with a user identity (this one has none)",
                ));
            }
            for user in users {
                push_unique(
                    &mut out,
                    AclEntry {
                        perms: e.perms,
                        scheme: "digest".into(),
                        id: user.to_string(),
                    },
                );
            }
        } else {
            push_unique(&mut out, e.clone());
        }
    }
    if out.is_empty() || out == [AclEntry::open()] {
        out.clear();
    }
    Ok(out)
}

fn push_unique(list: &mut Vec<AclEntry>, e: AclEntry) {
    if !list.contains(&e) {
        list.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_proto::acl::{ADMIN, ALL, CREATE, READ, WRITE};

    fn entry(scheme: &str, id: &str, perms: u32) -> AclEntry {
        AclEntry {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    fn alice() -> Vec<Identity> {
        vec![Identity {
            scheme: "digest".into(),
            id: "alice:HASH=".into(),
        }]
    }

    #[test]
    fn each_scheme_grants_only_its_principals_and_only_its_permissions() {
        let ids = alice();
        let who = Who {
            session_id: SessionId(1),
            identities: &ids,
            ip: "127.0.0.1".parse().ok(),
        };
        let nobody = Who {
            session_id: SessionId(2),
            identities: &[],
            ip: "10.9.9.9".parse().ok(),
        };
        for acl in [
            vec![entry("world", "anyone", READ)],
            vec![entry("digest", "alice", READ)],
            vec![entry("digest", "alice:HASH=", READ)],
            vec![entry("ip", "127.0.0.0/8", READ)],
        ] {
            assert!(who.permitted(&acl, READ), "{acl:?}");
            assert!(!who.permitted(&acl, WRITE), "{acl:?}: only READ");
        }
        assert!(!nobody.permitted(&[entry("digest", "alice", ALL)], READ));
        assert!(!who.permitted(&[entry("digest", "alice:OTHER", ALL)], READ));
        assert!(!who.permitted(&[entry("ip", "10.0.0.0/8", ALL)], READ));
        assert!(nobody.permitted(&[], ALL), "empty is open");
        let e = who
            .check(&[entry("world", "anyone", READ)], CREATE, "/a")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NoAuth);
        assert!(e.message.contains("CREATE") && e.message.contains("/a"), "{e}");
        let root = [Identity {
            scheme: "super".into(),
            id: "root".into(),
        }];
        let sup = Who {
            identities: &root,
            ..nobody
        };
        assert!(sup.permitted(&[entry("digest", "bob", READ)], ADMIN));
    }

    #[test]
    fn auth_becomes_the_sessions_users_and_open_is_stored_empty() {
        let got = resolve(
            &[entry("auth", "", READ), entry("world", "anyone", READ)],
            &alice(),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![entry("digest", "alice", READ), entry("world", "anyone", READ)]
        );
        assert_eq!(
            resolve(&[entry("auth", "", READ)], &[]).unwrap_err().code,
            ErrorCode::InvalidAcl
        );
        assert!(resolve(&[AclEntry::open(), AclEntry::open()], &[])
            .unwrap()
            .is_empty());
    }
}
