//! Loading manifests: every error names the line and column of the
//! offending key or value. Tests match on fields, not on message text.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::codec::Compression;

const MANIFEST_PATH: &str = "/work/app/image.toml";

fn parse(text: &str) -> Result<LoadedManifest, Error> {
    LoadedManifest::from_text(PathBuf::from(MANIFEST_PATH), text.to_owned())
}

/// The line, column, message and hint of the error `text` must give.
fn invalid(text: &str) -> (usize, usize, String, Option<String>) {
    match parse(text) {
        Err(Error::Invalid {
            path,
            line,
            column,
            message,
            hint,
        }) => {
            assert_eq!(path, Path::new(MANIFEST_PATH));
            assert!(!message.contains('\n'), "multi-line message: {message:?}");
            (line, column, message, hint)
        }
        other => panic!("expected Error::Invalid for {text:?}, got {other:?}"),
    }
}

fn ok(text: &str) -> LoadedManifest {
    parse(text).unwrap_or_else(|e| panic!("{text:?} should load: {e}"))
}

const MINIMAL: &str = "name = \"app\"\n[closure]\nroots = []\n";

#[test]
fn minimal_manifest_takes_the_defaults() {
    let m = ok(MINIMAL);
    assert_eq!(m.closure_source().unwrap(), ClosureSource::NixStore);
    assert_eq!(m.output_format().unwrap(), OutputFormat::DockerArchive);
    assert_eq!(m.compression().unwrap(), Compression::None);
    // Current nixpkgs' default (PR #355189), not the popularity contest.
    assert_eq!(m.layering().unwrap(), Layering::Auto);
    assert_eq!(m.max_layers().unwrap(), DEFAULT_MAX_LAYERS);
    assert_eq!(m.store_dir().unwrap(), "/nix/store");
    assert_eq!(m.store_root(), Path::new("/"));
}

#[test]
fn malformed_toml_is_one_line_at_its_place() {
    let (line, column, _, hint) = invalid("name = \"app\"\nmax_layers = = 3\n");
    assert_eq!((line, column), (2, 14));
    assert_eq!(hint, None);

    let (line, _, _, _) = invalid("name = \"app\"\n[closure\n");
    assert_eq!(line, 2);

    // An unterminated string at the very end.
    let (line, _, _, _) = invalid("name = \"app");
    assert_eq!(line, 1);
}

#[test]
fn duplicate_key_names_the_key() {
    let (line, column, message, _) = invalid("name = \"a\"\nname = \"b\"\n[closure]\n");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("`name`"), "{message}");
}

#[test]
fn unknown_top_level_key_points_at_it_with_the_nearest_key() {
    let (line, column, message, hint) = invalid("name = \"app\"\nmax_layer = 10\n[closure]\n");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("`max_layer`"), "{message}");
    assert_eq!(hint.as_deref(), Some("did you mean `max_layers`?"));
}

#[test]
fn unknown_key_far_from_any_lists_the_valid_ones() {
    let (_, _, _, hint) = invalid("name = \"app\"\n[closure]\nxyzzy_plugh = 1\n");
    let hint = hint.unwrap();
    assert!(
        hint.contains("`roots`") && hint.contains("`exclude`"),
        "{hint}"
    );
}

#[test]
fn unknown_nested_key_names_its_table_and_the_nearest_key() {
    let text = "name = \"app\"\n\n[closure]\nrots = [\"/nix/store/x\"]\n";
    let (line, column, message, hint) = invalid(text);
    assert_eq!((line, column), (4, 1));
    assert!(
        message.contains("`rots`") && message.contains("[closure]"),
        "{message}"
    );
    assert_eq!(hint.as_deref(), Some("did you mean `roots`?"));

    // The same key written as a dotted key at the top level.
    let (line, column, _, hint) = invalid("name = \"app\"\nclosure.rots = []\n");
    assert_eq!((line, column), (2, 9));
    assert_eq!(hint.as_deref(), Some("did you mean `roots`?"));

    // And inside an inline table.
    let (line, column, _, hint) =
        invalid("name = \"app\"\nclosure = { roots = [], exclued = [] }\n");
    assert_eq!((line, column), (2, 25));
    assert_eq!(hint.as_deref(), Some("did you mean `exclude`?"));
}

#[test]
fn wrong_type_names_the_key_and_the_expected_type() {
    let (line, column, message, _) = invalid("name = \"app\"\nmax_layers = \"ten\"\n[closure]\n");
    assert_eq!((line, column), (2, 14));
    assert!(
        message.contains("`max_layers`") && message.contains("integer"),
        "{message}"
    );

    let (line, column, message, _) =
        invalid("name = \"app\"\n[closure]\nroots = [\"/nix/store/a\", 7]\n");
    assert_eq!((line, column), (3, 26));
    assert!(
        message.contains("`closure.roots`") && message.contains("string"),
        "{message}"
    );

    let (line, _, message, _) = invalid("name = \"app\"\nowner = 3\n[closure]\n");
    assert_eq!(line, 2);
    assert!(
        message.contains("`owner`") && message.contains("table"),
        "{message}"
    );

    let (line, _, message, _) = invalid("name = \"app\"\n[owner]\nuid = -1\n[closure]\n");
    assert_eq!(line, 3);
    assert!(message.contains("`owner.uid`"), "{message}");

    let (line, _, message, _) = invalid("name = \"app\"\nmax_layers = 99999999999\n[closure]\n");
    assert_eq!(line, 2);
    assert!(message.contains("4294967295"), "{message}");
}

