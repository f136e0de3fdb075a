//! The manifest as a JSON Schema (draft 2020-12), for `nixlayer schema`:
//! editors (taplo, Even Better TOML) validate and complete `image.toml`
//! with it.
//!
//! Written as data next to the structs it describes. Every table the
//! manifest reads with `deny_unknown_fields` has `additionalProperties:
//! false`, `[config]` allows exactly the keys [`LoadedManifest::validate`]
//! accepts, and the allowed values come from the same constants the checks
//! use. A unit test walks the manifest structs' own fields, so a key added
//! to them and not here fails it.
//!
//! [`LoadedManifest::validate`]: super::LoadedManifest::validate

use serde_json::{json, Map, Value};

use super::resolved::{CONFIG_KEYS, SOURCE_KEYS};
use super::{OutputFormat, DEFAULT_MAX_LAYERS, DEFAULT_NAR_CACHE_MAX_BYTES, DEFAULT_STORE_DIR};
use crate::codec::Compression;
use crate::plan::PIPELINE_OPERATIONS;

/// The draft the schema follows.
pub(super) const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// nixpkgs' default for `created` (and so `mtime`).
const DEFAULT_TIME: &str = "1970-01-01T00:00:01Z";

/// The JSON Schema of the manifest. The same value on every call; its
/// objects are sorted maps, so it serialises the same way everywhere.
#[must_use]
pub fn json_schema() -> Value {
    let mut schema = base_schema();
    add_platforms(&mut schema);
    schema
}

/// `[[platforms]]`: each entry's `closure` and `store` tables are the
/// top-level ones (a platform's `store.dir` defaults to the top-level one).
fn add_platforms(schema: &mut Value) {
    let props = &schema["properties"];
    let platform = strict_table(
        "One more platform of the image, besides the top-level one (`architecture`, `variant`, `[closure]`, `[store]`): OCI outputs and push write an image index over all of them; docker-archive builds one, chosen with `--platform`.",
        json!({
            "architecture": {
                "type": "string",
                "description": "GOARCH spelling (`amd64`, `arm64`, …).",
                "enum": super::resolved::GOARCH,
                "examples": ["arm64"],
            },
            "variant": {
                "type": "string",
                "description": "CPU variant (arm), e.g. `v8`; default none.",
            },
            "closure": props["closure"].clone(),
            "store": props["store"].clone(),
            "config": platform_config(&props["config"]),
            "annotations": {
                "type": "object",
                "description": "`[platforms.annotations]`: annotations of this platform's image manifest, each over the top-level `[annotations]` key of that name.",
                "additionalProperties": { "type": "string" },
            },
        }),
    );
    let mut platform = platform;
    platform["required"] = json!(["architecture", "closure"]);
    schema["properties"]["platforms"] = json!({
        "type": "array",
        "description": "`[[platforms]]`: further platforms, each with its own closure; the top-level closure is the default platform.",
        "items": platform,
    });
}

/// `[platforms.config]`: the top-level `[config]`'s keys, each replacing
/// the top-level value of that name for this platform.
fn platform_config(config: &Value) -> Value {
    let mut config = config.clone();
    config["description"] = json!("`[platforms.config]`: image config keys of this platform (the `[config]` keys), each replacing the top-level `[config]` value of that name whole (`Env` included); keys not given are inherited. The architecture guard checks this platform's own entrypoint.");
    config
}

