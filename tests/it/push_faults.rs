//! `nixlayer push` against misbehaving registries: small servers on
//! 127.0.0.1 in front of the real registry (127.0.0.1:5000) or instead of
//! it. A gate asks for basic or bearer auth and sends upload `Location`s to
//! another port, where a recorder notes what it receives and forwards to the
//! real registry; a token issuer hands out a bearer token; other servers
//! never answer, trickle, or echo our headers back.
//!
//! Every server stops after a bounded number of connections, when dropped,
//! or after two minutes; every `push` is killed if it runs past a bound.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::push::{blobs, json, manifest, registry_ready, REGISTRY};
use crate::util::{self, nixlayer};

/// The most connections a server accepts.
const MAX_CONNECTIONS: usize = 400;
/// How long a server lives at most.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
/// How long one socket read may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A request as a server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;
type Headers = Vec<(String, String)>;

/// What a handler gets: the connection, the request, the bytes read past
/// its head, and the server's stop flag.
type Handler = dyn Fn(TcpStream, &Seen, Vec<u8>, &AtomicBool) + Send + Sync;

/// A loopback server running `handler` for each request (one per
/// connection), logging every request; stopped on drop.
struct Server {
    port: u16,
    log: Log,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(
        handler: impl Fn(TcpStream, &Seen, Vec<u8>, &AtomicBool) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (log, stop) = (log.clone(), stop.clone());
            thread::spawn(move || {
                let born = Instant::now();
                let mut accepted = 0;
                while !stop.load(Ordering::Relaxed)
                    && accepted < MAX_CONNECTIONS
                    && born.elapsed() < SERVER_LIFETIME
                {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            accepted += 1;
                            let (log, stop, handler) = (log.clone(), stop.clone(), handler.clone());
                            thread::spawn(move || {
                                conn.set_nonblocking(false).unwrap();
                                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                                conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                                let mut conn = conn;
                                if let Some((first, headers, rest)) = read_head(&mut conn) {
                                    let mut parts = first.split(' ');
                                    let seen = Seen {
                                        method: parts.next().unwrap_or("").to_owned(),
                                        target: parts.next().unwrap_or("").to_owned(),
                                        headers,
                                    };
                                    log.lock().unwrap().push(seen.clone());
                                    handler(conn, &seen, rest, &stop);
                                }
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Self {
            port,
            log,
            stop,
            accept: Some(accept),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads an HTTP head (at most 64 KiB): its first line, its headers, and
/// the bytes read after it.
fn read_head(conn: &mut TcpStream) -> Option<(String, Headers, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS handshake record (the client tries HTTPS first on a
        // loopback host): closed, as a plain-HTTP server refuses it.
        if buf[0] == 0x16 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let first = lines.next()?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some((first, headers, rest))
}

fn respond(mut conn: TcpStream, status: &str, headers: &[(&str, &str)], body: &str) {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
    let _ = conn.shutdown(Shutdown::Both);
}

/// Forwards the request to the real registry, one request per connection
/// (`Connection: close` both ways, so bodies — chunked or not — are relayed
/// as raw bytes until the registry closes). A `Location` in the answer is
/// sent to `127.0.0.1:location_port` when given.
fn forward(client: TcpStream, seen: &Seen, rest: Vec<u8>, location_port: Option<u16>) {
    forward_to(REGISTRY, client, seen, rest, location_port);
}

/// [`forward`] to the registry at `upstream`.
fn forward_to(
    upstream: &str,
    client: TcpStream,
    seen: &Seen,
    rest: Vec<u8>,
    location_port: Option<u16>,
) {
    forward_as(upstream, client, seen, rest, location_port, None);
}

/// [`forward_to`], the registry's `201 Created` answered as `created`
/// when given (the status line another registry sends).
fn forward_as(
    upstream: &str,
    mut client: TcpStream,
    seen: &Seen,
    rest: Vec<u8>,
    location_port: Option<u16>,
    created: Option<&str>,
) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return respond(client, "502 Bad Gateway", &[], "no registry");
    };
    up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\n", seen.method, seen.target);
    for (k, v) in &seen.headers {
        if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("keep-alive") {
            head += &format!("{k}: {v}\r\n");
        }
    }
    head += "Connection: close\r\n\r\n";
    if up.write_all(head.as_bytes()).is_err() || up.write_all(&rest).is_err() {
        return;
    }
    let pump = {
        let (mut from, mut to) = (client.try_clone().unwrap(), up.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        })
    };
    if let Some((first, headers, rest)) = read_head(&mut up) {
        let first = match created {
            Some(status) if first.contains(" 201 ") => format!("HTTP/1.1 {status}"),
            _ => first,
        };
        let mut head = format!("{first}\r\n");
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("connection") {
                continue;
            }
            let v = match location_port {
                Some(port) if k.eq_ignore_ascii_case("location") => {
                    // Keep the path and query; put them on the other port.
                    let path = match v.split_once("://") {
                        Some((_, after)) => after.find('/').map_or("/", |i| &after[i..]).to_owned(),
                        None => v,
                    };
                    format!("http://127.0.0.1:{port}{path}")
                }
                _ => v,
            };
            head += &format!("{k}: {v}\r\n");
        }
        head += "Connection: close\r\n\r\n";
        let _ = client.write_all(head.as_bytes());
        let _ = client.write_all(&rest);
        let _ = std::io::copy(&mut up, &mut client);
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = pump.join();
}

/// Auth the gate asks for.
#[derive(Clone)]
enum Gate {
    /// `WWW-Authenticate: Basic`; accepts this `Authorization`.
    Basic(String),
    /// `WWW-Authenticate: Bearer realm=…`; accepts `Bearer <token>`.
    Bearer { realm: String, token: String },
}

/// A gate in front of the real registry asking for `gate` auth and sending
/// upload Locations to `other_port`.
fn gate(gate: Gate, other_port: u16) -> Server {
    Server::start(move |conn, seen, rest, _| {
        let (challenge, accepted) = match &gate {
            Gate::Basic(accepted) => (r#"Basic realm="fault-test""#.to_owned(), accepted.clone()),
            Gate::Bearer { realm, token } => (
                format!(r#"Bearer realm="{realm}",service="fault-test""#),
                format!("Bearer {token}"),
            ),
        };
        if seen.header("authorization") == Some(accepted.as_str()) {
            forward(conn, seen, rest, Some(other_port));
        } else {
            respond(
                conn,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", &challenge),
                    ("Content-Type", "application/json"),
                ],
                r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
    })
}

/// The "other host": notes each request and forwards it to the registry.
fn recorder() -> Server {
    Server::start(|conn, seen, rest, _| forward(conn, seen, rest, None))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A manifest whose config is new to the registry (a unique `Cmd`), so a
/// push uploads at least that blob.
fn fresh_manifest(dir: &Path, hello: &Path) -> PathBuf {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    manifest(dir, "image.toml", hello, &format!(r#""faults", "{nonce}""#))
}

/// Runs `cmd`, killing it after `limit`; its output, or a failure naming
/// the hang.
fn run_bounded(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nixlayer");
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still ran after {limit:?}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn push_cmd(m: &Path, reference: &str, tmp: &Path) -> Command {
    let mut cmd = nixlayer();
    cmd.arg("push")
        .arg(m)
        .arg(reference)
        .arg("--json")
        .env("DOCKER_CONFIG", tmp.join("no-docker-config"))
        .env_remove("NIXLAYER_REGISTRY_USER")
        .env_remove("NIXLAYER_REGISTRY_PASSWORD")
        .env_remove("NIXLAYER_REGISTRY_TIMEOUT");
    cmd
}

fn assert_exit(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    stderr
}

/// Whether any request of `seen` carried an `Authorization` header.
fn authorized(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter_map(|s| {
            s.header("authorization")
                .map(|a| format!("{} {}: {a}", s.method, s.target))
        })
        .collect()
}

#[test]
fn basic_credentials_never_go_to_an_upload_location_on_another_port() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let other = recorder();
    let front = gate(Gate::Basic(basic("nixlayer", "s3cret-pw")), other.port);
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:basic", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(120),
    );
    assert_exit(&out, 0);
    let (uploaded, _) = blobs(&json(&out.stdout));
    assert!(uploaded >= 1);

    // The uploads went to the other port, without credentials.
    let puts: Vec<Seen> = other
        .seen()
        .into_iter()
        .filter(|s| s.method == "PUT")
        .collect();
    assert_eq!(puts.len() as u64, uploaded, "{puts:?}");
    assert_eq!(authorized(&other.seen()), Vec::<String>::new());
    // The registry itself got them.
    assert!(!authorized(&front.seen()).is_empty());
}

/// A 401 with several `WWW-Authenticate` headers (a proxy's `Negotiate`
/// first, then the registry's `Basic`): the Basic one is answered, as
/// docker does, not refused as an unsupported challenge.
#[test]
fn the_basic_challenge_among_several_is_answered() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let accepted = basic("nixlayer", "s3cret-pw");
    let front = Server::start(move |conn, seen, rest, _| {
        if seen.header("authorization") == Some(accepted.as_str()) {
            forward(conn, seen, rest, None);
        } else {
            respond(
                conn,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", "Negotiate"),
                    ("WWW-Authenticate", r#"Basic realm="fault-test""#),
                ],
                "",
            );
        }
    });
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:challenges", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(120),
    );
    assert_exit(&out, 0);
}

#[test]
fn bearer_tokens_go_only_to_the_registry_and_credentials_to_the_realm_as_basic() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let token = "tok-S3CRET-0123456789";
    let issuer = Server::start(move |conn, _, _, _| {
        respond(
            conn,
            "200 OK",
            &[("Content-Type", "application/json")],
            &format!(r#"{{"token":"{token}","expires_in":300}}"#),
        );
    });
    let other = recorder();
    let front = gate(
        Gate::Bearer {
            realm: format!("{}/token", issuer.url()),
            token: token.to_owned(),
        },
        other.port,
    );
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:bearer", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(120),
    );
    assert_exit(&out, 0);
    assert!(blobs(&json(&out.stdout)).0 >= 1);

    // The realm got the credentials as basic auth, for this repository,
    // and never a bearer token.
    let asked = issuer.seen();
    assert!(!asked.is_empty());
    for s in &asked {
        assert_eq!(
            s.header("authorization"),
            Some(basic("nixlayer", "s3cret-pw").as_str())
        );
        assert!(
            s.target
                .contains("scope=repository%3Anixlayer-test%2Ffaults%3Apull%2Cpush"),
            "{s:?}"
        );
        assert!(s.target.contains("service=fault-test"), "{s:?}");
    }
    // The other port got nothing, the registry the token.
    assert!(other.seen().iter().any(|s| s.method == "PUT"));
    assert_eq!(authorized(&other.seen()), Vec::<String>::new());
    let at_front = authorized(&front.seen());
    assert!(!at_front.is_empty());
    assert!(
        at_front
            .iter()
            .all(|a| a.ends_with(&format!("Bearer {token}"))),
        "{at_front:?}"
    );
}

#[test]
fn a_401_from_another_port_is_an_error_not_a_credentials_prompt() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    // The other port asks for basic auth too.
    let other = Server::start(|conn, _, _, _| {
        respond(
            conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", r#"Basic realm="x""#)],
            "",
        )
    });
    let front = gate(Gate::Basic(basic("nixlayer", "s3cret-pw")), other.port);
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:other401", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(120),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", other.port)),
        "{stderr}"
    );
    assert!(stderr.contains("only sent to"), "{stderr}");
    assert!(!other.seen().is_empty());
    assert_eq!(authorized(&other.seen()), Vec::<String>::new());
}

#[test]
fn error_answers_echoing_our_credentials_are_not_shown() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    // A registry that refuses every authenticated request, quoting the
    // request's Authorization header back.
    let front = Server::start(|conn, seen, _, _| match seen.header("authorization") {
        None => respond(
            conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", r#"Basic realm="x""#)],
            "",
        ),
        Some(a) => {
            let body = format!("denied: you sent `Authorization: {a}`");
            respond(conn, "403 Forbidden", &[], &body);
        }
    });
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:echo", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains("403") && stderr.contains("denied"),
        "{stderr}"
    );
    let header = basic("nixlayer", "s3cret-pw");
    let encoded = header.trim_start_matches("Basic ");
    assert!(
        !stderr.contains(encoded) && !stderr.contains("s3cret-pw"),
        "{stderr}"
    );
    assert!(
        !authorized(&front.seen()).is_empty(),
        "the credentials were used"
    );
}

#[test]
fn redirects_are_not_followed() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let other = recorder();
    let target = format!("{}/v2/", other.url());
    let front = Server::start(move |conn, _, _, _| {
        respond(conn, "307 Temporary Redirect", &[("Location", &target)], "")
    });
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:redirect", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(stderr.contains("307"), "{stderr}");
    assert!(other.seen().is_empty(), "{:?}", other.seen());
}

/// A registry that moves every authorized request to another path on its
/// own origin (a `307` to `/moved/…`, relative or absolute, every method):
/// the push follows each one with the credentials, as docker does, and no
/// request reaches `/moved` without them. Same-origin redirects used to
/// end the push with the `307`. (A redirect to another origin is still not
/// followed: `redirects_are_not_followed`.)
#[test]
fn redirects_within_the_registry_keep_the_credentials() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let accepted = basic("nixlayer", "s3cret-pw");
    let front = Server::start(move |conn, seen, rest, _| {
        if seen.header("authorization") != Some(accepted.as_str()) {
            return respond(
                conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="moved-test""#)],
                "",
            );
        }
        match seen.target.strip_prefix("/moved") {
            Some(target) => {
                let moved = Seen {
                    target: target.to_owned(),
                    ..seen.clone()
                };
                forward(conn, &moved, rest, None);
            }
            None => {
                // Every other request relative, the rest absolute (the
                // `Host` it was sent to).
                let host = seen.header("host").unwrap_or_default().to_owned();
                let location = if seen.method == "PUT" || seen.method == "HEAD" {
                    format!("http://{host}/moved{}", seen.target)
                } else {
                    format!("/moved{}", seen.target)
                };
                // The body is not read: the client sends it again.
                let mut conn = conn;
                drain(&mut conn, seen, &rest);
                respond(
                    conn,
                    "307 Temporary Redirect",
                    &[("Location", &location)],
                    "",
                );
            }
        }
    });
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:moved", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "nixlayer:s3cret-pw"]),
        Duration::from_secs(120),
    );
    assert_exit(&out, 0);
    let (uploaded, _) = blobs(&json(&out.stdout));
    assert!(uploaded >= 1);
    let seen = front.seen();
    let moved: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.target.starts_with("/moved"))
        .collect();
    for method in ["HEAD", "PUT"] {
        assert!(
            moved.iter().any(|s| s.method == method),
            "no {method} was redirected: {seen:?}"
        );
    }
    let bare: Vec<String> = moved
        .iter()
        .filter(|s| s.header("authorization").is_none())
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(bare, Vec::<String>::new(), "redirected without credentials");
}