#[test]
fn missing_required_keys_are_errors() {
    let (line, column, message, hint) = invalid("tag = \"1\"\n[closure]\nroots = []\n");
    assert_eq!((line, column), (1, 1));
    assert!(message.contains("`name`"), "{message}");
    assert!(hint.is_some());

    let (_, _, message, hint) = invalid("name = \"app\"\n");
    assert!(message.contains("`closure`"), "{message}");
    assert!(hint.unwrap().contains("[closure]"));
}

#[test]
fn closure_source_forms() {
    let source = |value: &str| parse(&format!("name = \"a\"\n[closure]\nsource = {value}\n"));
    let source_error = |value: &str| {
        let (line, column, message, hint) =
            invalid(&format!("name = \"a\"\n[closure]\nsource = {value}\n"));
        assert_eq!((line, column), (3, 10), "{value}: {message}");
        (message, hint)
    };

    assert_eq!(
        source("\"nix-store\"").unwrap().closure_source().unwrap(),
        ClosureSource::NixStore
    );
    for (key, want) in [
        (
            "registration",
            ClosureSource::Registration as fn(PathBuf) -> ClosureSource,
        ),
        ("graph", ClosureSource::Graph),
        ("path_info", ClosureSource::PathInfo),
        ("dot", ClosureSource::Dot),
    ] {
        let m = source(&format!("{{ {key} = \"/data/in\" }}")).unwrap();
        assert_eq!(m.closure_source().unwrap(), want(PathBuf::from("/data/in")));
    }

    let (_, hint) = source_error("\"nix_store\"");
    assert_eq!(hint.as_deref(), Some("did you mean `nix-store`?"));
    let (_, hint) = source_error("\"graph\"");
    assert!(hint.unwrap().contains("graph = \"FILE\""));
    let (_, hint) = source_error("{}");
    assert_eq!(hint.as_deref(), Some(hints::SOURCE_FORMS));
    let (_, hint) = source_error("{ graph = \"a\", dot = \"b\" }");
    assert_eq!(hint.as_deref(), Some(hints::SOURCE_FORMS));
    let (_, hint) = source_error("{ graf = \"g.json\" }");
    assert_eq!(hint.as_deref(), Some("did you mean `graph`?"));
    let (message, hint) = source_error("{ binary_cache = \"https://cache.example\" }");
    assert!(
        message.contains("needs `closure.trusted_public_keys`"),
        "{message}"
    );
    assert!(hint.unwrap().contains("require_signatures = false"));
    let (_, hint) = source_error("{ graph = \"\" }");
    assert_eq!(hint, None);
    // Wrong types are caught while parsing and get the list of forms too.
    let (_, hint) = source_error("5");
    assert_eq!(hint.as_deref(), Some(hints::SOURCE_FORMS));
    let (_, hint) = source_error("{ graph = 5 }");
    assert_eq!(hint.as_deref(), Some(hints::SOURCE_FORMS));
}

#[test]
fn relative_paths_resolve_against_the_manifest_directory() {
    let m = ok("name = \"a\"\n[store]\nroot = \"chroot\"\n[closure]\nsource = { graph = \"in/graph.json\" }\n");
    assert_eq!(
        m.closure_source().unwrap(),
        ClosureSource::Graph(PathBuf::from("/work/app/in/graph.json"))
    );
    assert_eq!(m.store_root(), Path::new("/work/app/chroot"));

    let m = ok("name = \"a\"\n[closure]\nsource = { dot = \"../g.dot\" }\n");
    assert_eq!(
        m.closure_source().unwrap(),
        ClosureSource::Dot(PathBuf::from("/work/app/../g.dot"))
    );
}

#[test]
fn store_dir_must_be_absolute() {
    let m = ok("name = \"a\"\n[store]\ndir = \"/gnu/store/\"\n[closure]\n");
    assert_eq!(m.store_dir().unwrap(), "/gnu/store");
    let (line, column, _, _) = invalid("name = \"a\"\n[store]\ndir = \"nix/store\"\n[closure]\n");
    assert_eq!((line, column), (3, 7));
    let (line, _, _, _) = invalid("name = \"a\"\n[store]\ndir = \"/\"\n[closure]\n");
    assert_eq!(line, 3);
}

