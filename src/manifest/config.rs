//! `[config]` checked against the OCI image config's types (image-spec
//! `config.md`, plus docker's `Memory`, `MemorySwap`, `CpuShares`,
//! `Healthcheck`, `OnBuild` and `Shell`), so `Entrypoint = 5` is an error at
//! its line instead of an image that `docker load` refuses.
//!
//! The typed manifest keeps `[config]` as JSON values without spans, so the
//! check walks toml's spanned document instead and points at the offending
//! value (or the element of an array, or the entry of a table).

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diagnose::kind;
use super::hints::key_hint;
use super::resolved::CONFIG_KEYS;
use super::{Error, LoadedManifest};

/// The keys of `Healthcheck` (docker's `HealthConfig`).
const HEALTHCHECK_KEYS: [&str; 6] = [
    "Test",
    "Interval",
    "Timeout",
    "StartPeriod",
    "StartInterval",
    "Retries",
];

/// What a value must be.
#[derive(Clone, Copy)]
enum Shape {
    String,
    /// `WorkingDir`: an absolute path, or empty for the default (runc
    /// refuses a relative one when the container starts).
    WorkDir,
    Strings,
    /// `Env`: `NAME=value` strings.
    EnvStrings,
    /// `ExposedPorts`: `"PORT[/PROTO]" = {}` entries.
    Ports,
    /// `Volumes`: `"/path" = {}` entries.
    Paths,
    /// `Labels`: string → string.
    StringMap,
    Bool,
    Integer,
    /// An integer that is not negative (`Healthcheck` durations, retries).
    NonNegative,
    Healthcheck,
}

impl Shape {
    fn of(key: &str) -> Option<Self> {
        Some(match key {
            "User" | "StopSignal" => Self::String,
            "WorkingDir" => Self::WorkDir,
            "Entrypoint" | "Cmd" | "OnBuild" | "Shell" => Self::Strings,
            "Env" => Self::EnvStrings,
            "ExposedPorts" => Self::Ports,
            "Volumes" => Self::Paths,
            "Labels" => Self::StringMap,
            "ArgsEscaped" => Self::Bool,
            "Memory" | "MemorySwap" | "CpuShares" => Self::Integer,
            "Healthcheck" => Self::Healthcheck,
            _ => return None,
        })
    }

    fn expected(self) -> &'static str {
        match self {
            Self::String | Self::WorkDir => "a string",
            Self::Strings | Self::EnvStrings => "an array of strings",
            Self::Ports | Self::Paths => "a table of empty tables",
            Self::StringMap => "a table of strings",
            Self::Bool => "a boolean",
            Self::Integer => "an integer",
            Self::NonNegative => "a non-negative integer",
            Self::Healthcheck => "a table",
        }
    }

    fn hint(self, key: &str) -> Option<String> {
        let example = match self {
            Self::String => format!("{key} = \"…\""),
            Self::WorkDir => format!("{key} = \"/app\""),
            Self::Strings => format!("{key} = [\"/bin/app\", \"--flag\"]"),
            Self::EnvStrings => format!("{key} = [\"NAME=value\"]"),
            Self::Ports => format!("{key} = {{ \"8080/tcp\" = {{}} }}"),
            Self::Paths => format!("{key} = {{ \"/data\" = {{}} }}"),
            Self::StringMap => format!("{key} = {{ \"org.example.key\" = \"value\" }}"),
            Self::Bool => format!("{key} = true"),
            Self::Integer | Self::NonNegative => format!("{key} = 0"),
            Self::Healthcheck => format!("{key} = {{ Test = [\"CMD\", \"/bin/check\"] }}"),
        };
        Some(format!("write e.g. `{example}`"))
    }
}

/// A problem at a span.
struct Bad {
    span: Range<usize>,
    message: String,
    hint: Option<String>,
}