/// A server that reads each request and never answers (holding the
/// connection until stopped).
fn silent() -> Server {
    Server::start(|conn, _, _, stop| {
        let born = Instant::now();
        while !stop.load(Ordering::Relaxed) && born.elapsed() < SERVER_LIFETIME {
            thread::sleep(Duration::from_millis(20));
        }
        drop(conn);
    })
}

/// A server that trickles its answer, a byte every 100 ms: within the head
/// (`in_body` false) or, after a complete head, in a JSON body.
fn trickler(in_body: bool) -> Server {
    Server::start(move |mut conn, _, _, stop| {
        let head: &[u8] = if in_body {
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"token\": \""
        } else {
            b"HTTP/1.1 200 OK\r\nX-Slow: "
        };
        let _ = conn.write_all(head);
        let born = Instant::now();
        while !stop.load(Ordering::Relaxed) && born.elapsed() < SERVER_LIFETIME {
            if conn.write_all(b"a").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Pushes to `port` with a 1 s deadline (from `how`); asserts a timeout
/// error naming `host_port` well within a bound.
fn assert_times_out(m: &Path, tmp: &Path, port: u16, host_port: u16, how: &str) {
    let reference = format!("127.0.0.1:{port}/nixlayer-test/faults:timeout");
    let mut cmd = push_cmd(m, &reference, tmp);
    match how {
        "flag" => cmd.args(["--timeout", "1"]),
        _ => cmd.env("NIXLAYER_REGISTRY_TIMEOUT", "1"),
    };
    let (out, took) = run_bounded(&mut cmd, Duration::from_secs(30));
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains("no complete answer within 1s")
            && stderr.contains(&format!("127.0.0.1:{host_port}")),
        "{stderr}"
    );
    // The build before the push takes a moment; the wait is one deadline.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn never_answering_and_trickling_registries_and_token_realms_time_out() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);

    let slow = trickler(false);
    assert_times_out(&m, tmp.path(), slow.port, slow.port, "env");

    let quiet = silent();
    assert_times_out(&m, tmp.path(), quiet.port, quiet.port, "flag");

    // Token realms that never answer, or trickle the token.
    for realm in [silent(), trickler(true)] {
        let front = gate(
            Gate::Bearer {
                realm: format!("{}/token", realm.url()),
                token: "unused".to_owned(),
            },
            realm.port,
        );
        assert_times_out(&m, tmp.path(), front.port, realm.port, "flag");
        assert_eq!(
            realm.seen().len(),
            1,
            "a timed-out token request is not retried"
        );
    }
}

#[test]
fn bad_timeouts_and_password_sources_are_usage_errors() {
    let tmp = util::temp_dir();
    let m = util::write(tmp.path(), "image.toml", "name = \"x\"\n");
    let reference = "127.0.0.1:9/nixlayer-test/x:t";
    for (args, env, says) in [
        (&["--timeout", "0"][..], None, "--timeout"),
        (&["--timeout", "soon"][..], None, "--timeout"),
        (
            &[][..],
            Some(("NIXLAYER_REGISTRY_TIMEOUT", "-1")),
            "NIXLAYER_REGISTRY_TIMEOUT",
        ),
        (&["--username", "u"][..], None, "no password"),
        (&["--password-stdin"][..], None, "no user"),
        (
            &[][..],
            Some(("NIXLAYER_REGISTRY_PASSWORD", "s3cret-pw")),
            "no user",
        ),
        (&["--creds", "s3cret-pw"][..], None, "USER:PASS"),
        (
            &["--creds", ":s3cret-pw"][..],
            None,
            "user before `:` is empty",
        ),
        (&["--username", ""][..], None, "`--username` is empty"),
        (
            &["--creds", "u:p", "--username", "u"][..],
            None,
            "--username",
        ),
    ] {
        let mut cmd = push_cmd(&m, reference, tmp.path());
        cmd.args(args).stdin(Stdio::null());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(30));
        let stderr = assert_exit(&out, 2);
        assert!(stderr.contains(says), "{args:?} {env:?}: {stderr}");
        assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    }
}

/// How a [`faulty`] proxy misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Every `PATCH` is answered 405 (a registry without chunked uploads).
    RefusePatch,
    /// The first `PATCH` and the first `PUT ?digest=` are answered 500.
    FailOnce,
    /// The third `PATCH` reaches the registry with half of its body, then
    /// both connections are cut.
    DropMidUpload,
    /// Manifests are accepted with `202 Accepted` and their digest, as
    /// Quay answers, instead of `201 Created`.
    ManifestAccepted,
}

/// The `Content-Length` of a request.
fn content_length(seen: &Seen) -> usize {
    seen.header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads the rest of a request's body, so an answer sent before it is not
/// lost to a reset.
fn drain(conn: &mut TcpStream, seen: &Seen, rest: &[u8]) {
    let mut left = content_length(seen).saturating_sub(rest.len());
    let mut buf = [0u8; 16 << 10];
    while left > 0 {
        match conn.read(&mut buf[..left.min(16 << 10)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => left -= n,
        }
    }
}

/// A proxy on 127.0.0.1 in front of the registry on `upstream` (its
/// `Host` kept, so upload `Location`s come back to the proxy) with `fault`.
fn faulty(upstream: u16, fault: Fault) -> Server {
    let patches = Arc::new(Mutex::new(0usize));
    let puts = Arc::new(Mutex::new(0usize));
    let upstream = format!("127.0.0.1:{upstream}");
    Server::start(move |mut conn, seen, rest, _| {
        let is_patch = seen.method == "PATCH";
        let is_final = seen.method == "PUT" && seen.target.contains("digest=");
        let n = if is_patch {
            let mut p = patches.lock().unwrap();
            *p += 1;
            *p
        } else if is_final {
            let mut p = puts.lock().unwrap();
            *p += 1;
            *p
        } else {
            0
        };
        match fault {
            Fault::RefusePatch if is_patch => {
                drain(&mut conn, seen, &rest);
                respond(
                    conn,
                    "405 Method Not Allowed",
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"UNSUPPORTED"}]}"#,
                );
            }
            Fault::FailOnce if (is_patch || is_final) && n == 1 => {
                drain(&mut conn, seen, &rest);
                respond(conn, "500 Internal Server Error", &[], "try again");
            }
            Fault::DropMidUpload if is_patch && n == 3 => {
                let half = content_length(seen) / 2;
                let Ok(mut up) = TcpStream::connect(&upstream) else {
                    return;
                };
                let mut head = format!("{} {} HTTP/1.1\r\n", seen.method, seen.target);
                for (k, v) in &seen.headers {
                    if !k.eq_ignore_ascii_case("connection") {
                        head += &format!("{k}: {v}\r\n");
                    }
                }
                head += "Connection: close\r\n\r\n";
                let _ = up.write_all(head.as_bytes());
                let mut body = rest;
                let mut buf = [0u8; 16 << 10];
                while body.len() < half {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => body.extend_from_slice(&buf[..k]),
                    }
                }
                body.truncate(half);
                let _ = up.write_all(&body);
                // Let the registry take the bytes, then cut both ways.
                thread::sleep(Duration::from_millis(200));
                let _ = up.shutdown(Shutdown::Both);
                let _ = conn.shutdown(Shutdown::Both);
            }
            Fault::ManifestAccepted
                if seen.method == "PUT" && seen.target.contains("/manifests/") =>
            {
                forward_as(&upstream, conn, seen, rest, None, Some("202 Accepted"));
            }
            _ => forward_to(&upstream, conn, seen, rest, None),
        }
    })
}

