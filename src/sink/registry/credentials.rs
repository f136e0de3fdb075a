//! Registry credentials: `USER:PASS`, docker's `config.json`, and how they
//! become an `Authorization` header. Their `Debug` never shows the password.

use std::fmt;
use std::path::Path;

use base64::Engine as _;

use super::Error;

/// Credentials for the registry. `Debug` shows the user, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &REDACTED)
            .finish()
    }
}

/// What `Debug` shows in place of a secret.
pub(super) const REDACTED: Redacted = Redacted;

/// Shows as `<redacted>` in `Debug` output.
#[derive(Clone, Copy)]
pub(super) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Credentials {
    /// Parses `USER:PASS`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (user, password) = text.split_once(':')?;
        Some(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The credentials for `host` in a docker `config.json`
    /// (`auths.<host>.auth`, base64 of `USER:PASS`); `None` when there are none.
    ///
    /// # Errors
    /// When the file exists but is not valid. The error never quotes the
    /// file's content.
    pub fn from_docker_config(path: &Path, host: &str) -> Result<Option<Self>, Error> {
        let bad = |reason: String| Error::DockerConfig {
            path: path.to_owned(),
            reason,
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        // serde_json's errors name a line and column, never the text.
        let doc: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let auths = &doc["auths"];
        let entry = [
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
        .iter()
        .find_map(|k| auths.get(k).and_then(|e| e.get("auth")?.as_str()));
        let Some(auth) = entry else {
            return Ok(None);
        };
        // base64's error would quote a byte of the secret: not shown.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad(format!("`auths.{host}.auth` is not base64")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("`auths.{host}.auth` is not UTF-8")))?;
        Self::parse(&decoded)
            .map(Some)
            .ok_or_else(|| bad(format!("`auths.{host}.auth` is not `USER:PASS`")))
    }

    /// The `Authorization` value for basic auth.
    pub(super) fn basic(&self) -> String {
        format!("Basic {}", self.basic_token())
    }

    /// base64 of `USER:PASS`, as in the header.
    pub(super) fn basic_token(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"reg.example.com":{"auth":"dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let c = Credentials::from_docker_config(&path, "reg.example.com")
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("user", "pass"));
        assert!(Credentials::from_docker_config(&path, "other")
            .unwrap()
            .is_none());
        assert!(
            Credentials::from_docker_config(&dir.path().join("none"), "x")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn debug_and_errors_show_no_password() {
        let c = Credentials::parse("someone:hunter2-secret").unwrap();
        let debug = format!("{c:?} {:?}", Some(c.clone()));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("someone"), "{debug}");

        // A config whose auth is not base64 (its second half is the secret).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"h.example":{"auth":"dXNl!hunter2"}}}"#).unwrap();
        let e = Credentials::from_docker_config(&path, "h.example").unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains('!'),
            "{shown}"
        );
    }
}
