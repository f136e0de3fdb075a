//! Image references: `host[:port]/repo[:tag]`.

use super::Error;

/// A parsed `host[:port]/repo[:tag]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub host: String,
    /// The repository, `team/app`.
    pub repository: String,
    /// The tag, when given.
    pub tag: Option<String>,
}

impl Reference {
    /// Parses `host[:port]/repo[:tag]`; the host is required (it must hold
    /// a `.` or `:` or be `localhost`, as docker decides).
    ///
    /// ```
    /// use nixlayer::sink::registry::Reference;
    /// let r = Reference::parse("127.0.0.1:5000/team/app:1.0")?;
    /// assert_eq!((r.host.as_str(), r.repository.as_str(), r.tag.as_deref()),
    ///            ("127.0.0.1:5000", "team/app", Some("1.0")));
    /// assert!(Reference::parse("team/app").is_err());
    /// # Ok::<(), nixlayer::sink::registry::Error>(())
    /// ```
    ///
    /// # Errors
    /// When there is no host or no repository, or a digest reference (`@`).
    pub fn parse(reference: &str) -> Result<Self, Error> {
        let err = |reason| Error::Reference {
            reference: reference.to_owned(),
            reason,
        };
        if reference.contains('@') {
            return Err(err("push by digest is not supported; give a tag"));
        }
        let (host, rest) = reference
            .split_once('/')
            .ok_or_else(|| err("it names no registry host (`host[:port]/repo[:tag]`)"))?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(err(
                "its first component is not a registry host (`host[:port]/repo[:tag]`)",
            ));
        }
        // The host goes into URLs as it is: only the characters of a host
        // name, an IPv6 literal and a port, so it cannot add a path, a
        // query or user information to them.
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(err("the registry host holds characters a host name cannot"));
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (rest, None),
        };
        if repository.is_empty()
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(err(
                "the repository must be lowercase letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        if tag.as_deref() == Some("") {
            return Err(err("the tag is empty"));
        }
        if let Some(tag) = &tag {
            if !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(err(
                    "the tag must be letters, digits, `.`, `_` and `-` (as docker's)",
                ));
            }
        }
        Ok(Self {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag,
        })
    }

    /// Whether plain HTTP is used by default: loopback hosts.
    #[must_use]
    pub fn is_local(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(&*self.host, |(h, _)| h);
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!((r.repository.as_str(), r.tag.as_deref()), ("app", None));
        assert!(r.is_local());
        let r = Reference::parse("registry.example.com:443/a/b:v1").unwrap();
        assert!(!r.is_local());
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(Reference::parse("127.0.0.1:5000/App").is_err());
        assert!(Reference::parse("127.0.0.1:5000/a@sha256:00").is_err());
        assert!(Reference::parse("user:pw@host.example/a").is_err());
        assert!(Reference::parse("host.example?x=1/a").is_err());
        assert!(Reference::parse("host.example/a:t?x").is_err());
    }
}