/// Pushes a new image through a [`faulty`] proxy in front of a registry
/// of its own (so every blob is uploaded), in chunks of 64 KiB: the push
/// ends with the manifest digest an OCI layout build reports, skopeo sees
/// it through the registry itself, and each blob was completed once.
fn push_through(fault: Fault) -> Option<Vec<Seen>> {
    let hello = util::nix_fixture("hello")?;
    if !registry_ready() || !util::require_tool("skopeo") || !util::require_tool("docker-registry")
    {
        return None;
    }
    let registry = crate::push::fresh_registry();
    let proxy = faulty(registry.port, fault);
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""faults""#);
    let built = json(
        &util::run(
            nixlayer()
                .arg("build")
                .arg(&m)
                .args(["--format", "oci-layout", "--compression", "gzip", "-o"])
                .arg(tmp.path().join("layout"))
                .arg("--json"),
            0,
        )
        .stdout,
    );
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:1", proxy.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--chunk-size", "65536", "--no-cache"]),
        Duration::from_secs(100),
    );
    assert_exit(&out, 0);
    let pushed = json(&out.stdout);
    assert_eq!(pushed["manifest_digest"], built["manifest_digest"]);
    // Three layers and the config, all new to this registry.
    assert_eq!(blobs(&pushed), (4, 0), "{pushed}");
    let inspect = json(&util::tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!(
                "docker://127.0.0.1:{}/nixlayer-test/faults:1",
                registry.port
            ),
        ],
    ));
    assert_eq!(inspect["Digest"], built["manifest_digest"]);
    let seen = proxy.seen();
    // No blob completed twice: one final `PUT ?digest=` answered 201 per
    // blob is all the registry stored (a 500 from the proxy stored none).
    let mut finals: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.target.contains("digest="))
        .filter_map(|s| s.target.split("digest=").nth(1))
        .collect();
    let total = finals.len();
    finals.sort_unstable();
    finals.dedup();
    assert_eq!(finals.len(), 4, "{finals:?}");
    let extra = usize::from(fault == Fault::FailOnce);
    assert_eq!(total, 4 + extra, "final PUTs: {total}");
    Some(seen)
}

