//! The base path (ZooKeeper's chroot): every path the application names is
//! taken under it, and every path the cluster returns has it stripped. The
//! joining is `ensemble_proto::path::under_base`, which checks the path
//! first, so no path can escape the base (`x` under `/app` is refused, not
//! turned into `/appx`).

use std::borrow::Cow;

use ensemble_proto::path;

use crate::error::{Error, Result};

/// A client's base path; empty means none.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chroot {
    base: String,
}

impl Chroot {
    /// Checks the base path once, when the client is made.
    pub fn new(base: &str) -> Result<Chroot> {
        let trimmed = base.trim_end_matches('/');
        if !trimmed.is_empty() {
            path::validate(trimmed, false)
                .map_err(|e| Error::BadArguments(format!("base path {base:?}: {e}")))?;
        }
        Ok(Chroot {
            base: trimmed.to_string(),
        })
    }

    /// The full path of `p`, or `BadArguments` before anything is sent.
    ///
    /// Without a base the path goes to the cluster as given, and the
    /// cluster's own checks answer for it (as they always have); under a
    /// base the client must check it itself, since a path that is not
    /// absolute would otherwise land outside the base.
    pub fn full(&self, p: &str, sequential: bool) -> Result<String> {
        if self.base.is_empty() {
            return Ok(p.to_string());
        }
        path::under_base(&self.base, p, sequential).map_err(Error::BadArguments)
    }

    /// A path the cluster returned, as the application sees it.
    pub fn strip(&self, p: String) -> String {
        match path::strip_base(&self.base, &p) {
            Cow::Borrowed(same) if same.len() == p.len() => p,
            stripped => stripped.into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_absolute_does_not_escape_the_base() {
        let app = Chroot::new("/app").unwrap();
        for bad in ["x", "", "/../x", "/x/", "//x", "/x/./y"] {
            assert!(
                matches!(app.full(bad, false), Err(Error::BadArguments(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(app.full("x", true), Err(Error::BadArguments(_))));
        assert_eq!(app.full("/x", false).unwrap(), "/app/x");
        assert_eq!(app.full("/", false).unwrap(), "/app");
        assert_eq!(app.full("/q-", true).unwrap(), "/app/q-");
        assert_eq!(app.full("/q/", true).unwrap(), "/app/q/");
        assert_eq!(app.strip("/app/x0000000001".into()), "/x0000000001");
        assert_eq!(app.strip("/app".into()), "/");
        assert_eq!(app.strip("/apple".into()), "/apple", "not under the base");
    }

    #[test]
    fn no_base_leaves_paths_to_the_cluster() {
        for base in ["", "/"] {
            let none = Chroot::new(base).unwrap();
            assert_eq!(none.full("x", false).unwrap(), "x", "the cluster refuses it");
            assert_eq!(none.strip("/x".into()), "/x");
        }
    }

    #[test]
    fn the_base_itself_must_be_a_valid_path() {
        for bad in ["app", "/a//b", "/a/../b"] {
            assert!(matches!(Chroot::new(bad), Err(Error::BadArguments(_))), "{bad:?}");
        }
        assert!(Chroot::new("/app/").is_ok());
    }
}
