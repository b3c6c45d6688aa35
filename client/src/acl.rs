//! ACL and identity types of the client API, in ZooKeeper's model: an
//! [`Acl`] entry says who (`scheme:id`) may do what (permission bits), and
//! prints and parses as `scheme:id:perms` (`world:anyone:cdrwa`). The rules
//! (which schemes and ids are valid) are shared with the server
//! (`ensemble_proto::acl`), so the client refuses what the server would.

use std::fmt;
use std::str::FromStr;

pub use ensemble_proto::acl::{ADMIN, ALL, CREATE, DELETE, READ, WRITE};
use ensemble_proto::v1 as pb;

use crate::error::Error;

/// One entry of a znode's ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    /// `world`, `auth`, `digest` or `ip`.
    pub scheme: String,
    /// Whom the scheme means: `anyone`, a user name, an address or block.
    pub id: String,
    /// Permission bits ([`READ`], [`WRITE`], [`CREATE`], [`DELETE`], [`ADMIN`]).
    pub perms: u32,
}

impl Acl {
    /// An entry; checked when parsed or when the server receives it.
    pub fn new(scheme: &str, id: &str, perms: u32) -> Acl {
        Acl {
            scheme: scheme.to_string(),
            id: id.to_string(),
            perms,
        }
    }

    /// `world:anyone` with every permission: what a znode gets by default.
    pub fn open() -> Acl {
        Acl::new("world", "anyone", ALL)
    }

    /// `auth` with these permissions: the creating session's identities.
    pub fn creator(perms: u32) -> Acl {
        Acl::new("auth", "", perms)
    }

    /// Parses a comma-separated list (`digest:alice:cdrwa,world:anyone:r`).
    pub fn parse_list(text: &str) -> Result<Vec<Acl>, Error> {
        text.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|list: Vec<Acl>| {
                if list.is_empty() {
                    Err(invalid(format!("ACL {text:?} has no entries")))
                } else {
                    Ok(list)
                }
            })
    }
}

fn invalid(message: String) -> Error {
    Error::Server {
        code: crate::ErrorCode::InvalidAcl,
        message: format!("INVALID_ACL: {message}"),
        op_index: None,
    }
}

impl FromStr for Acl {
    type Err = Error;

    /// `scheme:id:perms`; a malformed entry is `INVALID_ACL`, as the
    /// server would answer.
    fn from_str(s: &str) -> Result<Acl, Error> {
        let (scheme, id, perms) = ensemble_proto::acl::parse_entry(s).map_err(invalid)?;
        Ok(Acl { scheme, id, perms })
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ensemble_proto::acl::format_entry(
            &self.scheme,
            &self.id,
            self.perms,
        ))
    }
}

/// One identity of a session, as ACL checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `digest` for a user, `super` for the configured super user, `ip`
    /// for the address the session's node sees.
    pub scheme: String,
    /// The user name or address.
    pub id: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme, self.id)
    }
}

impl From<&Acl> for pb::Acl {
    fn from(a: &Acl) -> pb::Acl {
        pb::Acl {
            perms: a.perms,
            scheme: a.scheme.clone(),
            id: a.id.clone(),
        }
    }
}

impl From<pb::Acl> for Acl {
    fn from(a: pb::Acl) -> Acl {
        Acl {
            scheme: a.scheme,
            id: a.id,
            perms: a.perms,
        }
    }
}

impl From<pb::Identity> for Identity {
    fn from(i: pb::Identity) -> Identity {
        Identity {
            scheme: i.scheme,
            id: i.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_prints_and_refuses_as_the_server_does() {
        let list = Acl::parse_list("digest:alice:cdrwa, world:anyone:r").unwrap();
        assert_eq!(
            list,
            vec![
                Acl::new("digest", "alice", ALL),
                Acl::new("world", "anyone", READ)
            ]
        );
        assert_eq!(list[1].to_string(), "world:anyone:r");
        for bad in ["", "world:anyone:", "kerberos:bob:r", "ip:nowhere:r"] {
            let e = Acl::parse_list(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidAcl, "{bad}: {e}");
        }
    }
}