#[test]
fn a_registry_refusing_patch_gets_monolithic_uploads() {
    let Some(seen) = push_through(Fault::RefusePatch) else {
        return;
    };
    // Refused once per upload thread at most (4 by default), then never
    // asked again.
    let patches = seen.iter().filter(|s| s.method == "PATCH").count();
    assert!((1..=4).contains(&patches), "{patches} PATCHes");
}

#[test]
fn a_500_then_200_is_retried_without_a_duplicate_upload() {
    let Some(seen) = push_through(Fault::FailOnce) else {
        return;
    };
    let patches = seen.iter().filter(|s| s.method == "PATCH").count();
    // The layers in 64 KiB chunks: more than one per layer, one sent twice.
    assert!(patches > 4, "{patches}");
}

#[test]
fn a_connection_dropped_mid_upload_resumes_or_restarts_cleanly() {
    let Some(seen) = push_through(Fault::DropMidUpload) else {
        return;
    };
    // The upload's state was asked for after the drop.
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.target.contains("/blobs/uploads/")),
        "no status GET"
    );
}

#[test]
fn a_manifest_accepted_with_202_as_quay_answers_is_pushed() {
    let Some(seen) = push_through(Fault::ManifestAccepted) else {
        return;
    };
    assert!(
        seen.iter()
            .any(|s| s.method == "PUT" && s.target.contains("/manifests/1")),
        "no manifest PUT"
    );
}

/// A server answering every request `200` with `body` of `content_type`
/// and no registry header: a web server on the registry's port.
fn answers_200_to_everything(content_type: &'static str, body: &'static str) -> Server {
    Server::start(move |mut conn, seen, rest, _| {
        drain(&mut conn, seen, &rest);
        respond(conn, "200 OK", &[("Content-Type", content_type)], body);
    })
}

#[test]
fn a_web_server_answering_200_to_everything_is_no_registry() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    // A web page (nginx's, a registry's web interface): refused at the
    // first request, before anything is built.
    let html =
        answers_200_to_everything("text/html", "<html><body>Welcome to nginx!</body></html>");
    let reference = format!("127.0.0.1:{}/nixlayer-test/web:1", html.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).arg("--no-cache"),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&format!("push to `{reference}` failed"))
            && stderr.contains("(API version check): the answer (200) is not a registry's")
            && stderr.contains("HTML page"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.contains("HTML")).count(),
        1,
        "{stderr}"
    );
    // Another API answering JSON to everything: every blob seems present,
    // and the manifest's `200` without its digest is no proof it was
    // stored: an error, not a digest to pin.
    let json_api = answers_200_to_everything("application/json", "{}");
    let reference = format!("127.0.0.1:{}/nixlayer-test/web:1", json_api.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).arg("--no-cache"),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("manifest 1): the answer (200) is not a registry's")
            && stderr.contains("`Docker-Content-Digest`"),
        "{stderr}"
    );
}

#[test]
fn a_refusal_without_a_body_is_named_by_its_status() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    // A registry that refuses this repository with bare 403s (a HEAD has
    // no body to say why; some registries send none for a POST either).
    let refusing = Server::start(|mut conn, seen, rest, _| {
        drain(&mut conn, seen, &rest);
        if seen.target == "/v2/" {
            respond(
                conn,
                "200 OK",
                &[
                    ("Content-Type", "application/json"),
                    ("Docker-Distribution-API-Version", "registry/2.0"),
                ],
                "{}",
            );
        } else {
            respond(conn, "403 Forbidden", &[], "");
        }
    });
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/refused:1", refusing.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).arg("--no-cache"),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains("the registry answered 403: Forbidden") && !stderr.contains("403: \n"),
        "{stderr}"
    );
}

#[test]
fn a_token_realm_answering_a_web_page_is_said_so() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    // The realm answers its login page (an SSO proxy in front of it).
    let realm = Server::start(|mut conn, seen, rest, _| {
        drain(&mut conn, seen, &rest);
        respond(
            conn,
            "200 OK",
            &[("Content-Type", "text/html; charset=utf-8")],
            "<html><body>Sign in</body></html>",
        );
    });
    let front = gate(
        Gate::Bearer {
            realm: format!("{}/token", realm.url()),
            token: "never-given".to_owned(),
        },
        realm.port,
    );
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/sso:1", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "u:s3cret-pw"]),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains(&format!(
            "{}/token answered an HTML page, not a token",
            realm.url()
        )) && !stderr.contains("s3cret"),
        "{stderr}"
    );
    // A challenge naming an `https://` realm that speaks plain HTTP (it
    // answers a TLS hello with an HTTP 400, as Go's servers do): said as
    // the realm's (no `--insecure` advice, which cannot help there).
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in plain.incoming().take(8) {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut hello = [0u8; 512];
            let _ = conn.read(&mut hello);
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let front = gate(
        Gate::Bearer {
            realm: format!("https://127.0.0.1:{plain_port}/token"),
            token: "never-given".to_owned(),
        },
        realm.port,
    );
    let reference = format!("127.0.0.1:{}/nixlayer-test/sso:1", front.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--creds", "u:s3cret-pw"]),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains(&format!(
            "https://127.0.0.1:{plain_port}/token: the token realm the registry names answers plain HTTP to HTTPS"
        )) && !stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn a_loopback_registry_is_reached_without_the_environments_proxy() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    // A company proxy in the environment cannot reach this machine's own
    // registry: Go's clients (docker, skopeo, crane) never send loopback
    // requests to a proxy. One here refuses everything, noting it.
    let proxy = Server::start(|mut conn, seen, rest, _| {
        drain(&mut conn, seen, &rest);
        respond(conn, "502 Bad Gateway", &[], "no route from the proxy");
    });
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    for (n, host) in ["127.0.0.1:5000", "localhost:5000"].iter().enumerate() {
        let mut cmd = push_via(
            &proxy,
            &m,
            &format!("{host}/nixlayer-test/unproxied:{n}"),
            tmp.path(),
        );
        for var in ["HTTP_PROXY", "http_proxy"] {
            cmd.env(var, proxy.url());
        }
        let (out, _) = run_bounded(&mut cmd, Duration::from_secs(60));
        assert_exit(&out, 0);
    }
    let seen: Vec<String> = proxy
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(seen.is_empty(), "sent to the proxy: {seen:?}");
}