#[test]
fn output_format_and_compression() {
    let output = |body: &str| format!("name = \"a\"\n[closure]\n[output]\n{body}\n");
    let m = ok(&output(
        "format = \"docker-archive\"\ncompression = \"none\"",
    ));
    assert_eq!(m.output_format().unwrap(), OutputFormat::DockerArchive);
    assert_eq!(m.compression().unwrap(), Compression::None);

    let m = ok(&output("format = \"oci-layout\"\ncompression = \"gzip\""));
    assert_eq!(m.output_format().unwrap(), OutputFormat::OciLayout);
    assert_eq!(m.compression().unwrap(), Compression::Gzip);
    let m = ok(&output("format = \"oci-archive\"\ncompression = \"zstd\""));
    assert_eq!(m.output_format().unwrap(), OutputFormat::OciArchive);
    assert_eq!(m.compression().unwrap(), Compression::Zstd);
    let (line, _, _, hint) = invalid(&output("format = \"oci-layot\""));
    assert_eq!(line, 4);
    assert_eq!(hint.as_deref(), Some("did you mean `oci-layout`?"));
    let (_, _, _, hint) = invalid(&output("compression = \"xz\""));
    assert!(hint.unwrap().contains("`gzip`"));

    // The names round-trip, for the CLI's `--format` and `--compression`.
    for f in OutputFormat::ALL {
        assert_eq!(OutputFormat::from_name(f.name()), Some(f));
    }
    for c in Compression::WRITABLE {
        assert_eq!(Compression::from_name(c.name()), Some(c));
    }
}

#[test]
fn layering_pipeline_or_strategy() {
    let layering = |body: &str| format!("name = \"a\"\n[closure]\n[layering]\n{body}\n");
    let m = ok(&layering(
        "pipeline = [[\"popularity_contest\"], [\"limit_layers\", 99]]",
    ));
    let Layering::Pipeline(pipeline) = m.layering().unwrap() else {
        panic!("expected a pipeline");
    };
    assert_eq!(
        pipeline.get_ref(),
        &serde_json::json!([["popularity_contest"], ["limit_layers", 99]])
    );
    assert_eq!(m.line_col(pipeline.span().start), (4, 12));

    let m = ok(&layering("strategy = \"popularity\""));
    assert_eq!(m.layering().unwrap(), Layering::Popularity);

    // Both: the error is on the second of the two.
    let (line, _, _, _) = invalid(&layering("pipeline = []\nstrategy = \"popularity\""));
    assert_eq!(line, 5);
    let (line, _, _, _) = invalid(&layering("strategy = \"popularity\"\npipeline = []"));
    assert_eq!(line, 5);

    let m = ok(&layering("strategy = \"auto\""));
    assert_eq!(m.layering().unwrap(), Layering::Auto);
    let (_, _, _, hint) = invalid(&layering("strategy = \"popularty\""));
    assert_eq!(hint.as_deref(), Some("did you mean `popularity`?"));
    let (line, _, _, _) = invalid(&layering("pipeline = \"popularity_contest\""));
    assert_eq!(line, 4);
}

#[test]
fn max_layers_is_at_least_two() {
    assert_eq!(
        ok("name = \"a\"\nmax_layers = 2\n[closure]\n")
            .max_layers()
            .unwrap(),
        2
    );
    for n in [0, 1] {
        let (line, column, _, _) = invalid(&format!("name = \"a\"\nmax_layers = {n}\n[closure]\n"));
        assert_eq!((line, column), (2, 14));
    }
}

#[test]
fn config_keys_are_oci_keys() {
    let (line, column, message, hint) =
        invalid("name = \"a\"\n[closure]\n[config]\nCmd = []\nentrypoint = [\"/bin/sh\"]\n");
    assert_eq!((line, column), (5, 1));
    assert!(message.contains("`entrypoint`"), "{message}");
    assert_eq!(hint.as_deref(), Some("did you mean `Entrypoint`?"));
}

#[test]
fn the_first_problem_in_the_file_is_reported() {
    let text = "name = \"a\"\nmax_layers = 1\n[closure]\n[output]\nformat = \"oci-layot\"\n";
    assert_eq!(invalid(text).0, 2);
}

/// Every key of SPEC §1 that the typed manifest has.
const FULL: &str = r#"
name = "registry.example.com/team/hello"
tag = "1.0"
architecture = "amd64"
os = "linux"
variant = "v7"
created = "1970-01-01T00:00:01Z"
mtime = "1970-01-01T00:00:01Z"
max_layers = 100

[store]
dir = "/nix/store"
root = "/"

[closure]
roots = ["/nix/store/00000000000000000000000000000000-hello-2.12.1"]
source = "nix-store"
exclude = ["/nix/store/11111111111111111111111111111111-doc"]

[config]
Entrypoint = ["/nix/store/00000000000000000000000000000000-hello-2.12.1/bin/hello"]
Cmd = []
Env = ["LANG=C.UTF-8"]
WorkingDir = "/"
User = "1000:1000"
ExposedPorts = { "8080/tcp" = {} }
Volumes = { "/data" = {} }
Labels = { "org.opencontainers.image.source" = "https://example.org/hello" }
StopSignal = "SIGTERM"

