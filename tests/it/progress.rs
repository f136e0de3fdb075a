//! Progress on a real pseudo-terminal (`under_pty.py`, python3's `pty`):
//! what the terminal receives from `build` and `push` on stderr, at
//! several widths, for one platform and several.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{self, nixlayer};

/// What a command left: its exit code, what the terminal received and
/// its stdout when that was not the terminal.
pub struct OnTerminal {
    pub code: Option<i32>,
    pub screen: String,
    pub stdout: Vec<u8>,
}

/// Runs `cmd` with stderr (and stdout too when `stdout_too`) on a new
/// terminal `cols` wide (with `TERM=xterm`: without TERM nothing is
/// drawn); SIGINT once the terminal shows `sigint_at`. `None` (skip) when
/// python3 is missing outside CI.
pub fn on_terminal(
    cmd: &Command,
    cols: u16,
    stdout_too: bool,
    sigint_at: Option<&str>,
) -> Option<OnTerminal> {
    if !util::require_tool("python3") {
        return None;
    }
    let tmp = util::temp_dir();
    let transcript = tmp.path().join("transcript");
    let mut py = Command::new("python3");
    py.arg(util::repo().join("tests/it/under_pty.py"))
        .arg(cols.to_string())
        .arg(&transcript)
        .arg(if stdout_too { "1,2" } else { "2" });
    if let Some(text) = sigint_at {
        py.arg(text);
    }
    py.arg("--").arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => py.env(key, v),
            None => py.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        py.current_dir(dir);
    }
    let out = py
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let screen = std::fs::read(&transcript).unwrap_or_default();
    Some(OnTerminal {
        code: out.status.code(),
        screen: String::from_utf8_lossy(&screen).into_owned(),
        stdout: out.stdout,
    })
}

/// The text of each frame the bar drew: what follows each `\r\x1b[2K`
/// (indicatif's "clear the line") up to the next control character, and
/// the first frame.
pub fn frames(screen: &str) -> Vec<&str> {
    screen
        .split("\r\x1b[2K")
        .map(|f| f.split(|c: char| c.is_control()).next().unwrap_or(""))
        .filter(|f| f.starts_with("layers "))
        .collect()
}

/// Whether the terminal was told to move the cursor up (`ESC [ n A`):
/// indicatif's redraw of a bar that wrapped onto several rows.
fn moves_up(screen: &str) -> bool {
    screen.split("\x1b[").skip(1).any(|s| {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        s.as_bytes().get(digits) == Some(&b'A')
    })
}

/// A copy of the example (three store paths) and a manifest of it.
fn example(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(util::repo().join("fixtures/example/store"))
        .arg(&store)
        .status()
        .expect("cp")
        .success();
    assert!(ok);
    util::write(
        dir,
        "image.toml",
        &format!(
            "name = \"nixlayer-test/progress\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\n\n{}",
            crate::support::example_closure(&store)
        ),
    )
}

/// The bar is one row at any width, 80 columns (the usual default) and
/// 20 alike: its line is cut at the terminal's width. Before, an 80-column
/// terminal got 101 columns (two rows, redrawn by moving the cursor up,
/// which a terminal narrowed meanwhile turns into debris) and a push's
/// line was longer still. The bar is cleared before the summary line.
#[test]
fn the_bar_is_one_row_at_any_width_and_cleared_before_the_summary() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path());
    for cols in [80u16, 20] {
        let mut cmd = nixlayer();
        cmd.env("XDG_CACHE_HOME", tmp.path().join(format!("xdg-{cols}")))
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(tmp.path().join(format!("{cols}.tar")));
        let Some(t) = on_terminal(&cmd, cols, false, None) else {
            return;
        };
        assert_eq!(t.code, Some(0), "{:?}", t.screen);
        let frames = frames(&t.screen);
        assert!(
            !frames.is_empty(),
            "no bar at {cols} columns: {:?}",
            t.screen
        );
        for f in &frames {
            assert!(f.chars().count() <= usize::from(cols), "{cols}: {f:?}");
        }
        assert!(!moves_up(&t.screen), "{cols}: {:?}", t.screen);
        // The last thing drawn before the summary clears the bar's row.
        let (bar, summary) = t.screen.rsplit_once("\r\x1b[2K").unwrap();
        assert!(bar.contains("layers "), "{:?}", t.screen);
        assert!(
            summary.starts_with("built nixlayer-test/progress:1 ("),
            "{summary:?}"
        );
        assert!(summary.ends_with("\r\n"), "{summary:?}");
    }
}

