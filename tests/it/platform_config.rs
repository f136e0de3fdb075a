//! `[platforms.config]`: a platform's own image config keys over the
//! top-level `[config]`, in the image index that OCI outputs write, and the
//! architecture guard checking each platform's own entrypoint.
//!
//! amd64 is the embedded example; arm64 is a store made here holding an
//! arm64 program (`bin/hello`, an ELF header) and an x86-64 one kept out of
//! `bin/` (`libexec/tool`, a copy of the example's program), so only an
//! entrypoint naming it can trip the guard:
//!
//! ```text
//!   amd64: example-app ── site ── greeting
//!   arm64: arm-hello   amd-tool (libexec/tool: x86-64)
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::multi_platform::ARM_PATH;
use crate::util::{self, nixlayer, run};

const APP: &str = "/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3";
const AMD_TOOL: &str = "/nix/store/1123456789abcdfghijklmnpqrsvwxyz-amd-tool-1.0";

fn arm64_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h[16..18].copy_from_slice(&2u16.to_le_bytes());
    h[18..20].copy_from_slice(&183u16.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// The two-platform manifest; `arm_config` is the body of its
/// `[platforms.config]`.
pub(crate) fn manifest(dir: &Path, arm_config: &str) -> PathBuf {
    let example = util::repo().join("fixtures/example");
    let root = dir.join("arm-root");
    let arm = root.join(ARM_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(arm.join("bin")).unwrap();
    std::fs::write(arm.join("bin/hello"), arm64_elf()).unwrap();
    let tool = root.join(AMD_TOOL.trim_start_matches('/')).join("libexec");
    std::fs::create_dir_all(&tool).unwrap();
    std::fs::copy(
        example.join(format!("store{APP}/bin/hello")),
        tool.join("tool"),
    )
    .unwrap();
    let node = |path: &str| {
        serde_json::json!({
            "path": path,
            "narHash": "sha256:1qlamlcq8xcp7c4w1zy3wcd83srswlhnqx28rpq4803117azyp51",
            "narSize": 400,
            "references": [],
        })
    };
    let graph = dir.join("arm-graph.json");
    std::fs::write(
        &graph,
        serde_json::to_vec(&[node(ARM_PATH), node(AMD_TOOL)]).unwrap(),
    )
    .unwrap();
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"name = "nixlayer-test/platform-config"
tag = "p"
architecture = "amd64"
[store]
root = "{store}"
[closure]
roots = ["{APP}"]
source = {{ graph = "{example_graph}" }}
[config]
Cmd = ["{APP}/bin/hello"]
Env = ["LANG=C.UTF-8"]
WorkingDir = "/"

[[platforms]]
architecture = "arm64"
[platforms.closure]
roots = ["{ARM_PATH}", "{AMD_TOOL}"]
source = {{ graph = "{graph}" }}
[platforms.store]
root = "{root}"
[platforms.config]
{arm_config}
"#,
            store = example.join("store").display(),
            example_graph = example.join("graph.json").display(),
            graph = graph.display(),
            root = root.display(),
        ),
    )
}

/// The config of each platform's image in the layout's index, by
/// architecture.
fn configs(layout: &Path) -> Vec<(String, Value)> {
    let shown: Value =
        serde_json::from_slice(&run(nixlayer().arg("inspect").arg(layout).arg("--json"), 0).stdout)
            .unwrap();
    shown["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["config"]["architecture"].as_str().unwrap().to_owned(),
                i["config"]["config"].clone(),
            )
        })
        .collect()
}

#[test]
fn a_platform_config_replaces_top_level_keys_for_that_platform_only() {
    let tmp = util::temp_dir();
    let m = manifest(
        tmp.path(),
        &format!("Entrypoint = [\"{ARM_PATH}/bin/hello\"]\nCmd = []\nEnv = [\"PLATFORM=arm64\"]"),
    );
    let layout = tmp.path().join("layout");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout),
        0,
    );
    let configs = configs(&layout);
    let (amd, arm) = (&configs[0], &configs[1]);
    assert_eq!(amd.0, "amd64");
    assert_eq!(
        amd.1["Cmd"],
        serde_json::json!([format!("{APP}/bin/hello")])
    );
    assert_eq!(amd.1["Env"], serde_json::json!(["LANG=C.UTF-8"]));
    assert!(amd.1.get("Entrypoint").is_none(), "{}", amd.1);
    assert_eq!(arm.0, "arm64");
    assert_eq!(
        arm.1["Entrypoint"],
        serde_json::json!([format!("{ARM_PATH}/bin/hello")])
    );
    assert_eq!(arm.1["Cmd"], serde_json::json!([]));
    // Replaced whole, not merged; what it does not name is inherited.
    assert_eq!(arm.1["Env"], serde_json::json!(["PLATFORM=arm64"]));
    assert_eq!(arm.1["WorkingDir"], "/");
}

#[test]
fn the_guard_checks_each_platform_s_own_entrypoint() {
    let tmp = util::temp_dir();
    let m = manifest(
        tmp.path(),
        &format!("Entrypoint = [\"{AMD_TOOL}/libexec/tool\"]"),
    );
    let layout = tmp.path().join("layout");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("`{AMD_TOOL}/libexec/tool`"))
            && stderr.contains("image platform is linux/arm64"),
        "{stderr}"
    );
    assert!(!layout.exists());
}

#[test]
fn a_bad_platform_config_key_is_located_with_a_hint() {
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "Entrypiont = [\"/x\"]");
    let out = run(nixlayer().arg("layers").arg(&m), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("image.toml:22:1: unknown key `Entrypiont` in `[platforms.config]`")
            && stderr.contains("Entrypoint"),
        "{stderr}"
    );
    let m = manifest(tmp.path(), "Cmd = \"/x\"");
    let out = run(nixlayer().arg("layers").arg(&m), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("image.toml:22:7: wrong type for `platforms.config.Cmd`"),
        "{stderr}"
    );
}
