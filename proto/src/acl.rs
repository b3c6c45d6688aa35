//! ACLs as ZooKeeper spells them, shared by the server (which checks them)
//! and the client and CLI (which read and write them): permission bits,
//! the `scheme:id:perms` text form (`world:anyone:cdrwa`), which schemes
//! and ids are valid, and how an `ip` id matches an address.

use std::net::IpAddr;

/// May read the data and list the children.
pub const READ: u32 = 1;
/// May set the data.
pub const WRITE: u32 = 2;
/// May create children.
pub const CREATE: u32 = 4;
/// May delete children.
pub const DELETE: u32 = 8;
/// May read and set the ACL.
pub const ADMIN: u32 = 16;
/// Every permission.
pub const ALL: u32 = READ | WRITE | CREATE | DELETE | ADMIN;

/// The letters of the text form, in ZooKeeper's order (`cdrwa`).
const LETTERS: [(char, u32); 5] = [
    ('c', CREATE),
    ('d', DELETE),
    ('r', READ),
    ('w', WRITE),
    ('a', ADMIN),
];

/// Most entries one ACL may have: checking a request costs entries ×
/// identities, so both are bounded.
pub const MAX_ENTRIES: usize = 64;

/// Longest `id` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// The schemes an ACL entry may name.
pub const SCHEMES: [&str; 4] = ["world", "auth", "digest", "ip"];

/// Permissions as letters: `cdrwa` for all, in ZooKeeper's order.
pub fn perms_to_string(perms: u32) -> String {
    LETTERS
        .iter()
        .filter(|(_, bit)| perms & bit != 0)
        .map(|(c, _)| *c)
        .collect()
}

/// The name of one permission bit, for error messages (`CREATE`).
pub fn perm_name(perm: u32) -> &'static str {
    match perm {
        READ => "READ",
        WRITE => "WRITE",
        CREATE => "CREATE",
        DELETE => "DELETE",
        ADMIN => "ADMIN",
        _ => "READ or ADMIN",
    }
}

/// Parses permission letters (`cdrwa`, any order, each at most once).
pub fn parse_perms(text: &str) -> Result<u32, String> {
    let mut perms = 0;
    for c in text.chars() {
        let bit = LETTERS
            .iter()
            .find(|(l, _)| *l == c)
            .map(|(_, b)| *b)
            .ok_or_else(|| format!("permission {c:?} is unknown (use the letters of cdrwa)"))?;
        if perms & bit != 0 {
            return Err(format!("permission {c:?} is given twice"));
        }
        perms |= bit;
    }
    if perms == 0 {
        return Err("the entry grants no permission".into());
    }
    Ok(perms)
}

/// Splits one entry of the text form, `scheme:id:perms`, into its parts.
/// The id may itself hold colons (a digest's `user:hash`, an IPv6 address):
/// the scheme ends at the first colon, the permissions start after the last.
pub fn parse_entry(text: &str) -> Result<(String, String, u32), String> {
    let text = text.trim();
    let (scheme, rest) = text
        .split_once(':')
        .ok_or_else(|| format!("ACL {text:?} is not scheme:id:perms"))?;
    let (id, perms) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("ACL {text:?} is not scheme:id:perms"))?;
    let perms = parse_perms(perms).map_err(|e| format!("ACL {text:?}: {e}"))?;
    validate(scheme, id, perms)?;
    Ok((scheme.to_string(), id.to_string(), perms))
}

/// The text form of one entry.
pub fn format_entry(scheme: &str, id: &str, perms: u32) -> String {
    format!("{scheme}:{id}:{}", perms_to_string(perms))
}