/// An HTTPS proxy (`CONNECT`) on 127.0.0.1 that tunnels every request to
/// 127.0.0.1:`upstream`, whatever host it names: a registry with a name of
/// its own, reached as through a company's proxy.
fn connect_proxy(upstream: u16) -> Server {
    Server::start(move |mut conn, seen, rest, _| {
        if seen.method != "CONNECT" {
            return respond(conn, "405 Method Not Allowed", &[], "");
        }
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return respond(conn, "502 Bad Gateway", &[], "");
        };
        let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let _ = up.write_all(&rest);
        let (mut from, mut to) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
        let pump = thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut up, &mut conn);
        let _ = conn.shutdown(Shutdown::Both);
        let _ = pump.join();
    })
}

/// `push_cmd` to `reference` through `proxy` as every HTTPS proxy variable.
fn push_via(proxy: &Server, m: &Path, reference: &str, tmp: &Path) -> Command {
    let mut cmd = push_cmd(m, reference, tmp);
    for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env(var, proxy.url());
    }
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn a_plain_http_registry_or_a_certificate_for_another_name_is_said_as_such() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("docker-registry") || !util::require_tool("openssl")
    {
        return;
    }
    let tmp = util::temp_dir();
    let m = fresh_manifest(tmp.path(), &hello);
    // A plain-HTTP registry by a name that is not loopback: HTTPS meets an
    // HTTP answer. Said so at once, with `--insecure` (not rustls'
    // "corrupt message", after three more tries).
    let plain = connect_proxy(5000);
    let reference = "registry.nixlayer-qa.example/nixlayer-test/proxied:1";
    let (out, _) = run_bounded(
        &mut push_via(&plain, &m, reference, tmp.path()),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains("registry.nixlayer-qa.example: TLS failed: it answered in plain HTTP, not TLS; use `--insecure` if it is a plain-HTTP registry"),
        "{stderr}"
    );
    assert_eq!(plain.seen().len(), 1, "tried again: {:?}", plain.seen());
    // A TLS registry whose trusted certificate names 127.0.0.1 only: the
    // advice is the name, not trusting a CA that is trusted.
    let (registry, ca) = crate::support::tls_registry(tmp.path(), "tls");
    let tunnel = connect_proxy(registry.port);
    let (out, _) = run_bounded(
        push_via(&tunnel, &m, reference, tmp.path())
            .arg("--ca-file")
            .arg(&ca),
        Duration::from_secs(60),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains(
            "its certificate is trusted but does not name `registry.nixlayer-qa.example`"
        ) && !stderr.contains("trust its CA"),
        "{stderr}"
    );
}

/// The most uploads (`PATCH`es, and `PUT`s with a body: a layer of one
/// chunk) in flight at once through a proxy that holds each for 300 ms,
/// for a push with `--jobs jobs` of a new image.
fn concurrent_uploads(jobs: &str) -> Option<usize> {
    let hello = util::nix_fixture("hello")?;
    if !registry_ready() || !util::require_tool("docker-registry") {
        return None;
    }
    let registry = crate::push::fresh_registry();
    let upstream = format!("127.0.0.1:{}", registry.port);
    let in_flight = Arc::new(Mutex::new((0usize, 0usize)));
    let proxy = {
        let in_flight = in_flight.clone();
        Server::start(move |conn, seen, rest, _| {
            let carries = seen.method == "PATCH"
                || (seen.method == "PUT"
                    && seen.target.contains("/blobs/")
                    && content_length(seen) > 0);
            if !carries {
                return forward_to(&upstream, conn, seen, rest, None);
            }
            {
                let mut f = in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            thread::sleep(Duration::from_millis(300));
            forward_to(&upstream, conn, seen, rest, None);
            in_flight.lock().unwrap().0 -= 1;
        })
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""jobs""#);
    let reference = format!("127.0.0.1:{}/nixlayer-test/jobs:1", proxy.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path()).args(["--jobs", jobs, "--no-cache"]),
        Duration::from_secs(100),
    );
    assert_exit(&out, 0);
    assert_eq!(blobs(&json(&out.stdout)), (4, 0));
    let max = in_flight.lock().unwrap().1;
    Some(max)
}

#[test]
fn layers_upload_at_once_as_jobs_allows() {
    let Some(three) = concurrent_uploads("3") else {
        return;
    };
    assert!(three >= 2, "at most {three} upload at once with --jobs 3");
    let one = concurrent_uploads("1").unwrap();
    assert_eq!(one, 1, "--jobs 1");
}

#[test]
fn a_failed_upload_ends_the_push_and_leaves_no_spool() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("docker-registry") {
        return;
    }
    let registry = crate::push::fresh_registry();
    let upstream = format!("127.0.0.1:{}", registry.port);
    // Every blob's final PUT is refused, with a reason.
    let proxy = Server::start(move |mut conn, seen, rest, _| {
        if seen.method == "PUT" && seen.target.contains("digest=") {
            drain(&mut conn, seen, &rest);
            respond(
                conn,
                "403 Forbidden",
                &[("Content-Type", "application/json")],
                r#"{"errors":[{"code":"DENIED","message":"quota exceeded"}]}"#,
            );
        } else {
            forward_to(&upstream, conn, seen, rest, None);
        }
    });
    let tmp = util::temp_dir();
    let spool = tmp.path().join("tmp");
    std::fs::create_dir(&spool).unwrap();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""denied""#);
    let reference = format!("127.0.0.1:{}/nixlayer-test/denied:1", proxy.port);
    let (out, _) = run_bounded(
        push_cmd(&m, &reference, tmp.path())
            .args(["--no-cache", "--jobs", "2"])
            .env("TMPDIR", &spool),
        Duration::from_secs(100),
    );
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains("403") && stderr.contains("quota exceeded"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no summary on stdout");
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// A re-push trusts the layer cache's record of the blobs it put in the
/// repository: it asks the registry about none of them (only about the new
/// config). When a recorded blob has gone from the registry (here removed
/// from its storage, as a garbage collection would), the registry refuses
/// the manifest, and the push goes again asking about every blob,
/// uploading the missing one: the image is complete.
#[test]
fn a_re_push_asks_only_about_new_blobs_and_recovers_a_vanished_one() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("skopeo") || !util::require_tool("docker-registry")
    {
        return;
    }
    let (registry, proxy) = registry_behind_proxy();
    let tmp = util::temp_dir();
    let reference = format!("127.0.0.1:{}/nixlayer-test/records:1", proxy.port);
    let push = |cmd: &str| {
        let m = manifest(tmp.path(), "image.toml", &hello, cmd);
        let before = proxy.seen().len();
        let (out, _) = run_bounded(
            push_cmd(&m, &reference, tmp.path()).env("XDG_CACHE_HOME", tmp.path().join("cache")),
            Duration::from_secs(100),
        );
        assert_exit(&out, 0);
        let heads: Vec<String> = proxy.seen()[before..]
            .iter()
            .filter(|s| s.method == "HEAD")
            .map(|s| s.target.clone())
            .collect();
        (json(&out.stdout), heads)
    };
    let (first, heads) = push(r#""records", "1""#);
    assert_eq!(blobs(&first), (4, 0), "{first}");
    assert_eq!(heads.len(), 4, "{heads:?}");

    // Another config over the same layers: only the config is asked about.
    let (second, heads) = push(r#""records", "2""#);
    assert_eq!(blobs(&second), (1, 3), "{second}");
    assert_eq!(second["blobs"]["layers_cached"], 3, "{second}");
    let config = second["config_digest"].as_str().unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].ends_with(config), "{heads:?}");

    // A layer vanishes from the registry.
    let layer = second["layers"][0]["digest"].as_str().unwrap().to_owned();
    let hex = layer.strip_prefix("sha256:").unwrap();
    let storage = registry.storage();
    std::fs::remove_dir_all(storage.join(format!("blobs/sha256/{}/{hex}", &hex[..2]))).unwrap();
    std::fs::remove_dir_all(storage.join(format!(
        "repositories/nixlayer-test/records/_layers/sha256/{hex}"
    )))
    .unwrap();
    let (third, heads) = push(r#""records", "3""#);
    // The first attempt asked about the new config, then (the manifest
    // refused) about the three layers it had taken for present; the second
    // about every blob, and uploaded the vanished layer again (the config
    // went up in the first).
    assert_eq!(heads.len(), 1 + 3 + 4, "{heads:?}");
    assert_eq!(blobs(&third), (1, 3), "{third}");
    let inspect = json(&util::tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!(
                "docker://127.0.0.1:{}/nixlayer-test/records:1",
                registry.port
            ),
        ],
    ));
    assert_eq!(inspect["Digest"], third["manifest_digest"]);
    // Every blob is there to pull.
    let copied = tmp.path().join("copied");
    util::tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!(
                "docker://127.0.0.1:{}/nixlayer-test/records:1",
                registry.port
            ),
            &format!("oci:{}:x", copied.display()),
        ],
    );
    assert!(copied.join(format!("blobs/sha256/{hex}")).is_file());
}

