//! The schema against the manifest structs (every key they accept, and no
//! other, in every table), against manifests (the example and SPEC §1's
//! full one validate, broken ones do not), and its own shape.
//!
//! The struct walk needs no list kept by hand: [`FieldRecorder`] is a serde
//! deserializer that answers every struct with its own field names and
//! records them, so a key added to a manifest struct and not to the schema
//! fails `every_manifest_key_is_in_the_schema`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;
use serde_json::{json, Value};

use super::*;
use crate::manifest::Manifest;

/// Table path (`""`, `closure`, `customisation.files`) → its field names.
type Tables = BTreeMap<String, BTreeSet<&'static str>>;

/// A deserializer that gives every struct all its fields, with a neutral
/// value of whatever type each asks for, and records the field names
/// under the table's dotted path. An array gets one element, so arrays of
/// tables are walked too; a map (`[config]`) gets none.
struct FieldRecorder<'a> {
    path: String,
    tables: &'a RefCell<Tables>,
}

/// `toml::Spanned`'s private struct name: it wraps a value, it is no table.
const SPANNED: &str = "$__serde_spanned_private_Spanned";

impl<'de> Deserializer<'de> for FieldRecorder<'_> {
    type Error = de::value::Error;

    // Untagged enums (`closure.source`, modes) and JSON values: a string
    // suits all of them.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str("")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(Fields {
            fields: &[],
            parent: self,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if name != SPANNED {
            self.tables
                .borrow_mut()
                .entry(self.path.clone())
                .or_default()
                .extend(fields);
        }
        visitor.visit_map(Fields {
            fields,
            parent: self,
        })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 u8 u16 f32 f64 char str string bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum identifier ignored_any i128 u128
    }
}

/// Every field of a struct, each valued by a recorder one table deeper
/// (`Spanned`'s fields keep the path: they are the same key).
struct Fields<'a> {
    fields: &'static [&'static str],
    parent: FieldRecorder<'a>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.fields.first() {
            Some(field) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(field))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let (field, rest) = self.fields.split_first().expect("a key was given");
        self.fields = rest;
        let path = if field.starts_with("$__serde_spanned") {
            self.parent.path.clone()
        } else if self.parent.path.is_empty() {
            (*field).to_owned()
        } else {
            format!("{}.{field}", self.parent.path)
        };
        seed.deserialize(FieldRecorder {
            path,
            tables: self.parent.tables,
        })
    }
}

struct OneElement<'a>(Option<FieldRecorder<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = de::value::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        self.0.take().map(|r| seed.deserialize(r)).transpose()
    }
}

/// The tables of [`Manifest`] and their keys, from its serde derive.
fn manifest_tables() -> Tables {
    let tables = RefCell::new(Tables::new());
    Manifest::deserialize(FieldRecorder {
        path: String::new(),
        tables: &tables,
    })
    .expect("the recorder satisfies every field");
    tables.into_inner()
}

/// The schema of the table at dotted `path`, through arrays of tables.
fn schema_at<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut node = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        node = &node["properties"][part];
        assert!(!node.is_null(), "`{path}`: no `{part}` in the schema");
        if node["type"] == "array" {
            node = &node["items"];
        }
    }
    node
}