fn base_schema() -> Value {
    json!({
        "$schema": DRAFT,
        "title": "nixlayer manifest (image.toml)",
        "description": "An OCI / Docker image built from Nix store closures by `nixlayer build`. Unknown keys are errors.",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "closure"],
        "properties": {
            "name": {
                "type": "string",
                "description": "Image name, lowercased into the reference: `registry/repository` parts of lowercase letters and digits joined by `.`, `_` or `-`. `--tag NAME[:TAG]` overrides it.",
                "examples": ["registry.example.com/team/hello"],
            },
            "tag": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                "description": "Tag; default derived from the content: the first 32 hex digits of the config digest.",
            },
            "architecture": {
                "type": "string",
                "description": "GOARCH spelling (`amd64`, `arm64`, …); default the host's.",
                "enum": super::resolved::GOARCH,
                "examples": ["amd64", "arm64"],
            },
            "os": {
                "type": "string",
                "description": "Image OS, GOOS spelling.",
                "enum": super::resolved::GOOS,
                "default": "linux",
            },
            "variant": {
                "type": "string",
                "description": "CPU variant (arm), e.g. `v7`; default none.",
            },
            "created": {
                "type": "string",
                "description": "RFC 3339 or `now` (or an unquoted TOML date-time with an offset); image metadata only. When unset, `SOURCE_DATE_EPOCH` from the environment if set, else 1970-01-01T00:00:01Z.",
                "default": DEFAULT_TIME,
                "examples": ["now"],
            },
            "mtime": {
                "type": "string",
                "description": "RFC 3339 or `now` (or an unquoted TOML date-time with an offset); timestamp of every file in every layer. Default: the value of `created`.",
                "examples": [DEFAULT_TIME],
            },
            "annotations": {
                "type": "object",
                "description": "Annotations of the OCI image manifest (OCI outputs and push; a docker-archive has none), e.g. the standard `org.opencontainers.image.source`, `revision`, `version`. Keys non-empty, values strings. `--annotation KEY=VALUE` adds or overrides one. None are added to the manifest by default (a layout's `index.json` entry gets `created` and the tag as `version`).",
                "additionalProperties": { "type": "string" },
                "examples": [{ "org.opencontainers.image.source": "https://example.com/repo" }],
            },
            "index": strict_table("`[index]`: the image index a multi-platform manifest gives in OCI outputs and push.", json!({
                "annotations": {
                    "type": "object",
                    "description": "Annotations of the image index over the platforms' manifests (part of its digest; a single-platform output has no index). `--annotation index:KEY=VALUE` adds or overrides one.",
                    "additionalProperties": { "type": "string" },
                    "examples": [{ "org.opencontainers.image.description": "hello on amd64 and arm64" }],
                },
            })),
            "max_layers": {
                "type": "integer",
                "minimum": 2,
                "maximum": u32::MAX,
                "description": "Total layer budget, base-image and customisation layers included.",
                "default": DEFAULT_MAX_LAYERS,
            },
            "store": strict_table("`[store]`: where the store is.", json!({
                "dir": {
                    "type": "string",
                    "description": "Store directory every store path must live in (an absolute path).",
                    "default": DEFAULT_STORE_DIR,
                },
                "root": {
                    "type": "string",
                    "description": "Filesystem root the store is read from (a chroot store, a CI cache); relative to the manifest.",
                    "default": "/",
                },
            })),
            "closure": strict_table("`[closure]`: what goes into the image.", json!({
                "roots": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Store paths whose closure goes into the image.",
                    "default": [],
                },
                "source": closure_source(),
                "exclude": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Store paths dropped from the graph before layering (their dependencies stay).",
                    "default": [],
                },
                "include_store_paths": {
                    "type": "boolean",
                    "description": "`false`: no store path enters the image by any route.",
                    "default": true,
                },
                "include_nix_db": {
                    "type": "boolean",
                    "description": "`true`: `/nix/var/nix/db` registering every image path, and gcroots for the roots.",
                    "default": false,
                },
                "trusted_public_keys": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[^:]+:[A-Za-z0-9+/=]+$"},
                    "description": "Binary cache only: keys (`name:base64`, Nix's format) one of which must sign every path.",
                    "default": [],
                },
                "require_signatures": {
                    "type": "boolean",
                    "description": "Binary cache only: `false` accepts unsigned paths when no key is given (Nix's default is to require signatures).",
                    "default": true,
                },
                "netrc_file": {
                    "type": "string",
                    "description": "Binary cache only: a netrc file with the cache host's credentials; relative to the manifest. Default `~/.netrc`.",
                },
                "nar_cache_max_bytes": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Binary cache only: the most bytes the verified NAR cache (`$XDG_CACHE_HOME/nixlayer/nar`) keeps; least recently used go first.",
                    "default": DEFAULT_NAR_CACHE_MAX_BYTES,
                },
            })),
            "config": config(),
            "owner": strict_table("`[owner]`: owner of every store-layer entry, `/nix` and `/nix/store` included.", json!({
                "uid": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "Owner id.", "default": 0},
                "gid": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "Group id.", "default": 0},
                "uname": {"type": "string", "description": "Owner name.", "default": "root"},
                "gname": {"type": "string", "description": "Group name.", "default": "root"},
            })),
            "layering": layering(),
            "customisation": customisation(),
            "base": {
                "type": "object",
                "additionalProperties": false,
                "required": ["image"],
                "description": "`[base]`: an image whose layers come first; its `Env` is merged.",
                "properties": {
                    "image": {
                        "type": "string",
                        "description": "A docker-archive (plain, gzip, zstd, xz), an OCI archive or an OCI layout directory, relative to the manifest; or a registry image pinned by digest, `docker://HOST/NAME[:TAG]@sha256:…` (pulled once into `$XDG_CACHE_HOME/nixlayer/images`; an index is resolved to the image's `architecture`/`os`/`variant`).",
                    },
                },
            },
            "users": users(),
            "groups": groups(),
            "output": strict_table("`[output]`: what `nixlayer build` writes (`--format`, `--compression`, `--level` override).", json!({
                "format": {
                    "enum": OutputFormat::ALL.map(OutputFormat::name),
                    "description": "`docker-archive` (for `docker load`), `oci-layout` (a directory), `oci-archive`, or `rootfs` (one tar of the merged filesystem, for `docker import`; uncompressed).",
                    "default": OutputFormat::DockerArchive.name(),
                },
                "compression": {
                    "enum": Compression::WRITABLE.map(Compression::name),
                    "description": "docker-archive: the whole archive; OCI: each layer.",
                    "default": Compression::None.name(),
                },
                "level": {
                    "type": "integer",
                    "description": "Compression level: gzip 1-9 (default 6), zstd 1-19 (default 3).",
                },
            })),
        },
    })
}