/// Under `--quiet`, or with stderr not a terminal, nothing but the
/// summary line (not even that under `--quiet`); stdout carries exactly
/// the `--json` document either way.
#[test]
fn quiet_or_a_pipe_shows_no_bar_and_json_stays_alone_on_stdout() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path());
    let build = |xdg: &str| {
        let mut cmd = nixlayer();
        cmd.env("XDG_CACHE_HOME", tmp.path().join(xdg))
            .arg("build")
            .arg(&manifest)
            .arg("--json")
            .arg("-o")
            .arg(tmp.path().join(format!("{xdg}.tar")));
        cmd
    };
    let Some(t) = on_terminal(build("quiet").arg("-q"), 80, false, None) else {
        return;
    };
    assert_eq!(t.code, Some(0));
    assert_eq!(t.screen, "", "--quiet draws nothing");
    let doc: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(doc["layers"].as_array().map(Vec::len), Some(3));
    assert!(t.stdout.ends_with(b"}\n") && t.stdout.iter().filter(|&&b| b == b'\n').count() == 1);

    let Some(t) = on_terminal(&build("shown"), 80, false, None) else {
        return;
    };
    assert!(!frames(&t.screen).is_empty(), "{:?}", t.screen);
    let doc: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(doc["layers"].as_array().map(Vec::len), Some(3));

    let out = util::run(build("piped").stderr(Stdio::piped()), 0);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("built nixlayer-test/progress:1 ("),
        "{stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{stderr:?}"
    );
}

/// `layers k/N` of every frame: the N, which must be every layer of the
/// image (of all its platforms).
fn totals(frames: &[&str]) -> Vec<usize> {
    frames
        .iter()
        .filter_map(|f| {
            let counts = f.strip_prefix("layers ")?.split([' ', ',']).next()?;
            counts.split_once('/')?.1.parse().ok()
        })
        .collect()
}

/// A `[[platforms]]` build shows one bar over the layers of all its
/// platforms (before, it showed nothing at all on a terminal, however
/// long it took).
#[test]
fn a_multi_platform_build_shows_one_bar_over_every_platform() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let manifest = crate::multi_platform::manifest(tmp.path(), &hello, "bar", "shared");
    let mut cmd = nixlayer();
    cmd.env("XDG_CACHE_HOME", tmp.path().join("xdg"))
        .arg("build")
        .arg(&manifest)
        .args(["--format", "oci-archive", "--json", "-o"])
        .arg(tmp.path().join("multi.oci.tar"));
    let Some(t) = on_terminal(&cmd, 100, false, None) else {
        return;
    };
    assert_eq!(t.code, Some(0), "{:?}", t.screen);
    let doc: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    let layers: usize = doc["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["layers"].as_array().unwrap().len())
        .sum();
    let frames = frames(&t.screen);
    assert!(!frames.is_empty(), "no bar: {:?}", t.screen);
    assert!(
        totals(&frames).iter().all(|&n| n == layers),
        "{layers} layers: {frames:?}"
    );
    let (_, summary) = t.screen.rsplit_once("\r\x1b[2K").unwrap();
    assert!(
        summary.starts_with("built nixlayer-test/multi:bar (2 platforms"),
        "{summary:?}"
    );
}

