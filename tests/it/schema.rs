//! `nixlayer schema`: a JSON Schema on stdout, the same bytes every time,
//! printed without reading any manifest or store.

use crate::util::{self, nixlayer, run};

#[test]
fn schema_is_json_schema_and_reads_nothing() {
    // An empty working directory and no store configuration: nothing to read.
    let tmp = util::temp_dir();
    let out = run(
        nixlayer()
            .arg("schema")
            .current_dir(tmp.path())
            .env("PATH", "/nonexistent"),
        0,
    );
    assert!(out.stderr.is_empty());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["name", "closure"]));
    for key in [
        "name",
        "closure",
        "config",
        "customisation",
        "layering",
        "output",
    ] {
        assert!(schema["properties"][key].is_object(), "{key}");
    }
    assert!(out.stdout.ends_with(b"}\n"));
    let again = run(nixlayer().arg("schema"), 0).stdout;
    assert_eq!(again, out.stdout);
    // Arguments are not taken.
    run(nixlayer().args(["schema", "image.toml"]), 2);
}
