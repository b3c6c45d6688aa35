//! Znode path rules, as ZooKeeper's: absolute, no trailing slash, no empty,
//! `.` or `..` component, no NUL. A sequential create may end in `/`.

/// Checks a path; the error says what is wrong with it.
pub fn validate(path: &str, sequential: bool) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not absolute (must start with '/')"));
    }
    if path.contains('\0') {
        return Err(format!("path {path:?} contains a NUL character"));
    }
    if path == "/" {
        return Ok(());
    }
    let body = if sequential && path.ends_with('/') {
        &path[1..path.len() - 1]
    } else {
        if path.ends_with('/') {
            return Err(format!("path {path:?} ends with '/'"));
        }
        &path[1..]
    };
    if body.is_empty() {
        return Ok(());
    }
    for component in body.split('/') {
        match component {
            "" => return Err(format!("path {path:?} has an empty component")),
            "." | ".." => return Err(format!("path {path:?} has a relative component {component:?}")),
            _ => {}
        }
    }
    Ok(())
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
        for p in ["/", "/a", "/a/b", "/a.b/c..d", "/zookeeper"] {
            assert!(validate(p, false).is_ok(), "{p}");
        }
        assert!(validate("/a/", true).is_ok());
        assert!(validate("/", true).is_ok());
    }

    #[test]
    fn refuses_bad_paths() {
        for p in ["", "a", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/a\0b"] {
            assert!(validate(p, false).is_err(), "{p:?}");
        }
        assert!(validate("/a//", true).is_err());
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