/// A push, one platform and two, on an 80-column terminal: one row with
/// the upload figures, cleared before the summary; stdout is exactly the
/// pinned name.
#[test]
fn a_push_shows_one_row_and_stdout_is_only_the_pinned_name() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !crate::push::registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let unique = format!(
        "progress-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&two).unwrap();
    let single = example(&one);
    let multi = crate::multi_platform::manifest(&two, &hello, "push", "shared");
    for (name, manifest, cols) in [("one", &single, 160u16), ("two", &multi, 80)] {
        let target = format!("{}/{unique}/{name}:1", crate::push::REGISTRY);
        let mut cmd = nixlayer();
        cmd.env("XDG_CACHE_HOME", tmp.path().join(format!("xdg-{name}")))
            .arg("push")
            .arg(manifest)
            .arg(&target);
        let Some(t) = on_terminal(&cmd, cols, false, None) else {
            return;
        };
        assert_eq!(t.code, Some(0), "{:?}", t.screen);
        let stdout = String::from_utf8(t.stdout).unwrap();
        let pinned = format!("{}/{unique}/{name}@sha256:", crate::push::REGISTRY);
        assert!(
            stdout.starts_with(&pinned) && stdout.lines().count() == 1,
            "{stdout:?}"
        );
        let frames = frames(&t.screen);
        assert!(!frames.is_empty(), "{name}: no bar: {:?}", t.screen);
        assert!(!moves_up(&t.screen), "{name}: {:?}", t.screen);
        for f in &frames {
            assert!(f.chars().count() <= usize::from(cols), "{name}: {f:?}");
        }
        // Right after the layers: shown on 80 columns too.
        assert!(
            frames.iter().any(|f| f.contains("; uploaded ")),
            "{frames:?}"
        );
        let (_, summary) = t.screen.rsplit_once("\r\x1b[2K").unwrap();
        assert!(summary.starts_with("pushed "), "{name}: {summary:?}");
    }
}

/// `--format rootfs` shows the bar while its layers are spooled (it
/// showed nothing before), to a file and to a pipe alike, and clears it
/// before the summary.
#[test]
fn a_rootfs_build_shows_the_bar() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path());
    let out = tmp.path().join("rootfs.tar");
    let mut cmd = nixlayer();
    cmd.arg("build")
        .arg(&manifest)
        .args(["--format", "rootfs", "-o"])
        .arg(&out);
    let Some(t) = on_terminal(&cmd, 100, false, None) else {
        return;
    };
    assert_eq!(t.code, Some(0), "{:?}", t.screen);
    let frames = frames(&t.screen);
    assert!(!frames.is_empty(), "no bar: {:?}", t.screen);
    assert!(totals(&frames).iter().all(|&n| n == 3), "{frames:?}");
    let (_, summary) = t.screen.rsplit_once("\r\x1b[2K").unwrap();
    assert!(
        summary.starts_with("exported the merged filesystem of 3 layers"),
        "{summary:?}"
    );
    assert!(std::fs::metadata(&out).unwrap().len() > 0);
}

/// A build from a binary cache without `.ls` listings downloads every NAR
/// before its layers can be measured: the terminal says how many arrived
/// (before, nothing at all showed until the layers were written).
#[test]
fn nars_fetched_from_a_binary_cache_are_shown_before_the_layers() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let (secret, public) = crate::binary_cache::keypair(tmp.path(), "progress-test");
    let cache = tmp.path().join("cache");
    let url = format!(
        "file://{}?compression=xz&secret-key={}",
        cache.display(),
        secret.display()
    );
    util::nix("nix", &["copy", "--to", &url, hello.to_str().unwrap()]);
    let closure = util::nix(
        "nix-store",
        &["--query", "--requisites", hello.to_str().unwrap()],
    );
    let paths = String::from_utf8(closure).unwrap().lines().count();
    std::fs::create_dir(tmp.path().join("empty-root")).unwrap();
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"nixlayer-test/progress-cache\"\ntag = \"1\"\n\n[store]\nroot = \"empty-root\"\n\n[closure]\nroots = [\"{}\"]\nsource = {{ binary_cache = \"file://{}\" }}\ntrusted_public_keys = [\"{public}\"]\n",
            hello.display(),
            cache.display()
        ),
    );
    let mut cmd = nixlayer();
    cmd.env("XDG_CACHE_HOME", tmp.path().join("xdg"))
        .env("HOME", tmp.path())
        .arg("build")
        .arg(&manifest)
        .arg("-o")
        .arg(tmp.path().join("out.tar"));
    let Some(t) = on_terminal(&cmd, 120, false, None) else {
        return;
    };
    assert_eq!(t.code, Some(0), "{:?}", t.screen);
    let fetched = format!(", fetched {paths} NARs (");
    assert!(
        t.screen.contains(&fetched),
        "{fetched:?} not in {:?}",
        t.screen
    );
    let (_, summary) = t.screen.rsplit_once("\r\x1b[2K").unwrap();
    assert!(
        summary.starts_with("built nixlayer-test/progress-cache:1 ("),
        "{summary:?}"
    );
}

