//! Setup several test modules share: the layers of a docker-archive and
//! what GNU tar reads in them; servers a test starts on 127.0.0.1 (killed
//! on drop); certificates made with openssl.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Builds `manifest` as an OCI layout at `layout` with gzip layers and
/// returns `build --json`'s summary.
pub fn gzip_layout(manifest: &Path, layout: &Path) -> serde_json::Value {
    let out = util::run(
        util::nixlayer()
            .arg("build")
            .arg(manifest)
            .args([
                "--format",
                "oci-layout",
                "--compression",
                "gzip",
                "--json",
                "-o",
            ])
            .arg(layout),
        0,
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The layers of a docker-archive, bottom first: their bytes, read with
/// GNU tar through the archive's `manifest.json`.
pub fn archive_layers(archive: &Path) -> Vec<Vec<u8>> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&util::tool("tar", &["-xOf", s(archive), "manifest.json"])).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| util::tool("tar", &["-xOf", s(archive), layer.as_str().unwrap()]))
        .collect()
}

/// The config of a docker-archive's (first) image, read with GNU tar.
pub fn archive_config(archive: &Path) -> serde_json::Value {
    let manifest: serde_json::Value =
        serde_json::from_slice(&util::tool("tar", &["-xOf", s(archive), "manifest.json"])).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    serde_json::from_slice(&util::tool("tar", &["-xOf", s(archive), config])).unwrap()
}

/// The top (customisation) layer of a docker-archive.
pub fn top_layer(archive: &Path) -> Vec<u8> {
    archive_layers(archive).pop().expect("a layer")
}

/// GNU tar with `args`, the tar file on stdin: its stdout, as text.
fn tar_of(layer: &[u8], args: &[&str]) -> String {
    let mut tar = Command::new("tar")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(layer).unwrap();
    let out = tar.wait_with_output().unwrap();
    assert!(out.status.success(), "tar {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `tar -tv` of a layer, owners as numbers, names as stored (`/…`).
pub fn layer_listing(layer: &[u8]) -> String {
    tar_of(layer, &["--numeric-owner", "-tvPf", "-"])
}

/// The text of the file `name` (as stored, `/…`) in a layer.
pub fn layer_file(layer: &[u8], name: &str) -> String {
    tar_of(layer, &["-xOPf", "-", name])
}

/// The line of `listing` ([`layer_listing`]) for the entry `name`
/// (a directory's with its `/`); panics, showing the listing, without one.
pub fn listed<'a>(listing: &'a str, name: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(5) == Some(name))
        .unwrap_or_else(|| panic!("{name} missing:\n{listing}"))
}

/// `CMD build MANIFEST -o OUT` (`cmd` a [`util::nixlayer`], maybe with
/// more environment), which must fail (exit 1) and leave nothing at `out`:
/// its stderr.
pub fn failed_build(cmd: &mut Command, manifest: &Path, out: &Path) -> String {
    let failed = util::run(cmd.arg("build").arg(manifest).arg("-o").arg(out), 1);
    assert!(!out.exists(), "a failed build left {}", out.display());
    String::from_utf8_lossy(&failed.stderr).into_owned()
}

/// A server the test started on 127.0.0.1, killed on drop.
pub struct Spawned {
    pub child: Child,
    pub port: u16,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port of 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `port` of 127.0.0.1
/// (or panics after ~5 s, naming `what`).
pub fn wait_for_port(port: u16, what: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start on port {port}");
}

/// An EC P-256 key and a self-signed certificate for it with common name
/// `cn`, in `dir` (`key.pem`, `cert.pem`): (key, certificate).
pub fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let subject = format!("/CN={cn}");
    // openssl writes the key as PKCS#8, which python, Go and rustls read.
    util::tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            s(&key),
            "-out",
            s(&cert),
            "-subj",
            &subject,
        ],
    );
    (key, cert)
}

/// A test CA and a server certificate for 127.0.0.1 it signed.
pub struct TestCa {
    /// The CA's certificate, to trust.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A [`TestCa`] made with openssl in `dir`.
pub fn test_ca(dir: &Path) -> TestCa {
    let (ca_key, ca) = self_signed(&dir.join("ca"), "nixlayer test CA");
    let p = |n: &str| dir.join(n);
    util::tool(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            s(&p("srv.key")),
            "-out",
            s(&p("srv.csr")),
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    util::tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            s(&p("srv.csr")),
            "-CA",
            s(&ca),
            "-CAkey",
            s(&ca_key),
            "-CAcreateserial",
            "-out",
            s(&p("srv.pem")),
            "-days",
            "2",
            "-extfile",
            s(&p("ext")),
        ],
    );
    TestCa {
        ca,
        cert: p("srv.pem"),
        key: p("srv.key"),
    }
}

/// Waits until `url` answers with `status` (or panics after ~10 s).
pub fn wait_for(url: &str, status: u16, ca: Option<&Path>) {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i.ok()? {
                ureq::tls::PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::from(certs))
                .build(),
        );
    }
    let agent: ureq::Agent = config.build().into();
    for _ in 0..100 {
        if agent
            .get(url)
            .call()
            .is_ok_and(|r| r.status().as_u16() == status)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer {status}");
}

/// A `docker-registry` (Debian's) on a free loopback port with `extra`
/// config (auth, TLS), its storage in `dir`, killed on drop; returned once
/// `GET SCHEME://127.0.0.1:PORT/v2/` answers `status` (200 anonymous,
/// 401 with auth).
pub fn docker_registry(
    dir: &Path,
    extra: &str,
    scheme: &str,
    status: u16,
    ca: Option<&Path>,
) -> Spawned {
    let port = free_port();
    let config = util::write(
        dir,
        "config.yml",
        &format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n\
             http:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.display()
        ),
    );
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let server = Spawned { child, port };
    wait_for(&format!("{scheme}://127.0.0.1:{port}/v2/"), status, ca);
    server
}

/// A [`docker_registry`] (anonymous) on HTTPS with a certificate from a
/// [`test_ca`] made in `dir`, its storage in `dir/NAME`; and the CA's
/// certificate, for the tests that trust it (or show what happens when
/// they do not).
pub fn tls_registry(dir: &Path, name: &str) -> (Spawned, PathBuf) {
    let TestCa { ca, cert, key } = test_ca(dir);
    let extra = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    );
    let storage = dir.join(name);
    std::fs::create_dir_all(&storage).unwrap();
    let registry = docker_registry(&storage, &extra, "https", 200, Some(&ca));
    (registry, ca)
}

/// The `[store]` and `[closure]` tables of a manifest of the embedded
/// example's closure, its store at `store` (`fixtures/example/store` or a
/// copy), ending in a newline.
pub fn example_closure(store: &Path) -> String {
    format!(
        "[store]\nroot = \"{}\"\n\n[closure]\nroots = [\"/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3\"]\nsource = {{ graph = \"{}\" }}\n",
        store.display(),
        util::repo().join("fixtures/example/graph.json").display()
    )
}