/// A large layer (four chunks of tar bytes or more) is uploaded while it
/// is compressed, once the registry has lacked the layers before it: its
/// upload session starts before its digest is known (before the `HEAD`
/// that asks for it at its commit), every chunk goes into that one
/// session, and the image is the one an OCI layout build writes. Other
/// layers are asked about first, as before. With `--threads 1` the layers
/// are written one after another, so the first ones are committed
/// (missing) before libc's, the fourth, starts. (The second, hello's, is
/// large too and starts before the first is committed: it is streamed
/// from a later chunk, or, if written by then, uploaded after its `HEAD`.)
#[test]
fn a_large_layer_is_uploaded_while_it_is_written() {
    // debian-libc's layer, the last: 2 MB of gzip, more than the spool
    // file's 1 MiB write buffer holds back.
    let (Some(greeting), Some(hello), Some(busybox), Some(libc)) = (
        util::nix_fixture("greeting"),
        util::nix_fixture("hello"),
        util::nix_fixture("busybox"),
        util::nix_fixture("debian-libc"),
    ) else {
        return;
    };
    if !registry_ready() || !util::require_tool("docker-registry") {
        return;
    }
    let (_registry, proxy) = registry_behind_proxy();
    let tmp = util::temp_dir();
    let roots =
        [&greeting, &hello, &busybox, &libc].map(|p| format!("{:?}", p.display().to_string()));
    let m = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"nixlayer-test/streamed\"\ntag = \"1\"\n[closure]\nroots = [{}]\n",
            roots.join(", ")
        ),
    );
    let built = crate::support::gzip_layout(&m, &tmp.path().join("layout"));
    let reference = format!("127.0.0.1:{}/nixlayer-test/streamed:1", proxy.port);
    let chunk = 65536;
    let push = || {
        run_bounded(
            push_cmd(&m, &reference, tmp.path()).args([
                "--chunk-size",
                &chunk.to_string(),
                "--no-cache",
                "--threads",
                "1",
            ]),
            Duration::from_secs(100),
        )
        .0
    };
    let out = push();
    assert_exit(&out, 0);
    let pushed = json(&out.stdout);
    assert_eq!(pushed["manifest_digest"], built["manifest_digest"]);
    assert_eq!(blobs(&pushed), (5, 0), "{pushed}");

    let seen = proxy.seen();
    let path = |s: &Seen| s.target.split('?').next().unwrap_or_default().to_owned();
    let mut streamed = Vec::new();
    for layer in pushed["layers"].as_array().unwrap() {
        let hex = layer["digest"].as_str().unwrap()["sha256:".len()..].to_owned();
        let head = seen
            .iter()
            .position(|s| s.method == "HEAD" && s.target.ends_with(&hex));
        let put = seen
            .iter()
            .find(|s| s.method == "PUT" && s.target.contains(&hex))
            .unwrap_or_else(|| panic!("no final PUT of {hex}"));
        let session = path(put);
        let patches: Vec<usize> = seen
            .iter()
            .enumerate()
            .filter(|(_, s)| s.method == "PATCH" && path(s) == session)
            .map(|(i, _)| i)
            .collect();
        let size = layer["size"].as_u64().unwrap();
        let head = head.expect("a HEAD at its commit");
        if size <= chunk {
            // One chunk: in one PUT, after its HEAD.
            assert!(patches.is_empty(), "{layer}");
            let put = seen
                .iter()
                .position(|s| s.method == "PUT" && s.target.contains(&hex));
            assert!(put.is_some_and(|p| p > head), "{layer}");
            continue;
        }
        assert!(patches.len() as u64 >= size.div_ceil(chunk), "{layer}");
        // Sent before its digest was asked about: streamed.
        if patches[0] < head {
            streamed.push(hex);
        } else {
            assert!(patches.iter().all(|&p| p > head), "{layer}");
        }
    }
    let last = pushed["layers"][3]["digest"].as_str().unwrap();
    assert!(
        streamed.iter().any(|s| last.ends_with(s.as_str())),
        "{pushed}"
    );

    // Again, with no layer cache: the registry holds the first layers, so
    // the large one is asked about before any byte of it is sent, and no
    // byte is.
    let before = proxy.seen().len();
    let out = push();
    assert_exit(&out, 0);
    assert_eq!(blobs(&json(&out.stdout)), (0, 5));
    let again = proxy.seen();
    let sent: Vec<&Seen> = again[before..]
        .iter()
        .filter(|s| s.method == "PATCH" || s.method == "POST")
        .collect();
    assert!(sent.is_empty(), "{} uploads", sent.len());
}

/// Bytes that stand for a compressed layer: any bytes do for the sink.
fn blob_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift: incompressible enough, and the same every run.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// An empty registry of its own and a proxy that only forwards to it
/// (and records what it saw).
fn registry_behind_proxy() -> (crate::push::AuthRegistry, Server) {
    let registry = crate::push::fresh_registry();
    let upstream = format!("127.0.0.1:{}", registry.port);
    let proxy = Server::start(move |conn, seen, rest, _| {
        forward_to(&upstream, conn, seen, rest, None);
    });
    (registry, proxy)
}

/// A registry sink pushing to `repository` through the proxy on `port`,
/// `chunk` bytes a `PATCH`, driven by the test itself (so the order in
/// which layers start, are written and are committed is the test's).
fn sink_through(port: u16, repository: &str, chunk: u64) -> nixlayer::sink::registry::RegistrySink {
    use nixlayer::sink::registry::{Client, ClientOptions, Reference, RegistrySink};
    let target = Reference::parse(&format!("127.0.0.1:{port}/{repository}:1")).unwrap();
    let options = ClientOptions {
        insecure: true,
        chunk_size: chunk,
        ..ClientOptions::default()
    };
    RegistrySink::new(
        Client::new(&target, options),
        nixlayer::codec::CompressOptions::NONE,
        Vec::new(),
    )
    .unwrap()
}

