//! `[[platforms]]`: a manifest describing several platforms, each with its
//! own `architecture`/`variant` and closure (roots and source, and
//! optionally a store root). The top-level closure is the default
//! platform; each entry becomes a manifest of its own
//! ([`LoadedManifest::platform_manifests`]) that resolves like any other,
//! so its errors point at its own lines. An entry's `[platforms.config]`
//! keys replace the top-level `[config]` keys of the same name (each value
//! whole: a platform's `Env` is its whole `Env`); keys it does not name
//! are inherited.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{ClosureSection, Error, LoadedManifest, StoreSection};

/// One `[[platforms]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSection {
    /// GOARCH spelling.
    pub architecture: Spanned<String>,
    /// CPU variant (arm).
    pub variant: Option<Spanned<String>>,
    /// Its closure: roots, source, exclusions.
    pub closure: ClosureSection,
    /// Where its store is read from; `dir` defaults to the top-level one.
    pub store: Option<StoreSection>,
    /// `[platforms.config]`: image config keys of this platform, each
    /// replacing the top-level `[config]` key of that name whole.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// `[platforms.annotations]`: annotations of this platform's image
    /// manifest, over the top-level `[annotations]`.
    #[serde(default)]
    pub annotations: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// A platform's name as `--platform` spells it: `ARCH[/VARIANT]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlatformName {
    /// GOARCH spelling.
    pub architecture: String,
    /// CPU variant.
    pub variant: Option<String>,
}

impl PlatformName {
    /// Parses `ARCH[/VARIANT]`; `None` when either part is empty or there
    /// are more parts.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        let architecture = parts.next().filter(|a| !a.is_empty())?.to_owned();
        let variant = match parts.next() {
            None => None,
            Some("") => return None,
            Some(v) => Some(v.to_owned()),
        };
        parts.next().is_none().then_some(Self {
            architecture,
            variant,
        })
    }

    /// Parses `--platform`: `ARCH[/VARIANT]`, or as docker and podman spell
    /// it, `linux/ARCH[/VARIANT]` (every image here is for linux, so the
    /// OS only has to be that one).
    #[must_use]
    pub fn parse_option(text: &str) -> Option<Self> {
        text.strip_prefix("linux/")
            .and_then(Self::parse)
            .or_else(|| Self::parse(text))
    }

    /// Whether `self` and `other` are one platform as docker and containerd
    /// match them: `arm64` is `arm64/v8`, `arm` is `arm/v7`, `amd64/v1` is
    /// `amd64` (an index holding both of such a pair leaves a pull to pick
    /// either, and `--platform arm64` must find an `arm64/v8` entry).
    #[must_use]
    pub fn is_same_platform(&self, other: &Self) -> bool {
        use crate::oci::platform::comparable_variant;
        self.architecture == other.architecture
            && comparable_variant(&self.architecture, self.variant.as_deref())
                == comparable_variant(&other.architecture, other.variant.as_deref())
    }
}

impl std::fmt::Display for PlatformName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variant {
            Some(v) => write!(f, "{}/{v}", self.architecture),
            None => f.write_str(&self.architecture),
        }
    }
}

impl LoadedManifest {
    /// Whether the manifest describes more than the top-level platform.
    #[must_use]
    pub fn is_multi_platform(&self) -> bool {
        !self.manifest.platforms.is_empty()
    }