/// A stderr nobody reads any more (`2>&1 | true`, a log reader that went
/// away): the summary line or the error cannot be written, and the exit
/// status still says how the build went (before, the failed write to
/// stderr panicked: exit 101 for a good build and a bad one alike).
#[test]
fn a_closed_stderr_keeps_the_exit_status() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path());
    for (manifest, code) in [(manifest, 0), (tmp.path().join("missing.toml"), 1)] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = nixlayer()
            .env("XDG_CACHE_HOME", tmp.path().join("xdg"))
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(tmp.path().join("out.tar"))
            .stderr(writer)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", manifest.display());
    }
    assert!(tmp.path().join("out.tar").is_file());
}

/// Serves the files under `dir` over HTTP on 127.0.0.1 (one request per
/// connection, at most `requests`), each NAR (`nar/…`) after `delay`: a
/// binary cache slow enough that planning visibly takes a while.
fn slow_cache(dir: PathBuf, delay: std::time::Duration, requests: usize) -> u16 {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            // The headers, up to the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let body = (!path.contains(".."))
                .then(|| std::fs::read(dir.join(path)).ok())
                .flatten();
            if path.starts_with("nar/") {
                std::thread::sleep(delay);
            }
            let _ = match body {
                Some(body) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    port
}

/// Planning that takes a while (here a binary cache whose NARs take 1.5 s
/// each to arrive) shows a `planning` line with the time, and the NARs as
/// they arrive, cleared before the bar (before, nothing showed until the
/// layers were written).
#[test]
fn a_slow_plan_shows_a_planning_line() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let (secret, public) = crate::binary_cache::keypair(tmp.path(), "planning-test");
    let cache = tmp.path().join("cache");
    let url = format!(
        "file://{}?compression=xz&secret-key={}",
        cache.display(),
        secret.display()
    );
    util::nix("nix", &["copy", "--to", &url, hello.to_str().unwrap()]);
    let port = slow_cache(cache, std::time::Duration::from_millis(1500), 200);
    std::fs::create_dir(tmp.path().join("empty-root")).unwrap();
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"nixlayer-test/planning\"\ntag = \"1\"\n\n[store]\nroot = \"empty-root\"\n\n[closure]\nroots = [\"{}\"]\nsource = {{ binary_cache = \"http://127.0.0.1:{port}\" }}\ntrusted_public_keys = [\"{public}\"]\n",
            hello.display(),
        ),
    );
    let mut cmd = nixlayer();
    cmd.env("XDG_CACHE_HOME", tmp.path().join("xdg"))
        .env("HOME", tmp.path())
        .arg("build")
        .arg(&manifest)
        .arg("-o")
        .arg(tmp.path().join("out.tar"));
    let Some(t) = on_terminal(&cmd, 120, false, None) else {
        return;
    };
    assert_eq!(t.code, Some(0), "{:?}", t.screen);
    let first = t.screen.split("\r\x1b[2K").next().unwrap();
    assert!(first.starts_with("planning 1s"), "{:?}", t.screen);
    assert!(
        t.screen.contains("\r\x1b[2Kplanning, fetched "),
        "{:?}",
        t.screen
    );
    assert!(!frames(&t.screen).is_empty(), "{:?}", t.screen);
    let (_, summary) = t.screen.rsplit_once("\r\x1b[2K").unwrap();
    assert!(
        summary.starts_with("built nixlayer-test/planning:1 ("),
        "{summary:?}"
    );
}
