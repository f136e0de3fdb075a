//! Registry credentials: `USER:PASS`, docker's `config.json` (`auths`,
//! `identitytoken`, `credHelpers`, `credsStore`), and how they become an
//! `Authorization` header. Their `Debug` never shows the password.
//!
//! A credential helper is run as docker runs it: `docker-credential-NAME
//! get` found on `PATH`, the server's key on stdin, JSON
//! `{"Username", "Secret"}` on stdout. Its stdout is never quoted in an
//! error (it holds the secret); it is bounded in time and size.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::reference::{DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_CONFIG_KEY};
use super::Error;

/// The user name docker gives credentials that are an identity (OAuth2
/// refresh) token rather than a password, in `config.json` and from
/// credential helpers.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// The most of a docker `config.json` or podman `auth.json` that is read
/// (real ones are a few KiB).
const CONFIG_LIMIT: u64 = 4 << 20;

/// How long a credential helper may run.
const HELPER_DEADLINE: Duration = Duration::from_secs(30);
/// The most of a helper's answer that is read.
const HELPER_OUTPUT_LIMIT: u64 = 64 << 10;

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
pub(crate) const REDACTED: Redacted = Redacted;

/// Shows as `<redacted>` in `Debug` output.
#[derive(Clone, Copy)]
pub(crate) struct Redacted;

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

    /// An identity (OAuth2 refresh) token, as docker keeps one: user
    /// [`IDENTITY_TOKEN_USER`], the token as the password.
    #[must_use]
    pub fn identity_token(token: &str) -> Self {
        Self {
            user: IDENTITY_TOKEN_USER.to_owned(),
            password: token.to_owned(),
        }
    }

    /// The identity token these credentials are, if they are one.
    #[must_use]
    pub fn as_identity_token(&self) -> Option<&str> {
        (self.user == IDENTITY_TOKEN_USER).then_some(self.password.as_str())
    }

    /// The credentials for `repository` on `host` in a docker
    /// `config.json` or a podman `auth.json`: from the helper
    /// `credHelpers.<host>` names, else from `credsStore`'s helper, else
    /// `auths` (`auth`, base64 of `USER:PASS`, or `identitytoken`) under
    /// the most specific key of containers-auth.json(5) — the repository
    /// (`host/team/app`), each namespace above it (`host/team`), then the
    /// registry (`host`, or a key docker files it under); `None` when
    /// there are none. Docker Hub (`docker.io`) is looked up under
    /// `https://index.docker.io/v1/`, its namespaces under `docker.io/…`.
    ///
    /// # Errors
    /// When the file exists but is not valid, or a helper fails. The error
    /// never quotes the file's content or a helper's answer.
    pub fn from_docker_config(
        path: &Path,
        host: &str,
        repository: &str,
    ) -> Result<Option<Self>, Error> {
        let bad = |reason: String| Error::DockerConfig {
            path: path.to_owned(),
            reason,
        };
        // Bounded, and a FIFO is not waited on: `/dev/zero` or a pipe
        // nobody writes to in its place must not grow or hang the push.
        let text = match crate::input::read_bounded(path, CONFIG_LIMIT) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
        };
        // serde_json's errors name a line and column, never the text.
        let doc: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        check_shape(&doc).map_err(bad)?;
        let keys = config_keys(host);
        // The key docker gives helpers for this host.
        let server = keys[0].as_str();
        let helper = keys
            .iter()
            .find_map(|k| doc["credHelpers"].get(k).and_then(|v| v.as_str()))
            .or_else(|| doc["credsStore"].as_str())
            .filter(|name| !name.is_empty());
        if let Some(name) = helper {
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad(format!(
                    "the credential helper name `{}` is not a plain name",
                    name.chars().take(64).collect::<String>()
                )));
            }
            let program = format!("docker-credential-{name}");
            if let Some(found) =
                run_helper(Path::new(&program), server).map_err(|reason| Error::DockerConfig {
                    path: path.to_owned(),
                    // Named with the registry it was asked about: the
                    // same `credsStore` serves every registry of a push.
                    reason: format!("credential helper `{program}` for `{server}`: {reason}"),
                })?
            {
                return Ok(Some(found));
            }
        }
        let auths = &doc["auths"];
        // podman's per-repository keys, most specific first, each only as
        // an exact key (as containers/image matches them).
        let scoped = || {
            namespace_keys(host, repository)
                .into_iter()
                .find_map(|k| auths.as_object()?.get_key_value(&k))
                .map(|(k, e)| (k.as_str(), e))
        };
        // Then an exact registry key; else, as docker's file store does,
        // any key whose host part (after a scheme, before a path) is the
        // host: `https://reg.example/`, `http://reg.example/v2/`,
        // `reg.example/`. A key without a scheme and with a path is a
        // podman namespace (`reg.example/team`): it is for that namespace
        // alone, never for the whole registry. The map is sorted, so the
        // same file picks the same entry.
        let by_host = || {
            auths.as_object()?.iter().find_map(|(k, e)| {
                let name = config_key_host(k);
                let namespace = !k.contains("://")
                    && k.split_once('/').is_some_and(|(_, path)| !path.is_empty());
                (!namespace && keys.iter().any(|key| !key.contains("://") && *key == name))
                    .then_some((k.as_str(), e))
            })
        };
        let Some((key, entry)) = scoped()
            .or_else(|| {
                keys.iter()
                    .find_map(|k| auths.get(k).map(|e| (k.as_str(), e)))
            })
            .or_else(by_host)
        else {
            return Ok(None);
        };
        if let Some(token) = entry
            .get("identitytoken")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Self::identity_token(token)));
        }
        let text = |field: &str| {
            entry
                .get(field)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let Some(auth) = text("auth") else {
            // docker reads `username` and `password` fields too, when
            // there is no `auth` (some tools write them so).
            return Ok(text("password").map(|password| Self {
                user: text("username").unwrap_or("").to_owned(),
                password: password.to_owned(),
            }));
        };
        let host = key;
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

    /// The credentials for `host` in the first of `files` (see
    /// [`credential_files`]) that has some, each read as
    /// [`Credentials::from_docker_config`] reads it; a missing file has none.
    ///
    /// # Errors
    /// As [`Credentials::from_docker_config`], for the first file that is
    /// not valid or whose helper fails.
    pub fn from_config_files(
        files: &[std::path::PathBuf],
        host: &str,
        repository: &str,
    ) -> Result<Option<Self>, Error> {
        for file in files {
            if let Some(found) = Self::from_docker_config(file, host, repository)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The `Authorization` value for basic auth.
    pub(crate) fn basic(&self) -> String {
        format!("Basic {}", self.basic_token())
    }

    /// base64 of `USER:PASS`, as in the header.
    pub(crate) fn basic_token(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// Where docker reads its `config.json`: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`. An empty variable counts as unset, as
/// docker takes it (an empty `DOCKER_CONFIG` would otherwise be a
/// `config.json` in whatever directory the command runs in).
#[must_use]
pub fn docker_config_path() -> Option<std::path::PathBuf> {
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    var("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// The files credentials are looked up in, first found wins: docker's
/// `config.json` ([`docker_config_path`]), then the `auth.json` that
/// `podman login` and `skopeo login` write (same format): the file
/// `REGISTRY_AUTH_FILE` names, else `$XDG_RUNTIME_DIR/containers/auth.json`
/// and `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/…`), as
/// containers-auth.json(5) reads them.
#[must_use]
pub fn credential_files() -> Vec<std::path::PathBuf> {
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut files: Vec<std::path::PathBuf> = docker_config_path().into_iter().collect();
    if let Some(file) = var("REGISTRY_AUTH_FILE") {
        files.push(file.into());
        return files;
    }
    if let Some(run) = var("XDG_RUNTIME_DIR") {
        files.push(Path::new(&run).join("containers/auth.json"));
    }
    if let Some(config) = var("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".config")))
    {
        files.push(config.join("containers/auth.json"));
    }
    files
}

/// The keys `config.json` may file `host`'s credentials under, the one
/// docker gives helpers first.
fn config_keys(host: &str) -> Vec<String> {
    if [DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"].contains(&host) {
        return [
            DOCKER_HUB_CONFIG_KEY,
            "index.docker.io",
            "https://index.docker.io",
            DOCKER_HUB,
            DOCKER_HUB_API,
        ]
        .map(str::to_owned)
        .to_vec();
    }
    vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
        format!("https://{host}/v2/"),
    ]
}

/// Docker (and containers/image for podman's `auth.json`) decode the
/// credential parts of the file into typed fields and refuse the whole file
/// when one has another type: `auths` an object of objects whose fields
/// are strings, `credHelpers` an object of strings, `credsStore` a
/// string (`null` is as absent, as Go decodes it). Refused here too,
/// rather than an entry of the wrong type being passed over silently (a
/// push then going anonymous). The reason names the key, never a value.
fn check_shape(doc: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    // Keys are registry names, not secrets; a long one is cut.
    let name = |key: &str| {
        let mut shown: String = key.chars().take(100).collect();
        if shown.len() < key.len() {
            shown.push('…');
        }
        shown
    };
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let Some(doc) = doc.as_object() else {
        return Err(format!("the file is {}, not a JSON object", kind(doc)));
    };
    let object = |field: &str| match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(format!("`{field}` is {}, not an object", kind(other))),
    };
    for (key, entry) in object("auths")?.into_iter().flatten() {
        let fields = match entry {
            Value::Null => continue,
            Value::Object(fields) => fields,
            other => {
                return Err(format!(
                    "`auths.{}` is {}, not an object",
                    name(key),
                    kind(other)
                ))
            }
        };
        for field in [
            "auth",
            "username",
            "password",
            "identitytoken",
            "registrytoken",
            "email",
            "serveraddress",
        ] {
            if let Some(v) = fields.get(field).filter(|v| !v.is_null() && !v.is_string()) {
                return Err(format!(
                    "`auths.{}.{field}` is {}, not a string",
                    name(key),
                    kind(v)
                ));
            }
        }
    }
    for (key, v) in object("credHelpers")?.into_iter().flatten() {
        if !v.is_null() && !v.is_string() {
            return Err(format!(
                "`credHelpers.{}` is {}, not a string",
                name(key),
                kind(v)
            ));
        }
    }
    match doc.get("credsStore") {
        Some(v) if !v.is_null() && !v.is_string() => {
            Err(format!("`credsStore` is {}, not a string", kind(v)))
        }
        _ => Ok(()),
    }
}

/// The `auths` keys of containers-auth.json(5) for `repository` on
/// `host`, most specific first: `host/a/b/c`, `host/a/b`, `host/a` (Docker
/// Hub as `docker.io`). The registry's own keys are [`config_keys`].
fn namespace_keys(host: &str, repository: &str) -> Vec<String> {
    let registry = if [DOCKER_HUB, DOCKER_HUB_API, "index.docker.io"].contains(&host) {
        DOCKER_HUB
    } else {
        host
    };
    let mut keys = Vec::new();
    let mut path = repository.trim_matches('/');
    while !path.is_empty() {
        keys.push(format!("{registry}/{path}"));
        path = path.rsplit_once('/').map_or("", |(up, _)| up);
    }
    keys
}

/// The host part of a `config.json` key as docker's `ConvertToHostname`
/// takes it: without an `http://` or `https://` scheme, up to the first `/`.
fn config_key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Runs credential helper `program get` for `server`: the credentials, or
/// `None` when it has none. The reason of an error never holds the
/// helper's stdout.
fn run_helper(program: &Path, server: &str) -> Result<Option<Credentials>, String> {
    run_helper_within(program, server, HELPER_DEADLINE)
}

/// [`run_helper`] with a deadline of `deadline` (short ones in tests).
fn run_helper_within(
    program: &Path,
    server: &str,
    deadline: Duration,
) -> Result<Option<Credentials>, String> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it (is it on PATH?): {e}"))?;
    // A helper that does not read stdin may close it: not an error here.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // Each pipe is read on a thread that hands its bytes over a channel, so
    // that the wait for them has a deadline too: a process the helper
    // started in the background (an agent) may hold the pipes open long
    // after the helper itself has exited.
    let read = |mut pipe: Box<dyn std::io::Read + Send>, limit: u64| {
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = (&mut pipe).take(limit).read_to_end(&mut bytes);
            let _ = send.send(bytes);
        });
        receive
    };
    let out = read(Box::new(stdout), HELPER_OUTPUT_LIMIT + 1);
    let err = read(Box::new(stderr), 4096);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("gave no answer within {}s", deadline.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let left = || deadline.saturating_sub(start.elapsed());
    let held_open = || {
        format!(
            "its output was still open {}s after it started (a process it started in the background holds it?)",
            deadline.as_secs()
        )
    };
    let stdout = out.recv_timeout(left()).map_err(|_| held_open())?;
    let stderr = err.recv_timeout(left()).map_err(|_| held_open())?;
    // Checked first: a helper whose answer has no end is stopped by the
    // closed pipe (SIGPIPE), and its exit status would hide why.
    if stdout.len() as u64 > HELPER_OUTPUT_LIMIT {
        return Err("its answer is over 64 KiB".to_owned());
    }
    if !status.success() {
        // docker's helpers say so on stdout when they have nothing; that
        // text is no secret, but stdout is never quoted: only checked.
        let said = |b: &[u8]| String::from_utf8_lossy(b).to_lowercase();
        if said(&stdout).contains("credentials not found")
            || said(&stderr).contains("credentials not found")
        {
            return Ok(None);
        }
        let first = String::from_utf8_lossy(&stderr);
        let first: String = first
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        if first.trim().is_empty() {
            // docker's helpers say why on stdout, which is never quoted.
            return Err(format!(
                "`get` failed ({status}) with nothing on stderr (its stdout is not shown: it may hold the secret)"
            ));
        }
        return Err(format!("`get` failed ({status}): {first}"));
    }
    helper_answer(&stdout)
}

/// A helper's answer on stdout, `{"Username", "Secret"}`: the credentials,
/// or `None` without a secret. The error never holds the answer's text
/// (serde_json's errors name a position only).
fn helper_answer(stdout: &[u8]) -> Result<Option<Credentials>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|e| format!("its answer is not JSON: {e}"))?;
    let user = doc["Username"].as_str().unwrap_or("");
    let secret = doc["Secret"].as_str().unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        user: user.to_owned(),
        password: secret.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never panics, never quotes the file: any bytes as a docker config
    /// (mangled JSON around a secret-looking value), for any host.
    mod untrusted {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn any_config_fails_cleanly(
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
                json in r#"[{}\[\]":,a-z0-9 ]{0,120}"#,
                host in r"[a-zA-Z0-9.:/\[\]-]{0,40}",
                repository in r"[a-z0-9/._-]{0,40}",
            ) {
                let dir = tempfile::tempdir().unwrap();
                // The secret as a value (a key is a registry's name, which
                // errors do name), beside an entry of any shape.
                for text in [bytes.clone(), format!("{{\"auths\":{{\"reg.example\":{{\"auth\":\"s3cr3t-value\",\"password\":\"s3cr3t-value\"}},\"k\":{json}").into_bytes()] {
                    let path = dir.path().join("config.json");
                    std::fs::write(&path, &text).unwrap();
                    if let Err(e) = Credentials::from_docker_config(&path, &host, &repository) {
                        prop_assert!(!e.to_string().contains("s3cr3t-value"));
                    }
                    let _ = config_key_host(&host);
                    prop_assert!(namespace_keys(&host, &repository).len() <= repository.len());
                }
            }

            /// A credential helper's stdout: any bytes, and JSON of its
            /// shape with values of any type: credentials, none, or an
            /// error that quotes none of it.
            #[test]
            fn any_helper_answer_fails_cleanly(
                bytes in proptest::collection::vec(any::<u8>(), 0..200),
                fields in proptest::collection::btree_map(
                    "(Username|Secret|ServerURL|x)",
                    prop_oneof![
                        Just(serde_json::Value::Null),
                        any::<i64>().prop_map(serde_json::Value::from),
                        "s3cr3t\\PC{0,20}".prop_map(serde_json::Value::from),
                        Just(serde_json::json!({"s3cr3t": "s3cr3t"})),
                    ],
                    0..4,
                ),
                cut in any::<prop::sample::Index>(),
            ) {
                let json = serde_json::to_vec(&fields).unwrap();
                let cut = &json[..cut.index(json.len() + 1)];
                for answer in [&bytes[..], &json[..], cut] {
                    match helper_answer(answer) {
                        Ok(Some(c)) => prop_assert!(!c.password.is_empty()),
                        Ok(None) => {}
                        Err(why) => prop_assert!(!why.contains("s3cr3t"), "{}", why),
                    }
                }
            }
        }
    }

    /// `/dev/zero` or a FIFO nobody writes to as the config: an error
    /// naming the file, at once, never a hang or unbounded memory.
    #[test]
    fn configs_that_never_end_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = Credentials::from_docker_config(&zero, "reg.example", "a")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("zero.json") && e.contains("more than 4 MiB"),
            "{e}"
        );
        let fifo = dir.path().join("fifo.json");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let e = Credentials::from_docker_config(&fifo, "reg.example", "a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fifo.json"), "{e}");
    }

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"reg.example.com":{"auth":"dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        let c = Credentials::from_docker_config(&path, "reg.example.com", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("user", "pass"));
        assert!(Credentials::from_docker_config(&path, "other", "team/app")
            .unwrap()
            .is_none());
        assert!(
            Credentials::from_docker_config(&dir.path().join("none"), "x", "team/app")
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
        let e = Credentials::from_docker_config(&path, "h.example", "team/app").unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains('!'),
            "{shown}"
        );
    }

    /// A field of the wrong type anywhere in the credential parts (docker
    /// refuses such a file): an error naming the file and the key, never
    /// the values; it was passed over, the push going anonymous.
    #[test]
    fn fields_of_the_wrong_type_are_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        for (doc, named) in [
            (
                r#"{"auths":{"reg.example":{"auth":12}}}"#,
                "`auths.reg.example.auth` is a number",
            ),
            (
                r#"{"auths":{"other.example":{"auth":"dXNlcjpwYXNz"},"reg.example":{"password":["hunter2"]}}}"#,
                "`auths.reg.example.password` is an array",
            ),
            (
                r#"{"auths":{"reg.example":"dXNlcjpodW50ZXIy"}}"#,
                "`auths.reg.example` is a string",
            ),
            (r#"{"auths":["hunter2"]}"#, "`auths` is an array"),
            (
                r#"{"credHelpers":{"reg.example":true}}"#,
                "`credHelpers.reg.example` is a boolean",
            ),
            (
                r#"{"credsStore":{"hunter2":1}}"#,
                "`credsStore` is an object",
            ),
            (r#"["hunter2"]"#, "the file is an array"),
        ] {
            std::fs::write(&path, doc).unwrap();
            // Asked about another registry too: docker refuses the file.
            for host in ["reg.example", "elsewhere.example"] {
                let e = Credentials::from_docker_config(&path, host, "team/app").unwrap_err();
                let shown = format!("{e} {e:?}");
                assert!(
                    shown.contains(named) && shown.contains("config.json"),
                    "{shown}"
                );
                assert!(
                    !shown.contains("hunter2") && !shown.contains("dXNl"),
                    "{shown}"
                );
            }
        }
        // `null` is as absent, as Go decodes it; unknown fields are ignored.
        std::fs::write(
            &path,
            r#"{"auths":{"reg.example":{"auth":"dXNlcjpwYXNz","email":null,"x":1},"n":null},"credsStore":null,"credHelpers":null,"other":5}"#,
        )
        .unwrap();
        let c = Credentials::from_docker_config(&path, "reg.example", "a")
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "user");
    }

    /// A helper script at `dir/name` running `body` (sh).
    fn helper(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn credential_helpers_are_run_as_docker_runs_them() {
        let dir = tempfile::tempdir().unwrap();
        // It gets `get` and the server on stdin, and answers JSON.
        let ok = helper(
            dir.path(),
            "ok",
            r#"[ "$1" = get ] || exit 3; read -r s; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3cret-helper"}' "$s" "$s""#,
        );
        let c = run_helper(&ok, "reg.example:5000").unwrap().unwrap();
        assert_eq!(c.user, "u-reg.example:5000");
        assert_eq!(c.password, "s3cret-helper");
        let none = helper(
            dir.path(),
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert_eq!(run_helper(&none, "x").unwrap(), None);
        // A failing helper's stdout (maybe a secret) is never quoted.
        let fail = helper(
            dir.path(),
            "fail",
            "echo s3cret-out; echo broken >&2; exit 1",
        );
        let e = run_helper(&fail, "x").unwrap_err();
        assert!(e.contains("broken") && !e.contains("s3cret"), "{e}");
        // One that says nothing on stderr: no dangling `: `.
        let silent = helper(dir.path(), "silent", "echo s3cret-out; exit 1");
        let e = run_helper(&silent, "x").unwrap_err();
        assert!(
            e.contains("(exit status: 1) with nothing on stderr")
                && !e.ends_with(": ")
                && !e.contains("s3cret"),
            "{e}"
        );
        let junk = helper(dir.path(), "junk", "echo '{\"Secret\": s3cret-junk'");
        let e = run_helper(&junk, "x").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = run_helper(&dir.path().join("missing"), "x").unwrap_err();
        assert!(e.contains("PATH"), "{e}");
        // An identity token from a helper: user `<token>`.
        let tok = helper(
            dir.path(),
            "tok",
            r#"echo '{"Username":"<token>","Secret":"refresh-s3cret"}'"#,
        );
        let c = run_helper(&tok, "x").unwrap().unwrap();
        assert_eq!(c.as_identity_token(), Some("refresh-s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn helpers_that_hold_their_output_open_or_flood_it_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // It answers and exits, but a background process keeps its stdout
        // open: the wait for the answer has the deadline too.
        let bg = helper(
            dir.path(),
            "bg",
            r#"sleep 30 & echo '{"Username":"u","Secret":"s3cret-bg"}'"#,
        );
        let start = Instant::now();
        let e = run_helper_within(&bg, "x", Duration::from_secs(2)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{e}");
        assert!(e.contains("still open") && !e.contains("s3cret"), "{e}");
        // An answer without end: stopped at the limit, and said so (not
        // the exit status of the SIGPIPE that stopped it).
        let huge = helper(dir.path(), "huge", "yes s3cret-huge");
        let e = run_helper_within(&huge, "x", Duration::from_secs(20)).unwrap_err();
        assert!(e.contains("over 64 KiB") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn identity_tokens_and_docker_hub_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnB3"},
                "reg.example":{"auth":"dXNlcjo=","identitytoken":"idtok-s3cret"}}}"#,
        )
        .unwrap();
        for hub in ["docker.io", "registry-1.docker.io"] {
            let c = Credentials::from_docker_config(&path, hub, "team/app")
                .unwrap()
                .unwrap();
            assert_eq!((c.user.as_str(), c.password.as_str()), ("hub", "pw"));
        }
        let c = Credentials::from_docker_config(&path, "reg.example", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!(c.as_identity_token(), Some("idtok-s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(config_keys("docker.io")[0], "https://index.docker.io/v1/");
    }

    #[test]
    fn auths_keys_are_matched_by_their_host_as_docker_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let find = |doc: &str, host: &str| {
            std::fs::write(&path, doc).unwrap();
            Credentials::from_docker_config(&path, host, "team/app")
                .unwrap()
                .map(|c| (c.user, c.password))
        };
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        // `dXNlcjpwYXNz` is `user:pass`.
        for key in [
            "https://reg.example:5000/",
            "http://reg.example:5000/v2/",
            "reg.example:5000/",
            "https://reg.example:5000/some/path",
        ] {
            let doc = format!(r#"{{"auths":{{"{key}":{{"auth":"dXNlcjpwYXNz"}}}}}}"#);
            assert_eq!(
                find(&doc, "reg.example:5000"),
                pair("user", "pass"),
                "{key}"
            );
            // Another port or host is another registry.
            assert_eq!(find(&doc, "reg.example"), None, "{key}");
            assert_eq!(find(&doc, "reg.example:500"), None, "{key}");
        }
        // An exact key wins over one matched by its host.
        let doc = r#"{"auths":{"https://reg.example/":{"auth":"YTpi"},"reg.example":{"auth":"dXNlcjpwYXNz"}}}"#;
        assert_eq!(find(doc, "reg.example"), pair("user", "pass"));
        // `username` and `password` fields, which docker reads when there
        // is no `auth`.
        let doc = r#"{"auths":{"reg.example":{"username":"u","password":"p"}}}"#;
        assert_eq!(find(doc, "reg.example"), pair("u", "p"));
        let doc = r#"{"auths":{"reg.example":{"auth":"","username":"u","password":""}}}"#;
        assert_eq!(find(doc, "reg.example"), None);
    }

    /// podman's `auth.json` may key credentials by repository or
    /// namespace (containers-auth.json(5)): the most specific key wins,
    /// then the registry's; a namespace key is for that namespace alone.
    /// Only the registry key used to be read.
    #[test]
    fn podman_namespace_keys_win_from_the_most_specific() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        // base64 of `repo:1`, `team:2`, `host:3`, `hub:4`.
        std::fs::write(
            &path,
            r#"{"auths":{
                "reg.example:5000/team/app":{"auth":"cmVwbzox"},
                "reg.example:5000/team":{"auth":"dGVhbToy"},
                "reg.example:5000":{"auth":"aG9zdDoz"},
                "other.example/only/this":{"auth":"cmVwbzox"},
                "docker.io/library":{"auth":"aHViOjQ="}
            }}"#,
        )
        .unwrap();
        let user = |host: &str, repository: &str| {
            Credentials::from_docker_config(&path, host, repository)
                .unwrap()
                .map(|c| c.user)
        };
        assert_eq!(
            user("reg.example:5000", "team/app").as_deref(),
            Some("repo")
        );
        assert_eq!(
            user("reg.example:5000", "team/app/sub").as_deref(),
            Some("repo")
        );
        assert_eq!(
            user("reg.example:5000", "team/other").as_deref(),
            Some("team")
        );
        assert_eq!(
            user("reg.example:5000", "teamx/app").as_deref(),
            Some("host")
        );
        assert_eq!(user("reg.example:5000", "app").as_deref(), Some("host"));
        // Another port is another registry.
        assert_eq!(user("reg.example", "team/app"), None);
        // A namespace key is not the registry's.
        assert_eq!(user("other.example", "only/this").as_deref(), Some("repo"));
        assert_eq!(user("other.example", "only/that"), None);
        assert_eq!(user("docker.io", "library/alpine").as_deref(), Some("hub"));
        assert_eq!(
            user("registry-1.docker.io", "library/alpine").as_deref(),
            Some("hub")
        );
        assert_eq!(user("docker.io", "someone/alpine"), None);
        assert_eq!(
            namespace_keys("h:1", "a/b/c"),
            ["h:1/a/b/c", "h:1/a/b", "h:1/a"]
        );
    }

    #[test]
    fn the_first_file_with_credentials_for_the_host_wins() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let podman = dir.path().join("auth.json");
        // `dXNlcjpwYXNz` is `user:pass`, `cG9kOm1hbg==` `pod:man`.
        std::fs::write(
            &docker,
            r#"{"auths":{"a.example":{"auth":"dXNlcjpwYXNz"}}}"#,
        )
        .unwrap();
        std::fs::write(
            &podman,
            r#"{"auths":{"a.example":{"auth":"cG9kOm1hbg=="},"b.example":{"auth":"cG9kOm1hbg=="}}}"#,
        )
        .unwrap();
        let files = [dir.path().join("missing.json"), docker, podman];
        let user = |host: &str| {
            Credentials::from_config_files(&files, host, "team/app")
                .unwrap()
                .map(|c| c.user)
        };
        assert_eq!(user("a.example").as_deref(), Some("user"));
        assert_eq!(user("b.example").as_deref(), Some("pod"));
        assert_eq!(user("c.example"), None);
    }

    #[test]
    fn bad_helper_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example":"../../bin/sh"}}"#).unwrap();
        let e = Credentials::from_docker_config(&path, "reg.example", "team/app").unwrap_err();
        assert!(e.to_string().contains("not a plain name"), "{e}");
    }
}