[owner]
uid = 0
gid = 0
uname = "root"
gname = "root"

[layering]
pipeline = [["popularity_contest"], ["limit_layers", 99]]

[output]
format = "docker-archive"
compression = "none"
level = 6
"#;

#[test]
fn full_manifest_loads_every_key() {
    let m = ok(FULL);
    let t = &m.manifest;
    assert_eq!(t.name.get_ref(), "registry.example.com/team/hello");
    assert_eq!(t.tag.as_ref().unwrap().get_ref(), "1.0");
    assert_eq!(t.architecture.as_ref().unwrap().get_ref(), "amd64");
    assert_eq!(t.os.as_ref().unwrap().get_ref(), "linux");
    assert_eq!(t.variant.as_ref().unwrap().get_ref(), "v7");
    assert_eq!(
        t.created.as_ref().unwrap().get_ref(),
        "1970-01-01T00:00:01Z"
    );
    assert_eq!(t.mtime.as_ref().unwrap().get_ref(), "1970-01-01T00:00:01Z");
    assert_eq!(m.max_layers().unwrap(), 100);
    assert_eq!(m.store_dir().unwrap(), "/nix/store");
    assert_eq!(m.store_root(), Path::new("/"));
    assert_eq!(t.closure.roots.len(), 1);
    assert_eq!(t.closure.exclude.len(), 1);
    assert_eq!(m.closure_source().unwrap(), ClosureSource::NixStore);
    assert_eq!(t.config.len(), 9);
    assert_eq!(
        t.config["ExposedPorts"],
        serde_json::json!({ "8080/tcp": {} })
    );
    assert_eq!(t.owner.uid, Some(0));
    assert_eq!(t.owner.gname.as_deref(), Some("root"));
    assert!(matches!(m.layering().unwrap(), Layering::Pipeline(_)));
    assert_eq!(m.output_format().unwrap(), OutputFormat::DockerArchive);
    assert_eq!(m.compression().unwrap(), Compression::None);
    assert_eq!(t.output.level.as_ref().map(|l| *l.get_ref()), Some(6));

    // Spans survive for later checks: `tag` is on line 3, its value at column 7.
    let tag = t.tag.as_ref().unwrap();
    assert_eq!(m.line_col(tag.span().start), (3, 7));
    let Error::Invalid {
        line, column, hint, ..
    } = m.error_at(tag.span(), "bad tag".to_owned(), Some("fix it".to_owned()))
    else {
        panic!("error_at gives Error::Invalid");
    };
    assert_eq!((line, column, hint.as_deref()), (3, 7, Some("fix it")));
    // Any span is accepted.
    assert!(matches!(
        m.error_at(usize::MAX..usize::MAX, String::new(), None),
        Error::Invalid { .. }
    ));
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.toml");

    let err = LoadedManifest::load(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, .. } if *p == path),
        "{err:?}"
    );

    std::fs::write(
        &path,
        "name = \"a\"\n[closure]\nsource = { graph = \"g.json\" }\n",
    )
    .unwrap();
    let m = LoadedManifest::load(&path).unwrap();
    assert_eq!(m.path, path);
    assert_eq!(
        m.closure_source().unwrap(),
        ClosureSource::Graph(dir.path().join("g.json"))
    );

    std::fs::write(&path, b"name = \"a\"\n# \xff\n").unwrap();
    let Err(Error::Invalid {
        path: p,
        line,
        column,
        ..
    }) = LoadedManifest::load(&path)
    else {
        panic!("invalid UTF-8 is Error::Invalid");
    };
    assert_eq!((p, line, column), (path, 2, 3));
}

proptest! {
    #[test]
    fn any_text_loads_or_fails_cleanly(text in "\\PC{0,200}") {
        check_no_panic(&text);
    }

    #[test]
    fn any_toml_like_text_loads_or_fails_cleanly(
        text in "([a-z_.\\[\\]{}=\"', 0-9\\n-]|name|closure|roots|source|graph|config){0,80}"
    ) {
        check_no_panic(&text);
    }

    #[test]
    fn any_binary_cache_source_loads_or_fails_cleanly(
        url in "(s3|file|https?|ftp)?(://)?\\PC{0,20}",
        key in "\\PC{0,8}(:)?[A-Za-z0-9+/=]{0,50}",
        extra in "(require_signatures = (true|false)|netrc_file = \"[~a-z/]{0,6}\"|nar_cache_max_bytes = -?[0-9]{0,20})?",
    ) {
        let text = format!(
            "name = \"a\"\n[closure]\nsource = {{ binary_cache = {} }}\ntrusted_public_keys = [{}]\n{extra}\n",
            toml::Value::String(url),
            toml::Value::String(key),
        );
        check_no_panic(&text);
    }

    #[test]
    fn a_mangled_full_manifest_loads_or_fails_cleanly(
        at in 0usize..FULL.len(),
        len in 0usize..12,
        insert in "\\PC{0,6}",
    ) {
        let mut text = FULL.as_bytes().to_vec();
        let end = (at + len).min(text.len());
        text.splice(at..end, insert.bytes());
        check_no_panic(&String::from_utf8_lossy(&text));
    }
}

