//! Image references: `host[:port]/repo[:tag]`, and Docker Hub's short
//! names (`alpine` is `docker.io/library/alpine`), as docker reads them.

use super::Error;
use crate::oci::Digest;

/// Docker Hub's name in references and images.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key docker's `config.json` (and credential helpers) file Docker Hub's
/// credentials under.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

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

/// Checks a tag as docker does: 1 to 128 letters, digits, `.`, `_` and
/// `-`, not starting with `.` or `-`; it goes into a URL path as it is.
///
/// # Errors
/// Why it is not a tag.
pub fn check_tag(tag: &str) -> Result<(), &'static str> {
    if tag.is_empty() {
        return Err("the tag is empty");
    }
    if tag.len() > 128
        || tag.starts_with(['.', '-'])
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("the tag must be 1 to 128 letters, digits, `.`, `_` and `-`, not starting with `.` or `-` (as docker's)");
    }
    Ok(())
}

/// Why a reference with `user:password@` before its host is refused.
const USERINFO: &str = "credentials do not go in a reference: give them with `--username USER` and `--password-stdin`, `--creds`, or `docker login`";

/// Whether `text` (a reference, maybe after a `scheme://`) has user
/// information before its host, `user:password@host/…`: an `@` before
/// the first `/` that no digest follows (`alpine:3@sha256:…` is a tag and
/// a digest).
fn has_userinfo(text: &str) -> bool {
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .is_some_and(|(_, after)| !after.starts_with("sha256:") && !after.starts_with("sha512:"))
}

/// `text` with the user information before its host replaced, so that no
/// error shows a password given in a reference.
#[must_use]
pub fn without_userinfo(text: &str) -> String {
    if !has_userinfo(text) {
        return text.to_owned();
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, String::new()),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}<redacted>@{host}{path}")
}

/// The longest `host/repository` docker accepts.
const NAME_MAX: usize = 255;

/// Whether `part` is one component of a repository as docker's grammar has
/// it: `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
/// Written out (a dozen lines) rather than taken from a reference crate:
/// those bring an async client or a regex engine for one grammar rule.
fn is_path_component(part: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    bytes
        .split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&b| b == b'-'))
}

/// Checks `host[:port]` as docker's grammar has it: DNS labels (letters,
/// digits and inner `-`) joined by `.`, or an IPv6 literal in brackets,
/// then an optional port of 1 to 65535.
fn check_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("the registry host's IPv6 address has no closing `]`");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the registry host's `[…]` is not an IPv6 address");
        }
        match after {
            "" => ("", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return Err("the registry host has text after its `[…]` address"),
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.starts_with('[') && !name.split('.').all(label) {
        return Err("the registry host must be names of letters, digits and inner `-` joined by `.`, or `[IPv6]`");
    }
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || !(1..=65535).contains(&port.parse::<u32>().unwrap_or(0))
        {
            return Err("the registry port must be a number from 1 to 65535");
        }
    }
    Ok(())
}