/// Writes and commits a small layer the registry lacks (it is uploaded,
/// and tells the sink the registry lacks this image's layers); its bytes
/// and digest.
fn commit_small_layer(
    sink: &mut nixlayer::sink::registry::RegistrySink,
) -> (Vec<u8>, nixlayer::oci::Digest) {
    use nixlayer::sink::ImageSink as _;
    let small = b"a small layer".to_vec();
    let small_digest = nixlayer::oci::Digest::of(&small);
    let mut small_blob = sink
        .start_layer(&nixlayer::oci::Digest::of(b"small"), small.len() as u64)
        .unwrap();
    small_blob.write_all(&small).unwrap();
    assert!(sink
        .commit_layer(small_blob, &small_digest, small.len() as u64)
        .unwrap());
    (small, small_digest)
}

/// Waits (at most 20 s) until `server` has seen `n` `PATCH`es of exactly
/// `len` bytes.
fn wait_for_patches(server: &Server, len: usize, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let full = server
            .seen()
            .iter()
            .filter(|s| s.method == "PATCH" && content_length(s) == len)
            .count();
        if full >= n {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Puts the config and manifest of `layers` through `sink` (which waits
/// for every upload first) and tags it: the push's last steps.
fn finish_image(
    mut sink: nixlayer::sink::registry::RegistrySink,
    layers: &[(&[u8], nixlayer::oci::Digest)],
) -> Result<(), nixlayer::sink::Error> {
    use nixlayer::oci::{Descriptor, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE};
    use nixlayer::sink::{ImageEntry, ImageSink, Platform};
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (config_digest, _) = sink.put_blob(config)?;
    let config = Descriptor {
        media_type: CONFIG_MEDIA_TYPE.to_owned(),
        digest: config_digest,
        size: config.len() as u64,
    };
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|(bytes, digest)| Descriptor {
            media_type: format!("{LAYER_MEDIA_TYPE}+gzip"),
            digest: *digest,
            size: bytes.len() as u64,
        })
        .collect();
    let manifest = nixlayer::oci::manifest_json(&config, &layers);
    let platform = Platform {
        os: "linux".to_owned(),
        architecture: "amd64".to_owned(),
        variant: None,
    };
    sink.put_manifest(&ImageEntry {
        platform: &platform,
        config: &config,
        layers: &layers,
        manifest: &manifest,
    })?;
    sink.finish("image:1").map(|_| ())
}

/// The bytes the registry stores as blob `digest`.
fn stored_blob(registry: &crate::push::AuthRegistry, digest: &nixlayer::oci::Digest) -> Vec<u8> {
    let hex = digest.hex();
    std::fs::read(
        registry
            .storage()
            .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
    )
    .unwrap_or_default()
}

/// How many `PATCH`es each upload session (path) got, fewest first.
fn patches_per_session(seen: &[Seen]) -> Vec<usize> {
    let mut sessions: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for s in seen.iter().filter(|s| s.method == "PATCH") {
        *sessions
            .entry(s.target.split('?').next().unwrap_or_default())
            .or_default() += 1;
    }
    let mut counts: Vec<usize> = sessions.into_values().collect();
    counts.sort_unstable();
    counts
}

/// Layers are written several at a time, the largest first, so a large
/// layer starts before the registry was asked about any other: it is not
/// streamed then (the registry might hold it), but from its first chunk
/// written once a smaller layer was found missing, the chunks spooled
/// before that going first; all before its digest is known, in one
/// session, and the registry holds its exact bytes.
#[test]
fn a_large_layer_started_first_streams_once_another_was_found_missing() {
    if !registry_ready() || !util::require_tool("docker-registry") {
        return;
    }
    use nixlayer::sink::ImageSink;
    let (registry, proxy) = registry_behind_proxy();
    let chunk = 65536;
    let mut sink = sink_through(proxy.port, "nixlayer-test/first", chunk as u64);
    let big = blob_bytes(10 * chunk + 123, 1);
    let big_digest = nixlayer::oci::Digest::of(&big);
    // Eight chunks' worth of tar: a large layer.
    let mut big_blob = sink
        .start_layer(&nixlayer::oci::Digest::of(b"big"), 8 * chunk as u64)
        .unwrap();
    big_blob.write_all(&big[..3 * chunk]).unwrap();
    big_blob.flush().unwrap();
    // Nothing is known of the registry yet: nothing is sent.
    thread::sleep(Duration::from_millis(300));
    assert!(
        proxy
            .seen()
            .iter()
            .all(|s| s.method != "PATCH" && s.method != "POST"),
        "{:?}",
        proxy.seen()
    );
    let (small, small_digest) = commit_small_layer(&mut sink);
    // The registry lacked it: the large layer's next write starts its
    // stream, which sends what was spooled so far, then goes on.
    big_blob.write_all(&big[3 * chunk..]).unwrap();
    big_blob.flush().unwrap();
    assert!(
        wait_for_patches(&proxy, chunk, 10),
        "the large layer was not streamed before its commit: {:?}",
        proxy.seen()
    );
    assert!(!proxy
        .seen()
        .iter()
        .any(|s| s.method == "HEAD" && s.target.ends_with(&big_digest.hex())));
    assert!(sink
        .commit_layer(big_blob, &big_digest, big.len() as u64)
        .unwrap());
    finish_image(sink, &[(&small, small_digest), (&big, big_digest)]).unwrap();
    assert_eq!(stored_blob(&registry, &big_digest), big);
    assert_eq!(stored_blob(&registry, &small_digest), small);
    let seen = proxy.seen();
    // The large layer's eleven PATCHes in one session (the small one
    // went in one PUT).
    assert_eq!(patches_per_session(&seen), [11]);
}

/// A streamed upload that fails (here its first `PATCH` is refused with a
/// 403, which no retry follows) is abandoned, and the layer's spooled blob
/// is uploaded as any other, in a session of its own: the push succeeds
/// and the registry holds the blob's exact bytes, completed once.
#[test]
fn a_failed_stream_falls_back_to_the_spooled_upload() {
    if !registry_ready() || !util::require_tool("docker-registry") {
        return;
    }
    use nixlayer::sink::ImageSink;
    let registry = crate::push::fresh_registry();
    let upstream = format!("127.0.0.1:{}", registry.port);
    let chunk = 65536;
    let refused = Arc::new(AtomicBool::new(false));
    let proxy = {
        let refused = refused.clone();
        Server::start(move |mut conn, seen, rest, _| {
            // The first chunk-sized PATCH: the stream's (the small
            // layer goes in one PUT).
            if seen.method == "PATCH"
                && content_length(seen) == chunk
                && !refused.swap(true, Ordering::SeqCst)
            {
                drain(&mut conn, seen, &rest);
                return respond(
                    conn,
                    "403 Forbidden",
                    &[("Content-Type", "application/json")],
                    r#"{"errors":[{"code":"DENIED","message":"not this one"}]}"#,
                );
            }
            forward_to(&upstream, conn, seen, rest, None);
        })
    };
    let mut sink = sink_through(proxy.port, "nixlayer-test/fallback", chunk as u64);
    let (small, small_digest) = commit_small_layer(&mut sink);
    // The registry lacks this image: the large layer streams at once.
    let big = blob_bytes(6 * chunk + 77, 2);
    let big_digest = nixlayer::oci::Digest::of(&big);
    let mut big_blob = sink
        .start_layer(&nixlayer::oci::Digest::of(b"big"), 8 * chunk as u64)
        .unwrap();
    big_blob.write_all(&big).unwrap();
    big_blob.flush().unwrap();
    assert!(
        wait_for_patches(&proxy, chunk, 1),
        "not streamed: {:?}",
        proxy.seen()
    );
    assert!(sink
        .commit_layer(big_blob, &big_digest, big.len() as u64)
        .unwrap());
    finish_image(sink, &[(&small, small_digest), (&big, big_digest)]).unwrap();
    assert!(refused.load(Ordering::SeqCst));
    assert_eq!(stored_blob(&registry, &big_digest), big);
    let seen = proxy.seen();
    // The stream's session got the refused PATCH only; the spooled upload
    // a session of its own with every chunk.
    assert_eq!(patches_per_session(&seen), [1, 7]);
    let finals = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.target.contains(&big_digest.hex()))
        .count();
    assert_eq!(finals, 1);
}

/// A layer blob that takes any bytes (and whose sealing panics).
struct PanickingBlob;

impl Write for PanickingBlob {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink taking blobs several at a time (as a registry or a layout does)
/// that panics sealing a layer, on the layer's own thread.
struct PanickingSink;

impl nixlayer::sink::ImageSink for PanickingSink {
    type Blob = PanickingBlob;
    type Output = ();

    fn layer_form(&self) -> nixlayer::sink::LayerForm {
        nixlayer::sink::LayerForm::Blobs(nixlayer::codec::CompressOptions::NONE)
    }

    fn concurrent_layers(&self) -> bool {
        true
    }

    fn seal_layer(_: &mut PanickingBlob) -> Result<(), nixlayer::sink::Error> {
        panic!("a layer sink that panics (a test)");
    }

    fn start_layer(
        &mut self,
        _: &nixlayer::oci::Digest,
        _: u64,
    ) -> Result<PanickingBlob, nixlayer::sink::Error> {
        Ok(PanickingBlob)
    }

    fn commit_layer(
        &mut self,
        _: PanickingBlob,
        _: &nixlayer::oci::Digest,
        _: u64,
    ) -> Result<bool, nixlayer::sink::Error> {
        Ok(true)
    }

    fn put_blob(
        &mut self,
        bytes: &[u8],
    ) -> Result<(nixlayer::oci::Digest, bool), nixlayer::sink::Error> {
        Ok((nixlayer::oci::Digest::of(bytes), true))
    }

    fn put_manifest(
        &mut self,
        image: &nixlayer::sink::ImageEntry<'_>,
    ) -> Result<(nixlayer::oci::Descriptor, bool), nixlayer::sink::Error> {
        let desc = nixlayer::oci::Descriptor {
            media_type: nixlayer::oci::MANIFEST_MEDIA_TYPE.to_owned(),
            digest: nixlayer::oci::Digest::of(image.manifest),
            size: image.manifest.len() as u64,
        };
        Ok((desc, true))
    }

    fn finish(self, _: &str) -> Result<((), Option<u64>), nixlayer::sink::Error> {
        Ok(((), None))
    }
}

/// A layer writer that panics (here the sink, sealing each layer on the
/// layer's thread) fails the build with an error that says so — what
/// `push` and the OCI outputs report before exiting 1 — instead of taking
/// the process down or waiting forever for the layer: the layers are
/// written on threads of their own (two at a time), and the panic is
/// caught there.
#[test]
fn a_panicking_layer_writer_fails_the_build_with_an_error() {
    use nixlayer::manifest::LoadedManifest;
    use nixlayer::ops::settings::{self, Environment, Overrides};
    use nixlayer::ops::{self, NoReporter};

    let repo = util::repo();
    let tmp = util::temp_dir();
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            r#"name = "nixlayer-test/panics"
tag = "1"
created = "2024-01-01T00:00:00Z"
max_layers = 3

{closure}"#,
            closure = crate::support::example_closure(&repo.join("fixtures/example/store")),
        ),
    );
    let loaded = LoadedManifest::load(&manifest).unwrap();
    let env = Environment {
        now: jiff::Timestamp::UNIX_EPOCH,
        source_date_epoch: None,
        cache_dir: None,
        binary_cache: Default::default(),
    };
    let mut overrides = Overrides::default();
    overrides.threads = std::num::NonZeroUsize::new(2);
    let resolved = settings::resolve_build(&loaded, &overrides, &env).unwrap();
    let image = ops::prepare(&resolved.settings).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let result = ops::build(&resolved.settings, &image, PanickingSink, &NoReporter);
        // The error with its causes, as the command line shows them.
        let _ = tx.send(result.map(|_| ()).map_err(|e| {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text += &format!(": {c}");
                cause = c.source();
            }
            text
        }));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the build hung or panicked instead of failing");
    let err = result.expect_err("a build whose layer writer panicked succeeded");
    assert!(err.contains("panicked"), "{err}");
}