/// An object with these properties and no others.
fn strict_table(description: &str, properties: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": description,
        "properties": properties,
    })
}

/// `closure.source`: `"nix-store"` or a one-key table naming a file.
fn closure_source() -> Value {
    let file_forms = [
        "`registration`: the `registration` file of nixpkgs' closureInfo or `nix-store --dump-db` output",
        "`graph`: exportReferencesGraph JSON (structured attrs)",
        "`path_info`: `nix path-info --json --recursive` output",
        "`dot`: `nix-store --query --graph` output",
    ];
    let mut properties: Map<String, Value> = SOURCE_KEYS
        .iter()
        .zip(file_forms)
        .map(|(key, what)| {
            let description = format!("{what}; relative to the manifest.");
            (
                (*key).to_owned(),
                json!({"type": "string", "description": description}),
            )
        })
        .collect();
    properties.insert(
        "binary_cache".to_owned(),
        json!({
            "type": "string",
            "pattern": "^(file:///|https?://[^/@?#]+)[^?#]*$",
            "description": "A Nix binary cache URL (`file:///dir`, `http://…`, `https://…`; for S3 the bucket's HTTPS endpoint): the closure from its signed narinfos, the content from its verified NARs, no local store read.",
        }),
    );
    json!({
        "description": "Where references come from: \"nix-store\" (ask the local store) or a table with one key naming a file.",
        "default": "nix-store",
        "oneOf": [
            {"const": "nix-store", "description": "Ask the local store with `nix-store`."},
            {
                "type": "object",
                "additionalProperties": false,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": properties,
            },
        ],
    })
}

/// `[config]`: the OCI image config keys, verbatim.
fn config() -> Value {
    let properties: Map<String, Value> = CONFIG_KEYS
        .iter()
        .map(|key| ((*key).to_owned(), config_key(key)))
        .collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "`[config]`: the OCI image config, OCI key names, copied verbatim.",
        "default": {},
        "properties": properties,
    })
}