impl Reference {
    /// Parses `host[:port]/repo[:tag]`. As docker decides, the first
    /// component is a host when it holds a `.` or `:` or is `localhost`;
    /// otherwise the reference is on Docker Hub (`docker.io`), where a
    /// one-component name is under `library/`.
    ///
    /// ```
    /// use nixlayer::registry::Reference;
    /// let r = Reference::parse("127.0.0.1:5000/team/app:1.0")?;
    /// assert_eq!((r.host.as_str(), r.repository.as_str(), r.tag.as_deref()),
    ///            ("127.0.0.1:5000", "team/app", Some("1.0")));
    /// let hub = Reference::parse("alpine:3")?;
    /// assert_eq!((hub.host.as_str(), hub.repository.as_str(), hub.api_host()),
    ///            ("docker.io", "library/alpine", "registry-1.docker.io"));
    /// # Ok::<(), nixlayer::registry::Error>(())
    /// ```
    ///
    /// # Errors
    /// When there is no host or no repository, or a digest reference (`@`).
    pub fn parse(reference: &str) -> Result<Self, Error> {
        let err = |reason| Error::Reference {
            reference: without_userinfo(reference),
            reason,
        };
        if has_userinfo(reference) {
            return Err(err(USERINFO));
        }
        // `http://host/…` would otherwise be read as host `http` with a
        // port that is not a number: the error would name the wrong part.
        if reference.contains("://") {
            return Err(err(
                "a reference has no scheme: write `host[:port]/repo[:tag]` (`--insecure` for a plain-HTTP registry)",
            ));
        }
        if reference.contains('@') {
            return Err(err("push by digest is not supported; give a tag"));
        }
        let (host, rest) = match reference.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest.to_owned())
            }
            // Docker Hub: `team/app`, or `alpine` (an official image).
            Some(_) => (DOCKER_HUB, reference.to_owned()),
            None => (DOCKER_HUB, format!("library/{reference}")),
        };
        let host = if host == "index.docker.io" {
            DOCKER_HUB
        } else {
            host
        };
        let rest = if host == DOCKER_HUB && !rest.contains('/') {
            format!("library/{rest}")
        } else {
            rest
        };
        if host.is_empty() {
            return Err(err("the registry host is empty"));
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
        check_host(host).map_err(err)?;
        let (repository, tag) = match rest.as_str().rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (rest.as_str(), None),
        };
        if repository.split('/').any(str::is_empty)
            || !repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(err(
                "the repository must be lowercase letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
        // Docker's grammar, checked here rather than by the registry: a
        // `..` or `.` component would be a path segment of every URL (a
        // registry answers 301 or 404 only after the whole build), and
        // `-a`, `a-`, `a..b` are names no registry or docker accepts.
        if !repository.split('/').all(is_path_component) {
            return Err(err(
                "each `/`-separated part of the repository must be lowercase letters and digits joined by one `.`, one or two `_`, or dashes (as docker's)",
            ));
        }
        if host.len() + 1 + repository.len() > NAME_MAX {
            return Err(err(
                "the name (registry host and repository) is longer than 255 characters (as docker's limit)",
            ));
        }
        if let Some(tag) = &tag {
            check_tag(tag).map_err(err)?;
        }
        Ok(Self {
            host: host.to_owned(),
            repository: repository.to_owned(),
            tag,
        })
    }

    /// The `host[:port]` the registry API answers on: Docker Hub's API
    /// host for `docker.io`, else the host as given.
    #[must_use]
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// Whether the host is a loopback one (`localhost`, `127.0.0.0/8`,
    /// `::1`): as docker, HTTPS is tried first and plain HTTP after it.
    #[must_use]
    pub fn is_local(&self) -> bool {
        let host = &*self.host;
        // `[v6]:port`, `[v6]`, `name:port`, `name`.
        let name = if let Some(v6) = host.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            host.rsplit_once(':').map_or(host, |(h, _)| h)
        };
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        name.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The scheme that marks a registry reference in a manifest's `base.image`.
pub const SCHEME: &str = "docker://";

/// Parses `docker://HOST/NAME[:TAG]@sha256:HEX` (without its scheme check:
/// `text` starts with [`SCHEME`]).
///
/// # Errors
/// What is wrong, and a hint, for a located manifest error.
pub fn parse_pinned(text: &str) -> Result<(Reference, Digest), (String, Option<String>)> {
    if has_userinfo(text) {
        return Err((
            format!("base image `{}`: {USERINFO}", without_userinfo(text)),
            None,
        ));
    }
    let rest = text.strip_prefix(SCHEME).unwrap_or(text);
    let Some((name, digest)) = rest.split_once('@') else {
        return Err((
            format!("base image `{text}` has no digest"),
            Some(
                "a registry base image is pinned by digest for reproducibility: append `@sha256:…` (e.g. from `docker buildx imagetools inspect` or `skopeo inspect`)"
                    .to_owned(),
            ),
        ));
    };
    let digest = Digest::parse(digest).ok_or_else(|| {
        (
            format!("`{digest}` in base image `{text}` is not a digest"),
            Some("write `sha256:` and 64 lowercase hex digits".to_owned()),
        )
    })?;
    let reference = Reference::parse(name).map_err(|e| (e.to_string(), None))?;
    Ok((reference, digest))
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
        // A password before the host is refused, and never shown.
        for with_password in [
            "bob:s3cret@127.0.0.1:5000/a:1",
            "https://bob:s3cret@reg.example/a",
            "docker://bob:s3cret@reg.example/a",
            "b@b:s3cret@reg.example/a",
            "bob:s3cret@reg.example",
        ] {
            let e = Reference::parse(with_password).unwrap_err().to_string();
            assert!(
                e.contains("credentials do not go in a reference") && !e.contains("s3cret"),
                "{e}"
            );
        }
        let (e, _) = parse_pinned(&format!(
            "docker://bob:s3cret@reg.example/a@sha256:{}",
            "0".repeat(64)
        ))
        .unwrap_err();
        assert!(
            e.contains("`docker://<redacted>@reg.example/a@sha256:")
                && e.contains("credentials do not go in a reference")
                && !e.contains("s3cret"),
            "{e}"
        );
        // A digest after a Docker Hub name is no user information.
        assert!(!has_userinfo(&format!("alpine@sha256:{}", "0".repeat(64))));
        assert!(parse_pinned(&format!("docker://alpine@sha256:{}", "0".repeat(64))).is_ok());
        assert!(Reference::parse("host.example?x=1/a").is_err());
        assert!(Reference::parse("host.example/a:t?x").is_err());
        // A URL is no reference, and the error says so (not "port").
        for url in [
            "http://127.0.0.1:5000/a",
            "https://reg.example/a:t",
            "docker://reg.example/a",
        ] {
            let e = Reference::parse(url).unwrap_err().to_string();
            assert!(e.contains("a reference has no scheme"), "{e}");
        }
        for local in [
            "127.0.0.1:5000/a",
            "127.8.9.10/a",
            "[::1]:5000/a",
            "LOCALHOST:1/a",
        ] {
            assert!(Reference::parse(local).unwrap().is_local(), "{local}");
        }
        for remote in ["128.0.0.1/a", "[::2]:5000/a", "localhost.example/a", "a/b"] {
            assert!(!Reference::parse(remote).unwrap().is_local(), "{remote}");
        }
    }

    #[test]
    fn repository_and_host_follow_dockers_grammar() {
        // Accepted as docker accepts them.
        for ok in [
            "127.0.0.1:5000/a/b:t",
            "127.0.0.1:5000/a.b/c_d/e__f/g-h/i---j",
            "reg.example.com/a0/9z",
            "[::1]:5000/a",
            "[::1]/a",
            "my-host.example:65535/a",
            "Host.Example/a",
        ] {
            assert!(Reference::parse(ok).is_ok(), "{ok}");
        }
        // Path segments, separators at the ends or doubled, bad hosts and
        // ports: refused before anything is built or sent.
        for bad in [
            "127.0.0.1:5000/a/../b:t",
            "127.0.0.1:5000/a/./b",
            "127.0.0.1:5000/a/.b",
            "127.0.0.1:5000/-a",
            "127.0.0.1:5000/a-",
            "127.0.0.1:5000/a..b",
            "127.0.0.1:5000/a___b",
            "127.0.0.1:5000/a_-b",
            "127.0.0.1:abc/a",
            "127.0.0.1:99999/a",
            "127.0.0.1:0/a",
            "127.0.0.1:/a",
            ":5000/a",
            "[::1/a",
            "[::1]x/a",
            "[nothost]:5000/a",
            "a..b.example/a",
            "-a.example/a",
            "a-.example/a",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        // 255 characters of `host/repository` at most, as docker's.
        let at_most = format!("reg.example/{}", "a".repeat(255 - 12));
        assert!(Reference::parse(&at_most).is_ok());
        assert!(Reference::parse(&format!("{at_most}a:t")).is_err());
    }

    #[test]
    fn docker_hub_names() {
        let parts = |r: &str| {
            let r = Reference::parse(r).unwrap();
            let api = r.api_host().to_owned();
            (r.host, r.repository, r.tag, api)
        };
        let hub = |repo: &str, tag: Option<&str>| {
            (
                DOCKER_HUB.to_owned(),
                repo.to_owned(),
                tag.map(str::to_owned),
                DOCKER_HUB_API.to_owned(),
            )
        };
        assert_eq!(parts("alpine"), hub("library/alpine", None));
        assert_eq!(parts("alpine:3.20"), hub("library/alpine", Some("3.20")));
        assert_eq!(parts("team/app:1"), hub("team/app", Some("1")));
        assert_eq!(parts("docker.io/alpine"), hub("library/alpine", None));
        assert_eq!(parts("index.docker.io/team/app"), hub("team/app", None));
        assert_eq!(
            parts("docker.io/library/alpine:3"),
            hub("library/alpine", Some("3"))
        );
        assert_eq!(parts("ghcr.io/o/a").3, "ghcr.io");
        assert!(Reference::parse("Alpine").is_err());
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("/a").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_keeps_urls_safe(text in "\\PC{0,80}") {
            if let Ok(r) = Reference::parse(&text) {
                // What goes into URLs: no path, query or user information.
                proptest::prop_assert!(!r.api_host().contains(['/', '?', '@', '#']));
                proptest::prop_assert!(!r.repository.contains(['?', '@', '#', ':']));
                proptest::prop_assert!(!r.repository.starts_with('/'));
                let _ = r.is_local();
            }
        }

        /// A password before the host never shows in an error, whatever
        /// follows it.
        #[test]
        fn a_password_in_a_reference_is_never_shown(
            scheme in "(|docker://|https://)",
            password in "[A-Za-z0-9]{0,4}s3cret[A-Za-z0-9]{0,4}",
            rest in "[a-z0-9.:/@_-]{0,30}",
        ) {
            let text = format!("{scheme}bob:{password}@{rest}");
            if let Err(e) = Reference::parse(&text) {
                proptest::prop_assert!(!e.to_string().contains("s3cret"), "{}", e);
            }
            if let Err((e, hint)) = parse_pinned(&text) {
                proptest::prop_assert!(!e.contains("s3cret"), "{}", e);
                proptest::prop_assert!(!hint.unwrap_or_default().contains("s3cret"));
            }
        }

        #[test]
        fn reference_like_text_parses_or_errs(
            text in "([a-z0-9.:-]{0,12}/)?[a-z0-9._/-]{0,20}(:[A-Za-z0-9._-]{0,8})?"
        ) {
            let _ = Reference::parse(&text);
        }
    }
}