fn check_no_panic(text: &str) {
    if let Err(err) = parse(text) {
        let Error::Invalid {
            line,
            column,
            message,
            ..
        } = err
        else {
            panic!("parsing text gives only Error::Invalid, got {err:?}");
        };
        assert!(line >= 1 && column >= 1);
        assert!(
            line <= text.lines().count().max(1) + 1,
            "line {line} in {text:?}"
        );
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{message:?}"
        );
    }
}

/// A platform word or a string key's value holding a newline is quoted
/// escaped: every manifest error is one line (found by
/// `a_mangled_full_manifest_loads_or_fails_cleanly`: `os = "{&\nux"`).
#[test]
fn values_with_newlines_are_quoted_on_one_line() {
    for (key, value) in [("os", "li\\nux"), ("architecture", "amd\\n64")] {
        let (_, _, message, _) =
            invalid(&format!("{key} = \"{value}\"\nname = \"a\"\n[closure]\n"));
        assert!(message.contains("is not an OCI"), "{message:?}");
        assert!(!message.contains('\n'), "{message:?}");
        assert!(message.contains("\\n"), "{message:?}");
    }
}

/// `[config]` values are checked against the OCI config's types at load,
/// at the offending value (issue 9: they used to fail in `docker load`).
#[test]
fn config_values_have_the_oci_types() {
    let config = |body: &str| format!("name = \"a\"\n[closure]\n[config]\n{body}\n");
    // (body, line, column, words the message must hold)
    for (body, at, words) in [
        (
            "Entrypoint = 5",
            (4, 14),
            &["`config.Entrypoint`", "array of strings", "integer"][..],
        ),
        (
            "Cmd = [\"/bin/sh\", 1]",
            (4, 19),
            &["`config.Cmd`", "string"],
        ),
        (
            "Labels = {a = 5}",
            (4, 15),
            &["`config.Labels.\"a\"`", "string"],
        ),
        (
            "Volumes = [\"/data\"]",
            (4, 11),
            &["`config.Volumes`", "table"],
        ),
        ("Volumes = { \"/data\" = 1 }", (4, 23), &["empty table"]),
        ("Volumes = { \"data\" = {} }", (4, 13), &["absolute"]),
        ("User = 1000", (4, 8), &["`config.User`", "a string"]),
        ("WorkingDir = []", (4, 14), &["`config.WorkingDir`"]),
        ("StopSignal = 15", (4, 14), &["`config.StopSignal`"]),
        (
            "ArgsEscaped = \"yes\"",
            (4, 15),
            &["`config.ArgsEscaped`", "boolean"],
        ),
        ("Env = [\"NOEQUALS\"]", (4, 8), &["NAME=value"]),
        ("Env = [\"=x\"]", (4, 8), &["NAME=value"]),
        ("Env = \"A=1\"", (4, 7), &["`config.Env`"]),
        (
            "ExposedPorts = [\"80/tcp\"]",
            (4, 16),
            &["`config.ExposedPorts`"],
        ),
        (
            "ExposedPorts = { \"80/tcp\" = \"\" }",
            (4, 29),
            &["empty table"],
        ),
        ("ExposedPorts = { \"http\" = {} }", (4, 18), &["PORT"]),
        ("ExposedPorts = { \"70000/tcp\" = {} }", (4, 18), &["65535"]),
        (
            "ExposedPorts = { \"80/icmp\" = {} }",
            (4, 18),
            &["protocol"],
        ),
        ("OnBuild = \"RUN x\"", (4, 11), &["`config.OnBuild`"]),
        ("Shell = [[\"sh\"]]", (4, 10), &["`config.Shell`"]),
        ("Memory = \"1g\"", (4, 10), &["`config.Memory`", "integer"]),
        (
            "Healthcheck = [\"CMD\"]",
            (4, 15),
            &["`config.Healthcheck`", "table"],
        ),
        (
            "Healthcheck = { Test = \"CMD\" }",
            (4, 24),
            &["`config.Healthcheck.Test`"],
        ),
        (
            "Healthcheck = { Retries = \"3\" }",
            (4, 27),
            &["`config.Healthcheck.Retries`"],
        ),
        ("Healthcheck = { Interval = -1 }", (4, 28), &["negative"]),
        ("Healthcheck = { Intervall = 1 }", (4, 17), &["`Intervall`"]),
        ("Labels = { a = \"x\" }\nCmd = 1", (5, 7), &["`config.Cmd`"]),
        ("Cmd = 1970-01-01T00:00:00Z", (4, 7), &["date-time"]),
    ] {
        let (line, column, message, hint) = invalid(&config(body));
        assert_eq!((line, column), at, "{body}: {message}");
        for word in words {
            assert!(message.contains(word), "{body}: {message} lacks {word}");
        }
        assert!(hint.is_some(), "{body}: no hint");
    }
    let (_, _, _, hint) = invalid(&config("Healthcheck = { Intervall = 1 }"));
    assert_eq!(hint.as_deref(), Some("did you mean `Interval`?"));

    // Dotted keys and inline tables are checked the same way.
    let (line, column, _, _) = invalid("name = \"a\"\nconfig.Entrypoint = 5\n[closure]\n");
    assert_eq!((line, column), (2, 21));
    let (line, column, _, _) = invalid("name = \"a\"\nconfig = { Cmd = [1] }\n[closure]\n");
    assert_eq!((line, column), (2, 19));

    // Every well-typed form loads.
    ok(&config(
        "User = \"1000:1000\"\nExposedPorts = { \"80/tcp\" = {}, \"53/udp\" = {}, \"8000-8010\" = {} }\n\
         Env = [\"A=1\", \"B=\"]\nEntrypoint = [\"/bin/app\"]\nCmd = []\nVolumes = { \"/data\" = {} }\n\
         WorkingDir = \"/\"\nLabels = { a = \"b\" }\nStopSignal = \"SIGTERM\"\nArgsEscaped = false\n\
         Memory = 1\nMemorySwap = -1\nCpuShares = 2\nOnBuild = []\nShell = [\"/bin/sh\", \"-c\"]\n\
         Healthcheck = { Test = [\"CMD\", \"true\"], Interval = 1, Timeout = 2, StartPeriod = 3, StartInterval = 4, Retries = 5 }",
    ));
}