impl LoadedManifest {
    /// Checks every `[config]` key against the OCI config's types; an
    /// unknown key is an error with the nearest key, like every other
    /// unknown key of the manifest.
    pub(super) fn check_config(&self) -> Result<(), Error> {
        let Ok(doc) = DeTable::parse(&self.text) else {
            // The typed parse succeeded, so this cannot happen; nothing to add.
            return Ok(());
        };
        let mut tables: Vec<(&str, &DeTable<'_>)> = Vec::new();
        for (key, value) in doc.get_ref() {
            match (&**key.get_ref(), value.get_ref()) {
                ("config", DeValue::Table(config)) => tables.push(("config", config)),
                // Each `[[platforms]]` entry's `[platforms.config]`.
                ("platforms", DeValue::Array(entries)) => {
                    for entry in entries {
                        if let DeValue::Table(entry) = entry.get_ref() {
                            if let Some((_, v)) =
                                entry.iter().find(|(k, _)| k.get_ref() == "config")
                            {
                                if let DeValue::Table(config) = v.get_ref() {
                                    tables.push(("platforms.config", config));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let mut first: Option<Bad> = None;
        for (table, config) in tables {
            for (key, value) in config {
                let name: &str = key.get_ref();
                let bad = match Shape::of(name) {
                    None => Some(Bad {
                        span: key.span(),
                        message: format!("unknown key `{name}` in `[{table}]`"),
                        hint: key_hint(name, &CONFIG_KEYS),
                    }),
                    Some(shape) => check(&format!("{table}.{name}"), name, shape, value),
                };
                if let Some(bad) = bad {
                    if first.as_ref().is_none_or(|f| bad.span.start < f.span.start) {
                        first = Some(bad);
                    }
                }
            }
        }
        match first {
            Some(bad) => Err(self.error_at(bad.span, bad.message, bad.hint)),
            None => Ok(()),
        }
    }
}

fn wrong(dotted: &str, key: &str, shape: Shape, value: &Spanned<DeValue<'_>>) -> Option<Bad> {
    Some(Bad {
        span: value.span(),
        message: format!(
            "wrong type for `{dotted}`: expected {}, found {}",
            shape.expected(),
            kind(value.get_ref())
        ),
        hint: shape.hint(key),
    })
}

/// The first problem of `value` (the value of `key`, at `dotted`).
fn check(dotted: &str, key: &str, shape: Shape, value: &Spanned<DeValue<'_>>) -> Option<Bad> {
    match (shape, value.get_ref()) {
        (Shape::String, DeValue::String(s)) => nul_problem(dotted, s).map(|message| Bad {
            span: value.span(),
            message,
            hint: None,
        }),
        (Shape::WorkDir, DeValue::String(s)) => nul_problem(dotted, s)
            .or_else(|| {
                (!s.is_empty() && !s.starts_with('/'))
                    .then(|| format!("invalid value for `{dotted}`: `{s}` is not an absolute path"))
            })
            .map(|message| Bad {
                span: value.span(),
                message,
                hint: shape.hint(key),
            }),
        (Shape::Bool, DeValue::Boolean(_)) | (Shape::Integer, DeValue::Integer(_)) => None,
        (Shape::NonNegative, DeValue::Integer(i)) => {
            if i.as_str().trim_start().starts_with('-') {
                Some(Bad {
                    span: value.span(),
                    message: format!("invalid value for `{dotted}`: it cannot be negative"),
                    hint: shape.hint(key),
                })
            } else {
                None
            }
        }
        (Shape::Strings | Shape::EnvStrings, DeValue::Array(items)) => {
            items.into_iter().find_map(|item| match item.get_ref() {
                DeValue::String(s) => {
                    let s: &str = s;
                    if let Some(message) = nul_problem(dotted, s) {
                        return Some(Bad {
                            span: item.span(),
                            message,
                            hint: None,
                        });
                    }
                    let bad_env = matches!(shape, Shape::EnvStrings)
                        && s.split_once('=').is_none_or(|(name, _)| name.is_empty());
                    bad_env.then(|| Bad {
                        span: item.span(),
                        message: format!("invalid value for `{dotted}`: `{s}` is not `NAME=value`"),
                        hint: shape.hint(key),
                    })
                }
                other => Some(Bad {
                    span: item.span(),
                    message: format!(
                        "wrong type for an element of `{dotted}`: expected a string, found {}",
                        kind(other)
                    ),
                    hint: shape.hint(key),
                }),
            })
        }
        (Shape::Ports, DeValue::Table(table)) => {
            empty_tables(dotted, key, shape, table, port_problem)
        }
        (Shape::Paths, DeValue::Table(table)) => {
            empty_tables(dotted, key, shape, table, path_problem)
        }
        (Shape::StringMap, DeValue::Table(table)) => {
            table.iter().find_map(|(entry, v)| match v.get_ref() {
                DeValue::String(_) => None,
                other => Some(Bad {
                    span: v.span(),
                    message: format!(
                        "wrong type for `{dotted}.\"{}\"`: expected a string, found {}",
                        &**entry.get_ref(),
                        kind(other)
                    ),
                    hint: shape.hint(key),
                }),
            })
        }
        (Shape::Healthcheck, DeValue::Table(table)) => table.iter().find_map(|(entry, v)| {
            let name: &str = entry.get_ref();
            let inner = match name {
                "Test" => Shape::Strings,
                n if HEALTHCHECK_KEYS.contains(&n) => Shape::NonNegative,
                _ => {
                    return Some(Bad {
                        span: entry.span(),
                        message: format!("unknown key `{name}` in `config.Healthcheck`"),
                        hint: key_hint(name, &HEALTHCHECK_KEYS),
                    })
                }
            };
            check(&format!("{dotted}.{name}"), name, inner, v)
        }),
        // Every shape by name, so a new one must say what it accepts above.
        (
            Shape::String
            | Shape::WorkDir
            | Shape::Strings
            | Shape::EnvStrings
            | Shape::Ports
            | Shape::Paths
            | Shape::StringMap
            | Shape::Bool
            | Shape::Integer
            | Shape::NonNegative
            | Shape::Healthcheck,
            _,
        ) => wrong(dotted, key, shape, value),
    }
}

/// The first problem of a table of empty tables (`ExposedPorts`,
/// `Volumes`) whose keys `key_problem` checks.
fn empty_tables(
    dotted: &str,
    key: &str,
    shape: Shape,
    table: &DeTable<'_>,
    key_problem: fn(&str) -> Option<String>,
) -> Option<Bad> {
    table.iter().find_map(|(entry, v)| {
        let name: &str = entry.get_ref();
        if let Some(problem) = key_problem(name) {
            return Some(Bad {
                span: entry.span(),
                message: format!("invalid key in `{dotted}`: {problem}"),
                hint: shape.hint(key),
            });
        }
        match v.get_ref() {
            DeValue::Table(t) if t.is_empty() => None,
            other => Some(Bad {
                span: v.span(),
                message: format!(
                    "wrong type for `{dotted}.\"{name}\"`: expected an empty table `{{}}`, found {}",
                    kind(other)
                ),
                hint: shape.hint(key),
            }),
        }
    })
}

/// Why `s`, a string of `dotted`, cannot reach a process, if it cannot: a
/// NUL byte ends a C string, so runc refuses to start a container whose
/// argument, environment, user or directory holds one.
fn nul_problem(dotted: &str, s: &str) -> Option<String> {
    s.contains('\0').then(|| {
        format!(
            "invalid value for `{dotted}`: `{}` holds a NUL byte, which no process argument, \
             environment variable, user or path can",
            s.escape_debug()
        )
    })
}

/// Why `name` is not a `Volumes` key, if it is not.
fn path_problem(name: &str) -> Option<String> {
    (!name.starts_with('/')).then(|| format!("`{name}` is not an absolute path"))
}

/// Why `name` is not an `ExposedPorts` key (`PORT`, `PORT/tcp`, `/udp`,
/// `/sctp`, as docker parses it), if it is not.
fn port_problem(name: &str) -> Option<String> {
    let (ports, proto) = name.split_once('/').unwrap_or((name, "tcp"));
    let number = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u16>().ok())
            .flatten()
            .filter(|&p| p > 0)
    };
    // A single port or a range `8000-8010`.
    let (low, high) = ports.split_once('-').unwrap_or((ports, ports));
    let port_ok = matches!((number(low), number(high)), (Some(l), Some(h)) if l <= h);
    if !port_ok {
        return Some(format!(
            "`{name}` is not `PORT/PROTOCOL` with a port from 1 to 65535"
        ));
    }
    if !["tcp", "udp", "sctp"].contains(&proto) {
        return Some(format!("`{name}`: the protocol is `tcp`, `udp` or `sctp`"));
    }
    None
}