/// The schema of one `[config]` key; `{}` for a key not described here,
/// which the tests forbid.
fn config_key(key: &str) -> Value {
    let strings = |description: &str| json!({"type": "array", "items": {"type": "string"}, "description": description});
    let set = |description: &str| {
        json!({
            "type": "object",
            "additionalProperties": {"type": "object", "maxProperties": 0},
            "description": description,
        })
    };
    let string = |description: &str| json!({"type": "string", "description": description});
    let integer = |description: &str| json!({"type": "integer", "description": description});
    let count =
        |description: &str| json!({"type": "integer", "minimum": 0, "description": description});
    match key {
        "User" => {
            string("User (and group) the process runs as: `name`, `uid`, `uid:gid`, `name:group`.")
        }
        "ExposedPorts" => set("Ports to expose, as `\"PORT/tcp\" = {}` (or `/udp`)."),
        "Env" => json!({
            "type": "array",
            "items": {"type": "string", "pattern": "^[^=]+="},
            "description": "Environment variables, `NAME=value`.",
        }),
        "Entrypoint" => strings("The command run when the container starts."),
        "Cmd" => strings("Arguments to the entry point (or the command, without one)."),
        "Volumes" => set("Directories holding data, as `\"/data\" = {}`."),
        "WorkingDir" => json!({
            "type": "string",
            "pattern": "^(/|$)",
            "description": "Current directory of the process: an absolute path (empty: `/`).",
        }),
        "Labels" => json!({
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Arbitrary metadata, e.g. `org.opencontainers.image.source`.",
        }),
        "StopSignal" => string("The signal that stops the container, e.g. `SIGTERM`."),
        "ArgsEscaped" => {
            json!({"type": "boolean", "description": "Windows only (OCI: deprecated)."})
        }
        "Memory" => integer("Memory limit in bytes (docker)."),
        "MemorySwap" => integer("Memory plus swap limit in bytes, -1 for unlimited (docker)."),
        "CpuShares" => integer("Relative CPU weight (docker)."),
        "Healthcheck" => json!({
            "type": "object",
            "additionalProperties": false,
            "description": "How docker checks the container is healthy; durations in nanoseconds.",
            "properties": {
                "Test": strings("`[\"NONE\"]`, `[\"CMD\", …]` or `[\"CMD-SHELL\", \"…\"]`."),
                "Interval": count("Time between checks."),
                "Timeout": count("Time a check may take."),
                "StartPeriod": count("Time to start before checks count."),
                "StartInterval": count("Time between checks while starting."),
                "Retries": count("Failures in a row before unhealthy."),
            },
        }),
        "OnBuild" => strings("Instructions docker runs when the image is a build base."),
        "Shell" => strings("The shell of shell-form instructions (docker)."),
        _ => json!({}),
    }
}

/// A mode: an octal string (`"0644"`, `"1777"`) or a TOML integer (`0o644`).
fn mode(description: &str, default: Option<&str>) -> Value {
    let mut value = json!({
        "description": format!("{description} An octal string such as \"0644\", or an octal integer such as 0o644 (a decimal integer such as 644 is an error)."),
        "anyOf": [
            {"type": "string", "pattern": "^(0o)?[0-7]+$"},
            {"type": "integer", "minimum": 0, "maximum": 0o7777},
        ],
    });
    if let (Some(default), Some(object)) = (default, value.as_object_mut()) {
        object.insert("default".to_owned(), json!(default));
    }
    value
}

/// An absolute path in the image.
fn image_path(description: &str) -> Value {
    json!({"type": "string", "pattern": "^/", "description": description})
}

/// `[layering]`: a pipeline or a strategy, not both.
fn layering() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "`[layering]`: how store paths are grouped into layers. Set `pipeline` or `strategy`, not both.",
        "not": {"required": ["pipeline", "strategy"]},
        "properties": {
            "pipeline": {
                "type": "array",
                "description": "The nixpkgs `layeringPipeline` DSL, verbatim, e.g. [[\"popularity_contest\"], [\"limit_layers\", 99]].",
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "prefixItems": [{"enum": PIPELINE_OPERATIONS}],
                },
                "examples": [[["popularity_contest"], ["limit_layers", 99]]],
            },
            "strategy": {
                "enum": ["popularity", "auto"],
                "description": "`auto`: nixpkgs' auto-layer algorithm, current nixpkgs' default (`layeringPipeline` unset, PR #355189); `popularity`: nixpkgs' popularity contest, then `limit_layers` to the budget (nixpkgs' default before that PR).",
                "default": "auto",
            },
        },
    })
}