#[test]
fn every_manifest_key_is_in_the_schema() {
    let schema = json_schema();
    let tables = manifest_tables();
    // The walk reached the nested tables, arrays of tables included.
    for path in [
        "",
        "store",
        "closure",
        "owner",
        "customisation.files",
        "base",
    ] {
        assert!(tables.contains_key(path), "{path}: {tables:?}");
    }
    for (path, fields) in &tables {
        let node = schema_at(&schema, path);
        assert_eq!(node["type"], "object", "`{path}`");
        assert_eq!(node["additionalProperties"], false, "`{path}`");
        let described: BTreeSet<&str> = node["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("`{path}` has no properties"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(&described, fields, "keys of `{path}`");
    }
}

#[test]
fn config_allows_exactly_the_oci_keys_the_manifest_accepts() {
    let schema = json_schema();
    let config = &schema["properties"]["config"];
    assert_eq!(config["additionalProperties"], false);
    let keys: BTreeSet<&str> = config["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, CONFIG_KEYS.into_iter().collect());
    for key in CONFIG_KEYS {
        assert!(
            config["properties"][key]["description"].is_string(),
            "`config.{key}` is not described"
        );
    }
}

/// Every property says what it is; every draft keyword used is spelt right
/// (a typo would be ignored by validators, silently).
#[test]
fn schema_is_described_and_uses_known_keywords() {
    const KEYWORDS: [&str; 22] = [
        "$schema",
        "title",
        "description",
        "type",
        "properties",
        "additionalProperties",
        "required",
        "items",
        "prefixItems",
        "minItems",
        "enum",
        "const",
        "oneOf",
        "anyOf",
        "not",
        "default",
        "examples",
        "pattern",
        "minimum",
        "maximum",
        "minProperties",
        "maxProperties",
    ];
    fn walk(node: &Value, at: &str) {
        let Some(object) = node.as_object() else {
            return;
        };
        for (key, value) in object {
            assert!(
                KEYWORDS.contains(&key.as_str()) || key == "minLength",
                "{at}: unknown keyword `{key}`"
            );
            match key.as_str() {
                "properties" => {
                    for (name, property) in value.as_object().unwrap() {
                        assert!(
                            property["description"].is_string(),
                            "{at}.{name} has no description"
                        );
                        walk(property, &format!("{at}.{name}"));
                    }
                }
                "items" | "additionalProperties" | "not" => walk(value, at),
                "oneOf" | "anyOf" | "prefixItems" => {
                    for v in value.as_array().unwrap() {
                        walk(v, at);
                    }
                }
                _ => {}
            }
        }
    }
    let schema = json_schema();
    assert_eq!(schema["$schema"], DRAFT);
    walk(&schema, "");
    // The same bytes every time.
    assert_eq!(
        serde_json::to_string_pretty(&schema).unwrap(),
        serde_json::to_string_pretty(&json_schema()).unwrap()
    );
}

/// The errors of `value` against the subset of the draft the schema uses
/// (`pattern` aside: no regex engine for a test).
fn check(value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
    let mut fail = |what: String| errors.push(format!("{at}: {what}"));
    if let Some(ty) = schema["type"].as_str() {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            other => panic!("type `{other}` not handled"),
        };
        if !ok {
            fail(format!("not of type {ty}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            fail(format!("{value} is not one of {allowed:?}"));
        }
    }
    if !schema["const"].is_null() && schema["const"] != *value {
        fail(format!("{value} is not {}", schema["const"]));
    }
    if let Some(min) = schema["minimum"].as_i64() {
        if value.as_i64().is_some_and(|v| v < min) {
            fail(format!("{value} < {min}"));
        }
    }
    if let Some(max) = schema["maximum"].as_i64() {
        if value.as_i64().is_some_and(|v| v > max) {
            fail(format!("{value} > {max}"));
        }
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        if value.get(key.as_str().unwrap()).is_none() {
            fail(format!("missing `{}`", key.as_str().unwrap()));
        }
    }
    let mut sub = |schema: &Value| {
        let mut e = Vec::new();
        check(value, schema, at, &mut e);
        e.is_empty()
    };
    if let Some(options) = schema["oneOf"].as_array() {
        let passing = options.iter().filter(|s| sub(s)).count();
        if passing != 1 {
            errors.push(format!("{at}: {passing} of `oneOf` match"));
        }
    }
    if let Some(options) = schema["anyOf"].as_array() {
        if !options.iter().any(&mut sub) {
            errors.push(format!("{at}: no `anyOf` matches"));
        }
    }
    if schema["not"].is_object() && sub(&schema["not"]) {
        errors.push(format!("{at}: matches `not`"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        let n = object.len() as u64;
        if schema["minProperties"].as_u64().is_some_and(|m| n < m)
            || schema["maxProperties"].as_u64().is_some_and(|m| n > m)
        {
            errors.push(format!("{at}: {n} keys"));
        }
        for (key, v) in object {
            let path = format!("{at}.{key}");
            match properties.and_then(|p| p.get(key)) {
                Some(s) => check(v, s, &path, errors),
                None if schema["additionalProperties"] == false => {
                    errors.push(format!("{path}: unknown key"));
                }
                None if schema["additionalProperties"].is_object() => {
                    check(v, &schema["additionalProperties"], &path, errors);
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            let path = format!("{at}[{i}]");
            if let Some(prefix) = schema["prefixItems"].as_array().and_then(|p| p.get(i)) {
                check(item, prefix, &path, errors);
            } else if schema["items"].is_object() {
                check(item, &schema["items"], &path, errors);
            }
        }
    }
}

fn errors_of(toml_text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(toml_text).expect("valid TOML");
    let value = serde_json::to_value(table).unwrap();
    let mut errors = Vec::new();
    check(&value, &json_schema(), "", &mut errors);
    errors
}

/// SPEC §1's manifest, every key set (`strategy` aside: it excludes `pipeline`).
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
exclude = []
include_store_paths = true
include_nix_db = false

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
Healthcheck = { Test = ["CMD", "true"], Interval = 1000000000, Retries = 3 }

[owner]
uid = 0
gid = 0
uname = "root"
gname = "root"

[layering]
pipeline = [["popularity_contest"], ["limit_layers", 99]]

[customisation]
contents = ["/nix/store/00000000000000000000000000000000-hello-2.12.1"]
on_collision = "error"

[[customisation.files]]
path = "/etc/passwd"
text = "root:x:0:0:root:/root:/bin/sh\n"
mode = "0644"

[[customisation.files]]
path = "/app/settings.json"
source = "settings.json"
mode = 0o600

[[customisation.dirs]]
path = "/tmp"
mode = "1777"

[[customisation.symlinks]]
path = "/bin/sh"
target = "/nix/store/00000000000000000000000000000000-busybox/bin/busybox"

[[customisation.permissions]]
path = "/home/user"
uid = 1000
gid = 1000
mode = "0755"

[base]
image = "base.tar"

[output]
format = "docker-archive"
compression = "none"
level = 6
"#;

#[test]
fn full_manifest_is_accepted_by_the_structs_and_the_schema() {
    // The structs take it (unknown keys would fail: `deny_unknown_fields`).
    toml::from_str::<Manifest>(FULL).expect("the structs accept SPEC §1's keys");
    assert_eq!(errors_of(FULL), Vec::<String>::new());
    let closure_source_forms = [
        "{ graph = \"graph.json\" }",
        "{ registration = \"registration\" }",
        "{ path_info = \"info.json\" }",
        "{ dot = \"graph.dot\" }",
    ];
    for form in closure_source_forms {
        let text = FULL.replace("source = \"nix-store\"", &format!("source = {form}"));
        assert_eq!(errors_of(&text), Vec::<String>::new(), "{form}");
    }
    let auto = FULL.replace(
        "pipeline = [[\"popularity_contest\"], [\"limit_layers\", 99]]",
        "strategy = \"auto\"",
    );
    assert_eq!(errors_of(&auto), Vec::<String>::new());
}

#[test]
fn example_manifest_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(errors_of(&text), Vec::<String>::new());
}

#[test]
fn what_the_manifest_rejects_the_schema_rejects() {
    let minimal = "name = \"x\"\n[closure]\nroots = []\n";
    assert_eq!(errors_of(minimal), Vec::<String>::new());
    for (extra, error) in [
        ("colour = 1\n", ".colour: unknown key"),
        (
            "[config]\nEntryPoint = []\n",
            ".config.EntryPoint: unknown key",
        ),
        (
            "[store]\nroot = \"/\"\nlocation = 1\n",
            ".store.location: unknown key",
        ),
        ("[layering]\nstrategy = \"size\"\n", "is not one of"),
        (
            "[layering]\nstrategy = \"auto\"\npipeline = []\n",
            "matches `not`",
        ),
        ("[layering]\npipeline = [[\"shuffle\"]]\n", "is not one of"),
        ("[output]\nformat = \"tarball\"\n", "is not one of"),
        ("[output]\ncompression = \"xz\"\n", "is not one of"),
        ("max_layers = 1\n", "1 < 2"),
        (
            "[customisation]\non_collision = \"last\"\n",
            "is not one of",
        ),
        ("[[customisation.files]]\npath = \"/a\"\n", "0 of `oneOf`"),
        (
            "[[customisation.symlinks]]\npath = \"/a\"\n",
            "missing `target`",
        ),
        (
            "[[customisation.permissions]]\npath = \"/a\"\n",
            "no `anyOf`",
        ),
        (
            "[[customisation.dirs]]\npath = \"/a\"\nmode = true\n",
            "no `anyOf`",
        ),
        ("[base]\n", "missing `image`"),
        ("[config]\nEntrypoint = 5\n", ".config.Entrypoint"),
        ("[config]\nLabels = { a = 5 }\n", ".config.Labels"),
        ("[config]\nVolumes = [\"/data\"]\n", ".config.Volumes"),
        ("architecture = \"aarch64\"\n", ".architecture"),
        ("os = \"Linux\"\n", ".os"),
        (
            "[config]\nHealthcheck = { Retries = -1 }\n",
            ".config.Healthcheck",
        ),
        (
            "[config]\nHealthcheck = { Tset = [] }\n",
            ".config.Healthcheck",
        ),
        ("[owner]\nuid = 4294967296\n", ".owner.uid"),
    ] {
        // Tables after the top-level keys, so a bare key stays top-level.
        let text = if extra.starts_with('[') {
            format!("{minimal}{extra}")
        } else {
            format!("{extra}{minimal}")
        };
        let errors = errors_of(&text);
        assert!(
            errors.iter().any(|e| e.contains(error)),
            "{extra:?}: expected `{error}` in {errors:?}"
        );
    }
    for source in [
        "\"nix\"",
        "{ graph = \"g\", dot = \"d\" }",
        "{ binary_cache = 5 }",
    ] {
        let text = format!("{minimal}source = {source}\n");
        assert!(!errors_of(&text).is_empty(), "{source}");
    }
    let missing_name = errors_of("[closure]\nroots = []\n");
    assert_eq!(missing_name, [": missing `name`"]);
}

#[test]
fn names_the_formats_and_values_the_checks_use() {
    let schema = json_schema();
    let output = &schema["properties"]["output"]["properties"];
    assert_eq!(
        output["format"]["enum"],
        json!(["docker-archive", "oci-layout", "oci-archive", "rootfs"])
    );
    assert_eq!(
        output["compression"]["enum"],
        json!(["none", "gzip", "zstd"])
    );
    assert_eq!(schema["properties"]["max_layers"]["default"], 100);
    assert_eq!(
        schema["properties"]["store"]["properties"]["dir"]["default"],
        "/nix/store"
    );
}