    /// One manifest per platform, the top-level (default) one first, each
    /// with its platform's `architecture`, `variant`, `[closure]` and
    /// `[store]` in place of the top-level ones and no `[[platforms]]`;
    /// `host` names the default platform when `architecture` is unset.
    ///
    /// # Errors
    /// When two platforms share an architecture and variant (at the later
    /// one's `architecture`), or a platform's closure source or store is
    /// invalid (at its line).
    pub fn platform_manifests(
        &self,
        host: &str,
    ) -> Result<Vec<(PlatformName, LoadedManifest)>, Error> {
        let top = &self.manifest;
        let mut default = self.clone();
        default.manifest.platforms.clear();
        let mut out = vec![(
            PlatformName {
                architecture: top
                    .architecture
                    .as_ref()
                    .map_or_else(|| host.to_owned(), |a| a.get_ref().clone()),
                variant: top.variant.as_ref().map(|v| v.get_ref().clone()),
            },
            default,
        )];
        for entry in &top.platforms {
            let name = PlatformName {
                architecture: entry.architecture.get_ref().clone(),
                variant: entry.variant.as_ref().map(|v| v.get_ref().clone()),
            };
            if PlatformName::parse(&name.to_string()).as_ref() != Some(&name) {
                return Err(self.error_at(
                    entry.architecture.span(),
                    format!("`{name}` is not a platform: `architecture` and `variant` must be non-empty and hold no `/`"),
                    None,
                ));
            }
            if let Some((same, _)) = out.iter().find(|(n, _)| n.is_same_platform(&name)) {
                let shown = if *same == name {
                    format!("platform `{name}` is described twice")
                } else {
                    format!("platform `{name}` is described twice (as `{same}`, the same platform to docker and containerd)")
                };
                return Err(self.error_at(
                    entry.architecture.span(),
                    shown,
                    Some("each `[[platforms]]` entry needs its own `architecture` or `variant`, different from the top-level one".to_owned()),
                ));
            }
            let mut one = self.clone();
            let m = &mut one.manifest;
            m.platforms.clear();
            m.architecture = Some(entry.architecture.clone());
            m.variant.clone_from(&entry.variant);
            m.closure = entry.closure.clone();
            if let Some(store) = &entry.store {
                m.store.root.clone_from(&store.root);
                if store.dir.is_some() {
                    m.store.dir.clone_from(&store.dir);
                }
            }
            // Key by key: what the platform names replaces the top-level
            // value whole (an `Env` list too), the rest is inherited.
            for (key, value) in &entry.config {
                m.config.insert(key.clone(), value.clone());
            }
            // The same, for the image manifest's annotations; the key too,
            // so an error points at the platform's line.
            for (key, value) in &entry.annotations {
                m.annotations.remove(key);
                m.annotations.insert(key.clone(), value.clone());
            }
            one.store_dir()?;
            one.closure_source()?;
            out.push((name, one));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn load(text: &str) -> Result<LoadedManifest, Error> {
        LoadedManifest::from_text(PathBuf::from("/m/image.toml"), text.to_owned())
    }

    const TOP: &str = "name = \"x\"\narchitecture = \"amd64\"\n[closure]\nroots = [\"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a\"]\n";

    #[test]
    fn each_platform_gets_its_closure_and_store() {
        let text = format!("{TOP}[[platforms]]\narchitecture = \"arm64\"\nvariant = \"v8\"\n[platforms.closure]\nroots = [\"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b\"]\nsource = {{ graph = \"arm/graph.json\" }}\n[platforms.store]\nroot = \"arm\"\n");
        let loaded = load(&text).unwrap();
        assert!(loaded.is_multi_platform());
        let all = loaded.platform_manifests("amd64").unwrap();
        let names: Vec<String> = all.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["amd64", "arm64/v8"]);
        let arm = &all[1].1.manifest;
        assert!(arm.platforms.is_empty());
        assert_eq!(
            arm.closure.roots[0].get_ref(),
            "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b"
        );
        assert_eq!(
            arm.store.root.as_ref().unwrap().get_ref(),
            &PathBuf::from("arm")
        );
        assert_eq!(all[0].1.manifest.closure.roots.len(), 1);
    }

    #[test]
    fn a_platform_config_replaces_the_keys_it_names() {
        let text = format!("{TOP}[config]\nCmd = [\"/a\"]\nEnv = [\"A=1\"]\nUser = \"1\"\n[[platforms]]\narchitecture = \"arm64\"\n[platforms.closure]\n[platforms.config]\nEnv = [\"B=2\"]\nEntrypoint = [\"/e\"]\n");
        let all = load(&text).unwrap().platform_manifests("amd64").unwrap();
        let (top, arm) = (&all[0].1.manifest.config, &all[1].1.manifest.config);
        assert_eq!(top["Env"], serde_json::json!(["A=1"]));
        assert!(!top.contains_key("Entrypoint"));
        assert_eq!(arm["Env"], serde_json::json!(["B=2"]));
        assert_eq!(arm["Entrypoint"], serde_json::json!(["/e"]));
        assert_eq!(arm["Cmd"], serde_json::json!(["/a"]));
        assert_eq!(arm["User"], "1");
    }

    #[test]
    fn a_platform_described_twice_is_an_error_at_its_line() {
        let text = format!(
            "{TOP}[[platforms]]\narchitecture = \"amd64\"\n[platforms.closure]\nroots = []\n"
        );
        let err = load(&text)
            .unwrap()
            .platform_manifests("amd64")
            .unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("/m/image.toml:6:"), "{shown}");
        assert!(
            shown.contains("platform `amd64` is described twice"),
            "{shown}"
        );
    }