/// Strings runc cannot start a container with are refused at load, at
/// their value: a relative `WorkingDir` ("Cwd must be an absolute path")
/// and a NUL byte in an argument, variable, user or directory ("environment
/// variable value can't contain null"). They used to build an image that
/// `docker load` took and `docker run` refused.
#[test]
fn config_strings_no_container_can_start_with_are_refused() {
    let config = |body: &str| format!("name = \"a\"\n[closure]\n[config]\n{body}\n");
    for (body, at, words) in [
        (
            "WorkingDir = \"app\"",
            (4, 14),
            &["`config.WorkingDir`", "absolute"][..],
        ),
        ("WorkingDir = \"./\"", (4, 14), &["absolute"]),
        ("WorkingDir = \"/a\\u0000\"", (4, 14), &["NUL"]),
        (
            "Env = [\"A=1\", \"B=\\u0000\"]",
            (4, 15),
            &["`config.Env`", "NUL"],
        ),
        ("Entrypoint = [\"/bin/a\\u0000b\"]", (4, 15), &["NUL"]),
        (
            "Cmd = [\"x\", \"\\u0000\"]",
            (4, 13),
            &["`config.Cmd`", "NUL"],
        ),
        ("User = \"root\\u0000\"", (4, 8), &["`config.User`", "NUL"]),
    ] {
        let (line, column, message, _) = invalid(&config(body));
        assert_eq!((line, column), at, "{body}: {message}");
        for word in words {
            assert!(message.contains(word), "{body}: {message} lacks {word}");
        }
        assert!(!message.contains('\0'), "{body}: raw NUL in {message:?}");
    }
    // The platform's own `[platforms.config]` is held to the same rule.
    let (line, _, message, _) = invalid(
        "name = \"a\"\n[closure]\n[[platforms]]\narchitecture = \"arm64\"\n\
         [platforms.closure]\n[platforms.config]\nWorkingDir = \"rel\"\n",
    );
    assert_eq!(line, 7, "{message}");
    // Empty is the runtime's default directory, `/`.
    ok(&config("WorkingDir = \"\""));
}

/// `architecture` and `os` are Go's words, as OCI uses them: Nix's and
/// uname's spellings (`aarch64`, `x86_64`) used to go into the image
/// config as they were, where no platform match finds them; now they are
/// refused at their line with the GOARCH word as the hint.
#[test]
fn architecture_and_os_are_go_words() {
    for (text, at, hint) in [
        ("architecture = \"aarch64\"\n", (1, 16), "`arm64`"),
        ("architecture = \"x86_64\"\n", (1, 16), "`amd64`"),
        ("architecture = \"armv7l\"\n", (1, 16), "variant = \"v7\""),
        ("architecture = \"AMD64\"\n", (1, 16), "`amd64`"),
        (
            "architecture = \"amd46\"\n",
            (1, 16),
            "did you mean `amd64`?",
        ),
        ("os = \"Linux\"\n", (1, 6), "did you mean `linux`?"),
        ("os = \"nixos\"\n", (1, 6), "write `linux`"),
        ("os = \"multics\"\n", (1, 6), "GOOS"),
    ] {
        let (line, column, message, got) = invalid(&format!("{text}name = \"a\"\n[closure]\n"));
        assert_eq!((line, column), at, "{text}: {message}");
        assert!(message.contains("is not an OCI"), "{text}: {message}");
        let got = got.unwrap_or_default();
        assert!(got.contains(hint), "{text}: {got}");
    }
    // Each `[[platforms]]` entry's too.
    let (line, _, message, _) = invalid(
        "name = \"a\"\n[closure]\n[[platforms]]\narchitecture = \"aarch64\"\n[platforms.closure]\n",
    );
    assert_eq!(line, 4, "{message}");
    for arch in [
        "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "loong64",
    ] {
        ok(&format!(
            "architecture = \"{arch}\"\nos = \"linux\"\nname = \"a\"\n[closure]\n"
        ));
    }
}

