//! Bad input: exit code 1, one message naming the input, no output file.

use std::path::Path;

use crate::util::{self, nixlayer, run};

const ROOT: &str = "/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3";

/// Runs `build` on `manifest_text` (with extra files) and checks the failure:
/// exit 1, the first stderr line names `names`, no output left behind.
fn fails(manifest_text: &str, files: &[(&str, &str)], names: &str) -> String {
    let tmp = util::temp_dir();
    for (name, text) in files {
        util::write(tmp.path(), name, text);
    }
    let manifest = util::write(tmp.path(), "image.toml", manifest_text);
    let out_file = tmp.path().join("out.tar");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&out_file),
        1,
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{stderr}");
    assert!(
        first.contains(names),
        "first line should name `{names}`:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_no_output(tmp.path());
    stderr
}

fn assert_no_output(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n != "image.toml"
                && !n.ends_with(".json")
                && !n.ends_with(".dot")
                && n != "registration"
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn example_store() -> String {
    util::repo()
        .join("fixtures/example/store")
        .display()
        .to_string()
}

#[test]
fn malformed_toml() {
    fails("name = \"x\"\n[closure\nroots = []\n", &[], "image.toml:2");
}

#[test]
fn unknown_key_names_the_nearest_valid_one() {
    let stderr = fails(
        &format!("name = \"x\"\n[closure]\nrots = [\"{ROOT}\"]\n"),
        &[],
        "image.toml:3",
    );
    assert!(stderr.contains("roots"), "{stderr}");
}

#[test]
fn wrong_type() {
    fails(
        &format!("name = \"x\"\nmax_layers = \"ten\"\n[closure]\nroots = [\"{ROOT}\"]\n"),
        &[],
        "image.toml:2",
    );
}

#[test]
fn root_outside_store_dir() {
    fails(
        "name = \"x\"\n[closure]\nroots = [\"/opt/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3\"]\n",
        &[],
        "image.toml:3",
    );
}

#[test]
fn missing_root() {
    let graph = util::repo().join("fixtures/example/graph.json");
    fails(
        &format!(
            "name = \"x\"\n[store]\nroot = \"{}\"\n[closure]\nroots = [\"/nix/store/00000000000000000000000000000000-absent\"]\nsource = {{ graph = \"{}\" }}\n",
            example_store(),
            graph.display()
        ),
        &[],
        "00000000000000000000000000000000-absent",
    );
}

#[test]
fn truncated_registration() {
    let text =
        format!("{ROOT}\nsha256:07b0p1qqlmyqx1acywki7b9icw1bav9s6iphl2sb88pivz3jf4bs\n1280\n\n2\n");
    fails(
        &format!(
            "name = \"x\"\n[store]\nroot = \"{}\"\n[closure]\nroots = [\"{ROOT}\"]\nsource = {{ registration = \"registration\" }}\n",
            example_store()
        ),
        &[("registration", &text)],
        "registration",
    );
}

#[test]
fn malformed_dot() {
    fails(
        &format!(
            "name = \"x\"\n[store]\nroot = \"{}\"\n[closure]\nroots = [\"{ROOT}\"]\nsource = {{ dot = \"graph.dot\" }}\n",
            example_store()
        ),
        &[("graph.dot", "digraph G {\n\"cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3\" -> \n}\n")],
        "graph.dot",
    );
}

#[test]
fn nothing_to_put_in_the_image() {
    fails("name = \"x\"\n[closure]\nroots = []\n", &[], "no layer");
}

#[test]
fn output_in_a_missing_directory_names_the_output_not_a_temporary_file() {
    let tmp = util::temp_dir();
    let target = tmp.path().join("missing/dir/out.tar");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(util::repo().join("manifests/example.toml"))
            .arg("-o")
            .arg(&target),
        1,
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("error: failed to create `{}`", target.display())),
        "{stderr}"
    );
    assert!(!stderr.contains(".tmp"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    run(nixlayer().arg("build"), 2);
    run(nixlayer().args(["build", "x.toml", "--bogus"]), 2);
}