/// A token realm on HTTPS whose certificate is not trusted: the push ends
/// with a TLS error naming the realm's host and the ways to trust it, as
/// for the registry itself, not with an authentication failure.
#[test]
fn an_untrusted_token_realm_is_a_tls_error() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("docker-registry") || !util::require_tool("openssl") {
        return;
    }
    let tmp = util::temp_dir();
    // The realm: any HTTPS server with a certificate from a CA made here.
    let (realm, _) = crate::support::tls_registry(tmp.path(), "realm");
    let challenge = format!(
        "Bearer realm=\"https://127.0.0.1:{}/token\",service=\"faults\"",
        realm.port
    );
    let registry = Server::start(move |conn, _, _, _| {
        respond(
            conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", &challenge)],
            "",
        );
    });
    let m = fresh_manifest(tmp.path(), &hello);
    let reference = format!("127.0.0.1:{}/nixlayer-test/faults:realm", registry.port);
    let mut cmd = push_cmd(&m, &reference, tmp.path());
    cmd.env("NIXLAYER_CERTS_D", tmp.path().join("certs.d-empty"))
        .env_remove("SSL_CERT_FILE");
    let (out, _) = run_bounded(&mut cmd, Duration::from_secs(60));
    let stderr = assert_exit(&out, 1);
    assert!(
        stderr.contains(&format!("127.0.0.1:{}: TLS failed", realm.port))
            && stderr.contains("UnknownIssuer")
            && stderr.contains("--ca-file"),
        "{stderr}"
    );
}

/// A token realm that answers 503 once, or drops the connection once, is
/// asked again, as the registry is: the token comes on the next attempt.
#[test]
fn a_token_realm_failing_once_is_asked_again() {
    use nixlayer::sink::registry::{Client, ClientOptions, Reference};
    for fault in ["503", "drop"] {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let realm = {
            let asked = asked.clone();
            Server::start(move |conn, _, _, _| {
                if asked.fetch_add(1, Ordering::SeqCst) > 0 {
                    respond(conn, "200 OK", &[], r#"{"token":"tok-1"}"#);
                } else if fault == "503" {
                    respond(conn, "503 Service Unavailable", &[], "busy");
                } else {
                    let _ = conn.shutdown(Shutdown::Both);
                }
            })
        };
        let challenge = format!("Bearer realm=\"{}/token\",service=\"faults\"", realm.url());
        let registry = Server::start(move |conn, seen, _, _| {
            if seen.header("authorization") == Some("Bearer tok-1") {
                respond(conn, "200 OK", &[], "{}");
            } else {
                respond(
                    conn,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", &challenge)],
                    "",
                );
            }
        });
        let target = Reference::parse(&format!(
            "127.0.0.1:{}/nixlayer-test/realm:1",
            registry.port
        ))
        .unwrap();
        let client = Client::new(
            &target,
            ClientOptions {
                insecure: true,
                ..ClientOptions::default()
            },
        );
        client.ping().unwrap_or_else(|e| panic!("{fault}: {e:?}"));
        assert_eq!(asked.load(Ordering::SeqCst), 2, "{fault}");
    }
}