/// `created` and `mtime` take TOML's own date-time (unquoted) as its RFC
/// 3339 text, the same image as the quoted string; they used to be
/// refused as "expected a string, found a date-time". A date-time without
/// an offset, or a bare date, is no point in time: refused at its value.
#[test]
fn created_and_mtime_take_a_toml_date_time() {
    let m = ok("name = \"a\"\ncreated = 2024-01-01T02:00:00+02:00\nmtime = 1970-01-01T00:00:01Z\n[closure]\n");
    assert_eq!(
        m.manifest.created.as_ref().unwrap().get_ref(),
        "2024-01-01T02:00:00+02:00"
    );
    assert_eq!(
        m.manifest.mtime.as_ref().unwrap().get_ref(),
        "1970-01-01T00:00:01Z"
    );
    let (line, column, message, _) = invalid("name = \"a\"\ncreated = 5\n[closure]\n");
    assert_eq!((line, column), (2, 11), "{message}");
    assert!(message.contains("date-time"), "{message}");
    // The text is then checked as a quoted one would be (`resolve_build`).
    let m = ok("name = \"a\"\nmtime = 2024-01-01\n[closure]\n");
    assert_eq!(m.manifest.mtime.as_ref().unwrap().get_ref(), "2024-01-01");
    assert_eq!(m.manifest.mtime.as_ref().unwrap().span(), 19..29);
}

/// Ids are 32-bit: 2^32 and above are refused where they are written.
#[test]
fn ids_beyond_32_bits_are_refused_at_their_line() {
    for (body, line) in [
        ("[owner]\nuid = 4294967296\n", 5),
        ("[owner]\ngid = 18446744073709551615\n", 5),
        // Beyond 64 bits too: no Rust type (`as i128`) in the message.
        ("[owner]\nuid = 99999999999999999999\n", 5),
        ("[owner]\nuid = -99999999999999999999\n", 5),
        (
            "[[customisation.permissions]]\npath = \"/x\"\nuid = 4294967296\n",
            6,
        ),
        (
            "[[customisation.permissions]]\npath = \"/x\"\ngid = 4294967297\n",
            6,
        ),
    ] {
        let (l, _, message, _) = invalid(&format!("name = \"a\"\n[closure]\n\n{body}"));
        assert_eq!(l, line, "{body}: {message}");
        assert!(message.contains("4294967295"), "{body}: {message}");
        assert!(!message.contains("i128"), "{body}: {message}");
    }
    let (_, _, message, _) =
        invalid("max_layers = 99999999999999999999\nname = \"a\"\n[closure]\n");
    assert!(message.contains("from 0 to 4294967295"), "{message}");
    assert!(!message.contains("i128"), "{message}");
    let m = ok("name = \"a\"\n[closure]\n[owner]\nuid = 4294967295\ngid = 4294967295\n");
    assert_eq!(m.manifest.owner.uid, Some(u32::MAX));
}

/// `mode = 644` is decimal 644, not the octal mode meant: refused with a
/// hint that names the key; a mode of the wrong type gets a mode hint.
#[test]
fn modes_must_be_octal_strings_or_octal_literals() {
    let perm = |body: &str| {
        format!("name = \"a\"\n[closure]\n[[customisation.permissions]]\npath = \"/x\"\n{body}\n")
    };
    for key in ["mode", "dir_mode", "file_mode"] {
        let (line, column, message, hint) = invalid(&perm(&format!("{key} = 644")));
        assert_eq!(line, 5);
        assert_eq!(column, key.len() + 4, "{message}");
        assert!(message.contains("decimal"), "{message}");
        assert!(hint.unwrap().contains(&format!("{key} = \"0644\"")));

        let (line, _, message, hint) = invalid(&perm(&format!("{key} = true")));
        assert_eq!(line, 5);
        assert!(
            message.contains(&format!("`customisation.permissions.{key}`")),
            "{message}"
        );
        let hint = hint.unwrap();
        assert!(hint.contains(&format!("{key} = \"0644\"")), "{hint}");
        assert!(!hint.contains("closure.source"), "{hint}");
    }
    let (line, _, _, hint) =
        invalid("name = \"a\"\n[closure]\n[[customisation.dirs]]\npath = \"/x\"\nmode = 755\n");
    assert_eq!(line, 5);
    assert!(hint.unwrap().contains("mode = \"0644\""));
    let m = ok(&perm("mode = 0o640\nfile_mode = \"0600\""));
    let rule = &m.customisation().unwrap().permissions[0];
    assert_eq!((rule.mode, rule.file_mode), (Some(0o640), Some(0o600)));
}

