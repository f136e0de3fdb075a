//! `[base] image = "docker://…@sha256:…"`: a base image pulled from the real
//! registry on 127.0.0.1:5000 (pushed there by `nixlayer push`), cached by
//! digest so a second build needs no registry, resolved from an index to
//! the image's platform, and refused without a digest or with a wrong one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::push::{json, registry_ready, REGISTRY};
use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GETs `path` from the registry's API.
fn get(path: &str, accept: &str) -> Vec<u8> {
    let mut resp = agent()
        .get(format!("http://{REGISTRY}/v2/{path}"))
        .header("Accept", accept)
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap()
}

/// The diff_ids of the config of manifest `digest` in `repo`.
fn registry_diff_ids(repo: &str, digest: &str) -> Vec<Value> {
    let manifest: Value = serde_json::from_slice(&get(
        &format!("{repo}/manifests/{digest}"),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: Value =
        serde_json::from_slice(&get(&format!("{repo}/blobs/{config_digest}"), "*/*")).unwrap();
    config["rootfs"]["diff_ids"].as_array().unwrap().clone()
}

/// The diff_ids of the one image of OCI layout `dir`.
fn layout_diff_ids(dir: &Path) -> Vec<Value> {
    let read =
        |p: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob = |d: &Value| dir.join("blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let index = read(dir.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    let config = read(blob(&manifest["config"]["digest"]));
    config["rootfs"]["diff_ids"].as_array().unwrap().clone()
}

/// Pushes a small image (`[customisation]` file `/etc/base.txt` holding
/// `text`, plus `roots`) as `repo:tag`; its manifest digest.
fn push_base(dir: &Path, repo: &str, tag: &str, text: &str, roots: &str, arch: &str) -> String {
    let manifest = util::write(
        dir,
        &format!("base-{tag}.toml"),
        &format!(
            r#"
name = "nixlayer-test/pull-base"
tag = "{tag}"
architecture = "{arch}"
[closure]
roots = [{roots}]
[[customisation.files]]
path = "/etc/base.txt"
text = "{text}\n"
"#
        ),
    );
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&manifest)
            .arg(format!("{REGISTRY}/{repo}:{tag}"))
            .arg("--json"),
        0,
    );
    json(&out.stdout)["manifest_digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A manifest on base `image`, running `entrypoint`.
fn top(dir: &Path, name: &str, image: &str, extra: &str, entrypoint: &str) -> PathBuf {
    util::write(
        dir,
        name,
        &format!(
            r#"
name = "nixlayer-test/on-pulled"
tag = "t"
{extra}
[base]
image = "{image}"
[closure]
roots = []
[config]
Entrypoint = [{entrypoint}]
[[customisation.files]]
path = "/etc/top.txt"
text = "from the top\n"
"#
        ),
    )
}

/// Builds `manifest` to `out` with the image cache under `cache`.
fn build(manifest: &Path, out: &Path, format: &str, cache: &Path, code: i32) -> String {
    let output = run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .args(["--format", format, "-o"])
            .arg(out)
            .env("XDG_CACHE_HOME", cache),
        code,
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_base_pulled_by_digest_builds_runs_and_is_cached() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let cache = tmp.path().join("cache");
    let repo = "nixlayer-test/pull-base";
    let roots = format!("\"{}\"", hello.display());
    let digest = push_base(tmp.path(), repo, "p1", "from the base", &roots, "amd64");
    let image = format!("docker://{REGISTRY}/{repo}:p1@{digest}");
    let entry = format!("\"{}/bin/hello\", \"pulled\"", hello.display());
    let m = top(tmp.path(), "top.toml", &image, "", &entry);

    let layout = tmp.path().join("layout");
    build(&m, &layout, "oci-layout", &cache, 0);
    let base_ids = registry_diff_ids(repo, &digest);
    let ids = layout_diff_ids(&layout);
    assert_eq!(
        ids.len(),
        base_ids.len() + 1,
        "the base's layers and one more"
    );
    assert_eq!(ids[..base_ids.len()], base_ids[..], "base layers unchanged");
    let cached = cache
        .join("nixlayer/images")
        .join(format!("sha256-{}-linux-amd64", &digest[7..]));
    assert!(cached.join("index.json").is_file(), "cached by digest");

    // From the cache: the same digest behind a port where nothing listens
    // still builds, so the registry is not asked.
    let offline = top(
        tmp.path(),
        "offline.toml",
        &format!("docker://127.0.0.1:1/{repo}:p1@{digest}"),
        "",
        &entry,
    );
    let archive = tmp.path().join("offline.tar");
    build(&offline, &archive, "docker-archive", &cache, 0);
    let again = tmp.path().join("again");
    build(&offline, &again, "oci-layout", &cache, 0);
    assert_eq!(
        layout_diff_ids(&again),
        ids,
        "the same image from the cache"
    );

    // A cached copy edited to name another image is refused, not used.
    let index_json = cached.join("index.json");
    let saved = std::fs::read(&index_json).unwrap();
    let other = String::from_utf8(saved.clone())
        .unwrap()
        .replace(&digest[7..], &"0".repeat(64));
    std::fs::write(&index_json, other).unwrap();
    let stale = tmp.path().join("stale.tar");
    let stderr = build(&offline, &stale, "docker-archive", &cache, 1);
    assert!(
        stderr.contains("names another image; remove that directory"),
        "{stderr}"
    );
    assert!(!stale.exists());
    std::fs::write(&index_json, saved).unwrap();

    if !docker_ready() {
        return;
    }
    docker(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        docker_run("nixlayer-test/on-pulled:t"),
        "hello from nixlayer\nargs: pulled\n"
    );
}

#[test]
fn a_wrong_digest_or_none_is_refused_and_leaves_nothing() {
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let cache = tmp.path().join("cache");
    let wrong = format!(
        "docker://{REGISTRY}/nixlayer-test/pull-base:p1@sha256:{}",
        "0".repeat(64)
    );
    let m = top(tmp.path(), "wrong.toml", &wrong, "", "\"/x\"");
    let out = tmp.path().join("out.tar");
    let stderr = build(&m, &out, "docker-archive", &cache, 1);
    assert!(
        stderr.contains(&format!("failed to pull base image `{wrong}`")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "no output");
    let images = cache.join("nixlayer/images");
    let left: Vec<_> = std::fs::read_dir(&images)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing cached or left: {left:?}");

    // A tag without a digest: a located manifest error, before any request.
    let tag_only = top(
        tmp.path(),
        "tag.toml",
        "docker://127.0.0.1:1/nixlayer-test/pull-base:p1",
        "",
        "\"/x\"",
    );
    let stderr = build(&tag_only, &out, "docker-archive", &cache, 1);
    assert!(stderr.contains("tag.toml:6:"), "located: {stderr}");
    assert!(stderr.contains("has no digest"), "{stderr}");
    assert!(stderr.contains("@sha256:"), "hint: {stderr}");
    assert!(!out.exists(), "no output");

    // A password before the host (as in a URL): refused, located, and
    // never shown (before, the whole reference was quoted, password and
    // all, as "not a digest").
    let with_password = top(
        tmp.path(),
        "password.toml",
        &format!(
            "docker://bob:s3cret-pw@127.0.0.1:1/nixlayer-test/pull-base@sha256:{}",
            "0".repeat(64)
        ),
        "",
        "\"/x\"",
    );
    let stderr = build(&with_password, &out, "docker-archive", &cache, 1);
    assert!(
        stderr.contains("password.toml:6:")
            && stderr.contains("`docker://<redacted>@127.0.0.1:1/nixlayer-test/pull-base@sha256:")
            && stderr.contains("credentials do not go in a reference")
            && !stderr.contains("s3cret"),
        "{stderr}"
    );
    assert!(!out.exists(), "no output");
}

#[test]
fn an_index_resolves_to_the_images_platform() {
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let cache = tmp.path().join("cache");
    let repo = "nixlayer-test/pull-index";
    let amd = push_base(tmp.path(), repo, "amd64", "amd64 base", "", "amd64");
    let arm = push_base(tmp.path(), repo, "arm64", "arm64 base", "", "arm64");
    let size = |d: &str| {
        get(
            &format!("{repo}/manifests/{d}"),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .len()
    };
    let entry = |d: &str, arch: &str, variant: Option<&str>| {
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": d,
            "size": size(d),
            "platform": platform,
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64", Some("v8")), entry(&amd, "amd64", None)],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let resp = agent()
        .put(format!("http://{REGISTRY}/v2/{repo}/manifests/multi"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .send(&bytes[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "index accepted");
    let index_digest = format!("sha256:{}", sha256_hex(&bytes));
    let image = format!("docker://{REGISTRY}/{repo}:multi@{index_digest}");

    for (arch, extra, want) in [
        ("amd64", "architecture = \"amd64\"", &amd),
        ("arm64", "architecture = \"arm64\"", &arm),
        (
            "arm64/v8",
            "architecture = \"arm64\"\nvariant = \"v8\"",
            &arm,
        ),
    ] {
        let m = top(tmp.path(), "top.toml", &image, extra, "\"/x\"");
        let layout = tmp
            .path()
            .join(format!("layout-{}", arch.replace('/', "-")));
        // One cache for all: a platform never gets another's layers.
        build(&m, &layout, "oci-layout", &cache, 0);
        let base_ids = registry_diff_ids(repo, want);
        assert_eq!(
            layout_diff_ids(&layout)[..base_ids.len()],
            base_ids[..],
            "{arch}"
        );
    }

    // A platform the index lacks: an error naming what it offers.
    let m = top(
        tmp.path(),
        "s390x.toml",
        &image,
        "architecture = \"s390x\"",
        "\"/x\"",
    );
    let stderr = build(&m, &tmp.path().join("none"), "oci-layout", &cache, 1);
    assert!(
        stderr.contains("no image for linux/s390x") && stderr.contains("linux/arm64/v8"),
        "{stderr}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A registry stand-in on 127.0.0.1 answering GETs of `routes` (path →
/// content type and body; content type `redirect`: a 307 to the body) and
/// 404 otherwise, for at most `limit`
/// connections; anything that is not an HTTP request (the client's TLS
/// probe) is dropped.
fn serve(routes: Vec<(String, String, Vec<u8>)>, limit: usize) -> u16 {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(limit) {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || !line.starts_with("GET ") {
                continue;
            }
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(n) if n > 2 => {}
                    _ => break,
                }
            }
            let path = line.split(' ').nth(1).unwrap_or_default();
            let head = match routes.iter().find(|(p, _, _)| p == path) {
                Some((_, media_type, body)) if media_type == "redirect" => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        String::from_utf8_lossy(body)
                    );
                    Vec::new()
                }
                Some((_, media_type, body)) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    body.clone()
                }
                None => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    Vec::new()
                }
            };
            let _ = conn.write_all(&head);
        }
    });
    port
}

#[test]
fn tampered_manifests_and_blobs_are_refused_and_nothing_is_cached() {
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let repo = "nixlayer-test/pull-tamper";
    let digest = push_base(tmp.path(), repo, "t", "tampered", "", "amd64");
    let media = "application/vnd.oci.image.manifest.v1+json";
    let manifest_bytes = get(&format!("{repo}/manifests/{digest}"), media);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let mut blobs: Vec<(String, Vec<u8>)> = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| {
            let digest = d["digest"].as_str().unwrap().to_owned();
            let bytes = get(&format!("{repo}/blobs/{digest}"), "*/*");
            (digest, bytes)
        })
        .collect();
    let routes = |manifest: Vec<u8>, blobs: &[(String, Vec<u8>)]| {
        let mut routes = vec![(
            format!("/v2/{repo}/manifests/{digest}"),
            media.to_owned(),
            manifest,
        )];
        for (d, bytes) in blobs {
            routes.push((
                format!("/v2/{repo}/blobs/{d}"),
                "application/octet-stream".to_owned(),
                bytes.clone(),
            ));
        }
        routes
    };
    let out = tmp.path().join("out.tar");
    let cache = tmp.path().join("cache");
    let try_build = |port: u16, name: &str| {
        let image = format!("docker://127.0.0.1:{port}/{repo}:t@{digest}");
        let m = top(tmp.path(), name, &image, "", "\"/x\"");
        let stderr = build(&m, &out, "docker-archive", &cache, 1);
        assert!(
            stderr.contains(&format!("failed to pull base image `{image}`")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "no output");
        let left: Vec<_> = std::fs::read_dir(cache.join("nixlayer/images"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "nothing cached or left: {left:?}");
        stderr
    };

    // A manifest that is not the digest's.
    let mut edited = manifest_bytes.clone();
    edited.push(b'\n');
    let stderr = try_build(serve(routes(edited, &blobs), 20), "manifest.toml");
    assert!(stderr.contains("expected sha256:"), "{stderr}");

    // The last layer with one byte changed, then cut short.
    let last = blobs.len() - 1;
    let mid = blobs[last].1.len() / 2;
    blobs[last].1[mid] ^= 1;
    let stderr = try_build(
        serve(routes(manifest_bytes.clone(), &blobs), 20),
        "blob.toml",
    );
    assert!(stderr.contains(&blobs[last].0), "names the blob: {stderr}");
    blobs[last].1.truncate(mid);
    let stderr = try_build(
        serve(routes(manifest_bytes.clone(), &blobs), 20),
        "short.toml",
    );
    assert!(stderr.contains("bytes where the manifest says"), "{stderr}");
}

#[test]
fn blobs_redirected_to_another_host_are_followed_and_checked() {
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let repo = "nixlayer-test/pull-redirect";
    let digest = push_base(tmp.path(), repo, "r", "redirected", "", "amd64");
    let media = "application/vnd.oci.image.manifest.v1+json";
    let manifest_bytes = get(&format!("{repo}/manifests/{digest}"), media);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let descs: Vec<Value> = std::iter::once(manifest["config"].clone())
        .chain(manifest["layers"].as_array().unwrap().iter().cloned())
        .collect();
    // The "CDN": every blob under /cdn/<digest>.
    let cdn_routes = descs
        .iter()
        .map(|d| {
            let d = d["digest"].as_str().unwrap();
            (
                format!("/cdn/{d}"),
                "application/octet-stream".to_owned(),
                get(&format!("{repo}/blobs/{d}"), "*/*"),
            )
        })
        .collect();
    let cdn = serve(cdn_routes, 20);
    // The registry: the manifest, and each blob a 307 to the CDN (the
    // config relative to itself, then onwards).
    let mut routes = vec![(
        format!("/v2/{repo}/manifests/{digest}"),
        media.to_owned(),
        manifest_bytes,
    )];
    for (i, d) in descs.iter().enumerate() {
        let d = d["digest"].as_str().unwrap();
        let target = if i == 0 {
            format!("/hop/{d}")
        } else {
            format!("http://127.0.0.1:{cdn}/cdn/{d}")
        };
        routes.push((
            format!("/v2/{repo}/blobs/{d}"),
            "redirect".to_owned(),
            target.into_bytes(),
        ));
        if i == 0 {
            let cdn_url = format!("http://127.0.0.1:{cdn}/cdn/{d}");
            routes.push((
                format!("/hop/{d}"),
                "redirect".to_owned(),
                cdn_url.into_bytes(),
            ));
        }
    }
    let port = serve(routes, 20);
    let image = format!("docker://127.0.0.1:{port}/{repo}:r@{digest}");
    let m = top(tmp.path(), "top.toml", &image, "", "\"/x\"");
    let out = tmp.path().join("out");
    build(&m, &out, "oci-layout", &tmp.path().join("cache"), 0);
    let base_ids = registry_diff_ids(repo, &digest);
    assert_eq!(layout_diff_ids(&out)[..base_ids.len()], base_ids[..]);
}

#[test]
fn a_docker_v2_manifest_pushed_by_skopeo_is_a_base_too() {
    if !registry_ready() || !util::require_tool("skopeo") {
        return;
    }
    let tmp = util::temp_dir();
    let base = util::write(
        tmp.path(),
        "base.toml",
        "name = \"nixlayer-test/pull-v2\"\ntag = \"t\"\n[closure]\nroots = []\n\
         [[customisation.files]]\npath = \"/etc/a\"\ntext = \"a\"\n",
    );
    let layout = tmp.path().join("base");
    run(
        nixlayer()
            .arg("build")
            .arg(&base)
            .args(["--format", "oci-layout", "--compression", "gzip", "-o"])
            .arg(&layout),
        0,
    );
    let repo = "nixlayer-test/pull-v2";
    let target = format!("docker://{REGISTRY}/{repo}:t");
    util::tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            &format!("oci:{}", layout.display()),
            &target,
        ],
    );
    let raw = util::tool(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", &target],
    );
    assert!(
        String::from_utf8_lossy(&raw).contains("vnd.docker.distribution.manifest.v2+json"),
        "a docker v2 manifest"
    );
    let digest = format!("sha256:{}", sha256_hex(&raw));
    let m = top(
        tmp.path(),
        "top.toml",
        &format!("{target}@{digest}"),
        "",
        "\"/x\"",
    );
    let out = tmp.path().join("out");
    build(&m, &out, "oci-layout", &tmp.path().join("cache"), 0);
    let base_ids = registry_diff_ids(repo, &digest);
    assert_eq!(layout_diff_ids(&out)[..base_ids.len()], base_ids[..]);
}

#[test]
fn a_push_to_the_base_images_registry_mounts_its_layers() {
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let cache = tmp.path().join("cache");
    let repo = "nixlayer-test/mount-base";
    let digest = push_base(tmp.path(), repo, "m1", "a base to mount", "", "amd64");
    let base_layers = registry_diff_ids(repo, &digest).len();
    let image = format!("docker://{REGISTRY}/{repo}:m1@{digest}");
    let m = top(tmp.path(), "top.toml", &image, "", "\"/x\"");
    // A repository of its own, new on every run, so that the registry
    // holds none of its blobs yet.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let target = format!(
        "{REGISTRY}/nixlayer-test/mount-app-{}-{nonce}:t",
        std::process::id()
    );
    // A fresh layer cache: no record of an earlier push, only the pull.
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&target)
            .arg("--json")
            .env("XDG_CACHE_HOME", &cache),
        0,
    );
    let summary = json(&out.stdout);
    let blobs = &summary["blobs"];
    assert_eq!(
        (blobs["mounted"].as_u64(), blobs["uploaded"].as_u64()),
        (Some(base_layers as u64), Some(2)),
        "the base's layers mounted from {repo}; the top layer and config uploaded: {blobs}"
    );
}