    #[test]
    fn a_platform_spelled_two_ways_is_described_twice() {
        // `arm64` and `arm64/v8` (and `arm`, `arm/v7`) are one platform to
        // a pull: an index with both leaves the runtime to pick either.
        for (first, second) in [
            (
                "architecture = \"arm64\"",
                "architecture = \"arm64\"\nvariant = \"v8\"",
            ),
            (
                "architecture = \"arm\"\nvariant = \"v7\"",
                "architecture = \"arm\"",
            ),
            (
                "architecture = \"amd64\"\nvariant = \"v1\"",
                "architecture = \"arm\"\nvariant = \"v6\"",
            ),
        ] {
            let text = format!(
                "{TOP}[[platforms]]\n{first}\n[platforms.closure]\nroots = []\n[[platforms]]\n{second}\n[platforms.closure]\nroots = []\n"
            );
            let result = load(&text).unwrap().platform_manifests("amd64");
            if first.contains("amd64") {
                let err = result.expect_err("amd64/v1 is amd64").to_string();
                assert!(
                    err.contains("platform `amd64/v1` is described twice (as `amd64`"),
                    "{err}"
                );
                continue;
            }
            let err = result.expect_err("described twice").to_string();
            assert!(err.contains("is described twice (as `"), "{err}");
        }
        let arm64 = PlatformName::parse("arm64").unwrap();
        assert!(arm64.is_same_platform(&PlatformName::parse("arm64/v8").unwrap()));
        assert!(!arm64.is_same_platform(&PlatformName::parse("arm64/v9").unwrap()));
        assert!(!arm64.is_same_platform(&PlatformName::parse("arm/v8").unwrap()));
    }

    #[test]
    fn a_platform_without_closure_or_with_unknown_keys_is_refused() {
        let text = format!("{TOP}[[platforms]]\narchitecture = \"arm64\"\n");
        assert!(load(&text).unwrap_err().to_string().contains("closure"));
        let text = format!(
            "{TOP}[[platforms]]\narchitecture = \"arm64\"\narch = 1\n[platforms.closure]\n"
        );
        assert!(load(&text).unwrap_err().to_string().contains("arch"));
    }

    #[test]
    fn a_bad_platform_source_points_at_its_line() {
        let text = format!("{TOP}[[platforms]]\narchitecture = \"arm64\"\n[platforms.closure]\nsource = {{ nope = \"x\" }}\n");
        let err = load(&text)
            .unwrap()
            .platform_manifests("amd64")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/m/image.toml:8:"), "{err}");
    }

    #[test]
    fn platform_names_parse() {
        assert_eq!(
            PlatformName::parse("arm64/v8").unwrap().to_string(),
            "arm64/v8"
        );
        assert_eq!(PlatformName::parse("amd64").unwrap().variant, None);
        for bad in ["", "/v8", "arm64/", "a/b/c"] {
            assert!(PlatformName::parse(bad).is_none(), "{bad}");
        }
        // `--platform` also takes docker's `linux/` prefix.
        let arm = PlatformName::parse_option("linux/arm/v7").unwrap();
        assert_eq!(
            (arm.architecture.as_str(), arm.variant.as_deref()),
            ("arm", Some("v7"))
        );
        assert_eq!(
            PlatformName::parse_option("linux/arm64")
                .unwrap()
                .to_string(),
            "arm64"
        );
        assert_eq!(
            PlatformName::parse_option("arm64/v8").unwrap().to_string(),
            "arm64/v8"
        );
        for bad in ["linux/", "linux/a/b/c"] {
            assert!(PlatformName::parse_option(bad).is_none(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn platform_names_never_panic_and_round_trip(text in "[a-z0-9/]{0,12}") {
            if let Some(name) = PlatformName::parse(&text) {
                proptest::prop_assert_eq!(name.to_string(), text);
            }
        }

        #[test]
        fn any_platforms_table_gives_a_manifest_or_an_error(
            arch in "[ -~]{0,8}",
            variant in proptest::option::of("[ -~]{0,6}"),
            root in "[ -~]{0,10}",
            key in proptest::prop_oneof![
                proptest::strategy::Just("Entrypoint".to_owned()),
                proptest::strategy::Just("Env".to_owned()),
                "[ -~]{0,8}",
            ],
        ) {
            let text = format!(
                "{TOP}[[platforms]]\narchitecture = {}\n{}[platforms.closure]\nroots = [{}]\n[platforms.config]\n{} = [{}]\n[platforms.annotations]\n{} = {}\n",
                toml::Value::String(arch),
                variant.map(|v| format!("variant = {}\n", toml::Value::String(v))).unwrap_or_default(),
                toml::Value::String(root.clone()),
                toml::Value::String(key.clone()),
                toml::Value::String(root.clone()),
                toml::Value::String(key),
                toml::Value::String(root),
            );
            if let Ok(loaded) = load(&text) {
                let _ = loaded.platform_manifests("amd64");
            }
        }
    }
}