/// A public key in Nix's format (`nix key convert-secret-to-public`).
const KEY: &str = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

#[test]
fn binary_cache_source_and_its_keys() {
    let text = format!(
        "name = \"a\"\n[closure]\nsource = {{ binary_cache = \"https://cache.example.org/\" }}\n\
         trusted_public_keys = [\"{KEY}\"]\nnetrc_file = \"creds/netrc\"\nnar_cache_max_bytes = 1000\n"
    );
    let m = ok(&text);
    let ClosureSource::BinaryCache(cache) = m.closure_source().unwrap() else {
        panic!("not a binary cache source");
    };
    assert_eq!(cache.url, "https://cache.example.org");
    assert_eq!(cache.trusted_public_keys, [KEY]);
    assert!(cache.require_signatures);
    assert_eq!(
        cache.netrc_file.as_deref(),
        Some(Path::new("/work/app/creds/netrc"))
    );
    assert_eq!(cache.nar_cache_max_bytes, 1000);

    // Defaults: signatures required, ~/.netrc (resolved by the caller), 10 GiB.
    let m = ok("name = \"a\"\n[closure]\nsource = { binary_cache = \"file:///srv/cache\" }\nrequire_signatures = false\n");
    let ClosureSource::BinaryCache(cache) = m.closure_source().unwrap() else {
        panic!("not a binary cache source");
    };
    assert!(!cache.require_signatures && cache.trusted_public_keys.is_empty());
    assert_eq!(cache.netrc_file, None);
    assert_eq!(cache.nar_cache_max_bytes, DEFAULT_NAR_CACHE_MAX_BYTES);
}

#[test]
fn binary_cache_bad_values_are_located() {
    let at = |source: &str, extra: &str| {
        let (line, column, message, hint) = invalid(&format!(
            "name = \"a\"\n[closure]\nsource = {{ binary_cache = \"{source}\" }}\n{extra}"
        ));
        (line, column, message, hint.unwrap_or_default())
    };
    let keys = format!("trusted_public_keys = [\"{KEY}\"]\n");
    // s3:// says to use the HTTPS endpoint.
    let (line, _, message, _) = at("s3://bucket", &keys);
    assert_eq!(line, 3);
    assert!(message.contains("HTTPS endpoint"), "{message}");
    for bad in [
        "ftp://x",
        "file://relative",
        "https://user:pw@host",
        "https://h/?a=b",
        "",
    ] {
        let (line, _, message, _) = at(bad, &keys);
        assert_eq!(line, 3, "{bad}");
        assert!(message.contains("binary_cache"), "{bad}: {message}");
        assert!(
            !message.contains("pw"),
            "a credential in a message: {message}"
        );
    }
    // A key that is not `name:base64` of 32 bytes: at the key.
    let (line, column, message, _) =
        at("https://c", "trusted_public_keys = [\"ok:bm90IGEga2V5\"]\n");
    assert_eq!((line, column), (4, 24));
    assert!(message.contains("trusted_public_keys"), "{message}");
    // No key, signatures required (the default): at the source.
    let (line, _, message, hint) = at("https://c", "");
    assert_eq!(line, 3);
    assert!(message.contains("trusted_public_keys"), "{message}");
    assert!(hint.contains("require_signatures = false"));
    // Wrong types and a negative bound are caught while parsing.
    let (line, ..) = at("https://c", "require_signatures = \"no\"\n");
    assert_eq!(line, 4);
    let (line, ..) = at("https://c", &format!("{keys}nar_cache_max_bytes = -1\n"));
    assert_eq!(line, 5);
    let (line, _, message, _) = at("https://c", &format!("{keys}netrc_file = \"~/.netrc\"\n"));
    assert_eq!(line, 5);
    assert!(message.contains('~'), "{message}");
}

#[test]
fn binary_cache_keys_without_a_binary_cache_are_errors() {
    for (extra, key) in [
        (
            format!("trusted_public_keys = [\"{KEY}\"]"),
            "trusted_public_keys",
        ),
        (
            "require_signatures = false".to_owned(),
            "require_signatures",
        ),
        ("netrc_file = \"n\"".to_owned(), "netrc_file"),
        ("nar_cache_max_bytes = 5".to_owned(), "nar_cache_max_bytes"),
    ] {
        let (line, column, message, hint) =
            invalid(&format!("name = \"a\"\n[closure]\nroots = []\n{extra}\n"));
        assert_eq!(line, 4, "{key}");
        assert!(column > 1, "{key}: at the value");
        assert!(message.contains(key), "{message}");
        assert!(hint.unwrap().contains("binary_cache"));
    }
}