#[test]
fn a_blob_redirected_to_an_untrusted_https_host_is_a_tls_error() {
    if !registry_ready() || !util::require_tool("docker-registry") || !util::require_tool("openssl")
    {
        return;
    }
    let tmp = util::temp_dir();
    let repo = "nixlayer-test/pull-untrusted-cdn";
    let digest = push_base(tmp.path(), repo, "u", "untrusted", "", "amd64");
    let media = "application/vnd.oci.image.manifest.v1+json";
    let manifest_bytes = get(&format!("{repo}/manifests/{digest}"), media);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    // The "CDN": an HTTPS server whose certificate (from a CA made here)
    // nixlayer is not told to trust.
    let (cdn, _) = crate::support::tls_registry(tmp.path(), "cdn");
    let config = manifest["config"]["digest"].as_str().unwrap();
    let routes = vec![
        (
            format!("/v2/{repo}/manifests/{digest}"),
            media.to_owned(),
            manifest_bytes,
        ),
        (
            format!("/v2/{repo}/blobs/{config}"),
            "redirect".to_owned(),
            format!("https://127.0.0.1:{}/cdn/{config}", cdn.port).into_bytes(),
        ),
    ];
    let port = serve(routes, 20);
    let image = format!("docker://127.0.0.1:{port}/{repo}:u@{digest}");
    let m = top(tmp.path(), "top.toml", &image, "", "\"/x\"");
    let out = tmp.path().join("out");
    let empty_certs_d = tmp.path().join("certs.d-empty");
    let output = run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--format", "oci-layout", "-o"])
            .arg(&out)
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .env("NIXLAYER_CERTS_D", &empty_certs_d)
            .env_remove("SSL_CERT_FILE"),
        1,
    );
    // Said as a TLS failure of that host, with the ways to trust it, not
    // as a connection failure retried four times.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{}: TLS failed", cdn.port))
            && stderr.contains("UnknownIssuer")
            && stderr.contains("--ca-file"),
        "{stderr}"
    );
    assert!(!out.exists());
}