/// `[customisation]`: the top layer.
fn customisation() -> Value {
    let entry = |description: &str, required: &[&str], properties: Value| {
        json!({
            "type": "array",
            "description": description,
            "items": {
                "type": "object",
                "additionalProperties": false,
                "required": required,
                "properties": properties,
            },
        })
    };
    let mut files = entry(
        "`[[customisation.files]]`: files with `text` or `source`.",
        &["path"],
        json!({
            "path": image_path("Absolute path in the image."),
            "text": {"type": "string", "description": "Contents, given inline."},
            "source": {"type": "string", "description": "Contents, copied from this file (relative to the manifest)."},
            "mode": mode("File mode.", Some("0644")),
        }),
    );
    files["items"]["oneOf"] = json!([{"required": ["text"]}, {"required": ["source"]}]);
    let mut permissions = entry(
        "`[[customisation.permissions]]`: fakeroot-like rules applied to every entry of every layer they match.",
        &["path"],
        json!({
            "path": image_path("A path or glob (`*`, `?`, `**`), e.g. \"/nix/var/nix/**\"."),
            "uid": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "New owner id."},
            "gid": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "New group id."},
            "uname": {"type": "string", "description": "New owner name."},
            "gname": {"type": "string", "description": "New group name."},
            "mode": mode("Mode of files and directories.", None),
            "dir_mode": mode("Mode of directories, over `mode`.", None),
            "file_mode": mode("Mode of regular files, over `mode`.", None),
        }),
    );
    // A rule that changes nothing is an error.
    permissions["items"]["anyOf"] = [
        "uid",
        "gid",
        "uname",
        "gname",
        "mode",
        "dir_mode",
        "file_mode",
    ]
    .iter()
    .map(|key| json!({"required": [key]}))
    .collect();
    strict_table(
        "`[customisation]`: the top layer: store paths merged into `/`, files, directories, symlinks, and permission rules.",
        json!({
            "contents": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Store paths merged into `/` as symlinks, like symlinkJoin; their closures go into the store layers.",
                "default": [],
            },
            "on_collision": {
                "enum": ["error", "first"],
                "description": "When two `contents` have different files at one path: an error, or the first wins.",
                "default": "error",
            },
            "files": files,
            "dirs": entry(
                "`[[customisation.dirs]]`: directories.",
                &["path"],
                json!({
                    "path": image_path("Absolute path in the image."),
                    "mode": mode("Directory mode.", Some("0755")),
                }),
            ),
            "symlinks": entry(
                "`[[customisation.symlinks]]`: symbolic links.",
                &["path", "target"],
                json!({
                    "path": image_path("Absolute path in the image."),
                    "target": {"type": "string", "minLength": 1, "description": "Where it points, verbatim."},
                }),
            ),
            "permissions": permissions,
            "run": {
                "type": "string",
                "description": "A shell script (`sh -e`) run over the customisation tree as fake root (Debian's `fakeroot`), after everything else; its working directory is the image's `/` (use relative paths), and its `chown`/`chmod` results become the layer's owners and modes (nixpkgs' `fakeRootCommands`).",
            },
            "chroot": {
                "type": "boolean",
                "default": false,
                "description": "Run the `run` script inside the image root instead (nixpkgs' `enableFakechroot`): absolute paths work, the closure's store paths are visible read-only at their store locations, the shell is the image's `/bin/sh` or else a store path's `bin/sh`, and nothing is mounted on `/proc`, `/sys` or `/dev`. Needs the build to run as root (real `chown` in a private mount namespace: `unshare` from util-linux).",
            },
        }),
    )
}

/// `[[users]]`: accounts written to `/etc/passwd` and `/etc/shadow`.
fn users() -> Value {
    let id = |description: &str| json!({"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": description});
    json!({
        "type": "array",
        "description": "`[[users]]`: accounts in `/etc/passwd`, `/etc/shadow` (locked) and `/etc/group`, with `/etc/nsswitch.conf`; `root` and `nobody` are added unless defined. `config.User` may name one.",
        "items": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "uid"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$", "description": "Login name."},
                "uid": id("User id."),
                "gid": id("Primary group id; default the group of the user's name if defined, else the uid (a group of the user's name is made for it)."),
                "home": {"type": "string", "pattern": "^/", "description": "Home directory, created and owned by the user (not `/`, `/nonexistent`, `/var/empty`); default `/home/NAME`, `/root` for uid 0."},
                "shell": {"type": "string", "pattern": "^/", "description": "Login shell.", "default": "/bin/sh"},
                "description": {"type": "string", "description": "The GECOS field."},
                "groups": {"type": "array", "items": {"type": "string"}, "description": "Supplementary groups, by `[[groups]]` name.", "default": []},
            },
        },
    })
}

/// `[[groups]]`: groups written to `/etc/group`.
fn groups() -> Value {
    json!({
        "type": "array",
        "description": "`[[groups]]`: groups in `/etc/group`; `root` and `nogroup` are added unless defined.",
        "items": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "gid"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}$", "description": "Group name."},
                "gid": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "Group id."},
                "members": {"type": "array", "items": {"type": "string"}, "description": "Member user names.", "default": []},
            },
        },
    })
}

#[cfg(test)]
mod tests;