/// Whether an entry is valid: a known scheme, an id that scheme accepts,
/// and at least one permission and no unknown bit. The error says which.
pub fn validate(scheme: &str, id: &str, perms: u32) -> Result<(), String> {
    let entry = || format!("{scheme}:{id}");
    if perms == 0 {
        return Err(format!("ACL {} grants no permission", entry()));
    }
    if perms & !ALL != 0 {
        return Err(format!(
            "ACL {} has unknown permission bits {:#x}",
            entry(),
            perms & !ALL
        ));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "ACL id of scheme {scheme} is {} bytes; the limit is {MAX_ID_BYTES}",
            id.len()
        ));
    }
    match scheme {
        "world" if id == "anyone" => Ok(()),
        "world" => Err(format!("ACL {}: the world scheme's only id is anyone", entry())),
        // ZooKeeper ignores the id of `auth` (usually empty).
        "auth" => Ok(()),
        "digest" => {
            let (user, hash) = match id.split_once(':') {
                Some((u, h)) => (u, Some(h)),
                None => (id, None),
            };
            if !valid_user(user) {
                return Err(format!(
                    "ACL {}: a digest id is a user name (letters, digits, . _ -), optionally :hash",
                    entry()
                ));
            }
            match hash {
                Some(h) if h.is_empty() || h.contains(':') => {
                    Err(format!("ACL {}: the digest hash is malformed", entry()))
                }
                _ => Ok(()),
            }
        }
        "ip" => parse_cidr(id)
            .map(drop)
            .map_err(|e| format!("ACL {}: {e}", entry())),
        other => Err(format!(
            "ACL scheme {other:?} is unknown (known: {})",
            SCHEMES.join(", ")
        )),
    }
}

/// Whether a user name is acceptable: what a users file and a digest id
/// may name.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// An `ip` id: an address (`10.0.0.1`) or a block (`10.0.0.0/8`, `fd00::/8`).
pub fn parse_cidr(id: &str) -> Result<(IpAddr, u8), String> {
    let (addr, bits) = match id.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (id, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("prefix length {b:?} is not 0..={max}"))?,
    };
    Ok((addr, bits))
}

/// Whether `addr` lies in the block an `ip` id names (an IPv4 address
/// seen as IPv6-mapped counts as IPv4).
pub fn ip_matches(id: &str, addr: IpAddr) -> bool {
    let Ok((net, bits)) = parse_cidr(id) else {
        return false;
    };
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
        (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
        _ => false,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (full, rest) = ((bits / 8) as usize, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_and_names_what_is_wrong() {
        assert_eq!(
            parse_entry("world:anyone:cdrwa"),
            Ok(("world".into(), "anyone".into(), ALL))
        );
        assert_eq!(
            parse_entry("digest:alice:Xy+/a=:rw").map(|e| e.2),
            Ok(READ | WRITE)
        );
        assert_eq!(parse_entry("ip:fd00::/8:r").map(|e| e.1), Ok("fd00::/8".into()));
        assert_eq!(format_entry("world", "anyone", ALL), "world:anyone:cdrwa");
        assert_eq!(perms_to_string(READ | ADMIN), "ra");
        for (bad, why) in [
            ("world:anyone", "scheme:id:perms"),
            ("world:anyone:", "grants no permission"),
            ("world:someone:r", "only id is anyone"),
            ("ldap:bob:r", "unknown"),
            ("digest::r", "user name"),
            ("digest:a b:r", "user name"),
            ("ip:10.0.0.300:r", "not an IP address"),
            ("ip:10.0.0.0/33:r", "prefix length"),
            ("world:anyone:rx", "unknown"),
            ("world:anyone:rr", "twice"),
            ("nonsense", "scheme:id:perms"),
        ] {
            let e = parse_entry(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(validate("world", "anyone", 0).is_err());
        assert!(validate("world", "anyone", 64).is_err());
    }

    #[test]
    fn an_ip_id_matches_its_block() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_matches("127.0.0.1", a("127.0.0.1")));
        assert!(!ip_matches("127.0.0.1", a("127.0.0.2")));
        assert!(ip_matches("10.1.0.0/16", a("10.1.200.3")));
        assert!(!ip_matches("10.1.0.0/16", a("10.2.0.1")));
        assert!(ip_matches("10.0.0.0/12", a("10.15.0.1")));
        assert!(!ip_matches("10.0.0.0/12", a("10.16.0.1")));
        assert!(ip_matches("0.0.0.0/0", a("192.168.1.1")));
        assert!(ip_matches("127.0.0.1", a("::ffff:127.0.0.1")));
        assert!(ip_matches("fd00::/8", a("fd12::1")));
        assert!(!ip_matches("fd00::/8", a("127.0.0.1")));
    }
}
