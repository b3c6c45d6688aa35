//! Znode path rules, exactly as ZooKeeper's `PathUtils.validatePath`:
//! absolute, no trailing slash, no empty, `.` or `..` component, and none of
//! the characters ZooKeeper refuses (NUL, U+0001–U+001F, U+007F–U+009F,
//! U+D800–U+F8FF, U+FFF0–U+FFFF, and, since Java sees them as surrogate
//! pairs, everything outside the Basic Multilingual Plane). A sequential
//! create is checked with its 10-digit suffix in place, as ZooKeeper's
//! server does, so `/a/` and `/a/.` are legal prefixes. Paths are also
//! bounded in length, so the cost of one request stays bounded.

/// Longest path accepted, in bytes (UTF-8). ZooKeeper bounds paths only by
/// its request size; 16 KiB leaves room for a 1 000-deep tree of
/// 15-character names while keeping one znode's key small.
pub const MAX_PATH_BYTES: usize = 16 * 1024;

/// What a sequential create's suffix looks like to the rules (any ten digits
/// validate alike).
const SEQUENTIAL_SUFFIX: &str = "0000000000";

/// Whether ZooKeeper refuses this character in a path (NUL aside).
fn forbidden(c: char) -> bool {
    matches!(c,
        '\u{1}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{e000}'..='\u{f8ff}'
        | '\u{fff0}'..='\u{ffff}'
        | '\u{10000}'..)
}

/// Checks a path; the error says what is wrong with it and where.
pub fn validate(path: &str, sequential: bool) -> Result<(), String> {
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path of {} bytes is longer than the limit of {MAX_PATH_BYTES} bytes",
            path.len()
        ));
    }
    if sequential {
        return check(&format!("{path}{SEQUENTIAL_SUFFIX}"), path);
    }
    check(path, path)
}

/// Checks `path`; errors quote `shown` (the path as the client sent it).
fn check(path: &str, shown: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if !path.starts_with('/') {
        return Err(format!("path {shown:?} is not absolute (must start with '/')"));
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(format!("path {shown:?} ends with '/'"));
    }
    for (i, c) in path.char_indices() {
        if c == '\0' {
            return Err(format!("path {shown:?} contains a NUL character at byte {i}"));
        }
        if forbidden(c) {
            return Err(format!(
                "path {shown:?} contains the character U+{:04X} at byte {i}, which is not allowed",
                c as u32
            ));
        }
    }
    for component in path[1..].split('/') {
        match component {
            "" => return Err(format!("path {shown:?} has an empty component")),
            "." | ".." => return Err(format!("path {shown:?} has a relative component {component:?}")),
            _ => {}
        }
    }
    Ok(())
}

/// The path a client means under its base path (ZooKeeper's chroot): the
/// path is checked first, so nothing it holds can escape the base
/// (`x` under `/app` is refused, not turned into `/appx`). An empty base or
/// `/` means none.
pub fn under_base(base: &str, path: &str, sequential: bool) -> Result<String, String> {
    validate(path, sequential)?;
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return Ok(path.to_string());
    }
    validate(base, false).map_err(|e| format!("base path: {e}"))?;
    let joined = if path == "/" {
        base.to_string()
    } else {
        format!("{base}{path}")
    };
    if joined.len() > MAX_PATH_BYTES {
        return Err(format!(
            "path of {} bytes under the base path is longer than the limit of {MAX_PATH_BYTES} bytes",
            joined.len()
        ));
    }
    Ok(joined)
}

/// A full path as the client sees it under its base path: the base is
/// stripped (`/app/x` under `/app` is `/x`; `/app` itself is `/`). A path
/// outside the base comes back unchanged.
pub fn strip_base<'a>(base: &str, path: &'a str) -> std::borrow::Cow<'a, str> {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        return path.into();
    }
    match path.strip_prefix(base) {
        Some("") => "/".into(),
        Some(rest) if rest.starts_with('/') => rest.into(),
        _ => path.into(),
    }
}

/// The parent of a valid path that is not the root, and the last component.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_zookeeper_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a.b/c..d",
            "/zookeeper",
            "/...",
            "/é",
            "/\u{ffef}",
            "/日本",
        ] {
            assert!(validate(p, false).is_ok(), "{p}");
        }
        for p in ["/a/", "/", "/a/.", "/a/..", "/a/b"] {
            assert!(validate(p, true).is_ok(), "sequential {p}");
        }
    }

    #[test]
    fn refuses_bad_paths() {
        for p in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/.", "/a\0b"] {
            assert!(validate(p, false).is_err(), "{p:?}");
        }
        for p in ["/a//", "a", "//"] {
            assert!(validate(p, true).is_err(), "sequential {p:?}");
        }
    }

    #[test]
    fn refuses_each_forbidden_range_at_its_edges() {
        for c in [
            '\u{1}',
            '\u{1f}',
            '\u{7f}',
            '\u{9f}',
            '\u{e000}',
            '\u{f8ff}',
            '\u{fff0}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
            '\n',
        ] {
            let p = format!("/a{c}b");
            let e = validate(&p, false).expect_err(&p);
            assert!(e.contains(&format!("U+{:04X}", c as u32)), "{e}");
            assert!(validate(&p, true).is_err(), "sequential {p:?}");
        }
        for c in ['\u{20}', '\u{7e}', '\u{a0}', '\u{d7ff}', '\u{f900}', '\u{ffef}'] {
            assert!(validate(&format!("/a{c}b"), false).is_ok(), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn bounds_the_length() {
        let deep = "/a".repeat(MAX_PATH_BYTES / 2);
        assert!(validate(&deep, false).is_ok());
        let e = validate(&format!("{deep}/b"), false).unwrap_err();
        assert!(e.contains(&MAX_PATH_BYTES.to_string()), "{e}");
    }

    #[test]
    fn a_base_path_can_not_be_escaped() {
        assert_eq!(under_base("/app", "/x", false).unwrap(), "/app/x");
        assert_eq!(under_base("/app/", "/", false).unwrap(), "/app");
        assert_eq!(under_base("", "/x", false).unwrap(), "/x");
        assert_eq!(under_base("/app", "/q-", true).unwrap(), "/app/q-");
        assert!(under_base("/app", "x", false).is_err(), "no /appx");
        assert!(under_base("/app", "/../x", false).is_err());
        assert!(under_base("app", "/x", false).is_err());
        assert_eq!(strip_base("/app", "/app/x"), "/x");
        assert_eq!(strip_base("/app", "/app"), "/");
        assert_eq!(strip_base("/app", "/apple"), "/apple");
        assert_eq!(strip_base("/", "/x"), "/x");
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
