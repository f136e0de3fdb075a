//! The documents' content and golden digests.

use super::*;
use crate::closure::PathInfo;
use crate::nix::StoreDir;

fn path(base: &str) -> StorePath {
    StorePath::from_base_name(&StoreDir::default(), base).unwrap()
}

const APP: &str = "0123456789abcdfghijklmnpqrsvwxyz-app-1.2";
const LIB: &str = "1123456789abcdfghijklmnpqrsvwxyz-g++_lib?=-3.0-dev";
const SRC: &str = "2123456789abcdfghijklmnpqrsvwxyz-source";

/// ```text
/// app-1.2 ─► g++_lib?=-3.0-dev ─► source
///    └──────────────────────────────┘ (and app refers to itself)
/// ```
fn closure() -> ClosureGraph {
    let info = |p: &str, refs: &[&str], byte: u8| PathInfo {
        path: path(p),
        nar_hash: Some(NarHash([byte; 32])),
        nar_size: 1000 + u64::from(byte),
        references: refs.iter().map(|r| path(r)).collect(),
    };
    ClosureGraph::new(vec![
        info(APP, &[APP, LIB, SRC], 1),
        info(LIB, &[SRC], 2),
        info(SRC, &[], 3),
    ])
    .unwrap()
}

fn image() -> SbomImage {
    SbomImage {
        name: "registry.example/app".into(),
        tag: Some("1.2".into()),
        created: "2024-05-06T07:08:09.5+02:00".into(),
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: Some("v8".into()),
        roots: vec![path(APP)],
    }
}

fn docs() -> (Value, Value) {
    let all: Vec<StorePath> = closure().paths().iter().map(|p| p.path.clone()).collect();
    let store = crate::store::StoreLocation {
        dir: StoreDir::default(),
        root: "/nonexistent".into(),
    };
    let packages = packages(&closure(), &all, &store).unwrap();
    let spdx = write_sbom(SbomFormat::SpdxJson, &image(), &packages).unwrap();
    let cdx = write_sbom(SbomFormat::CycloneDxJson, &image(), &packages).unwrap();
    (
        serde_json::from_slice(&spdx).unwrap(),
        serde_json::from_slice(&cdx).unwrap(),
    )
}

#[test]
fn spdx_has_a_package_per_path_and_the_graph() {
    let (spdx, _) = docs();
    assert_eq!(spdx["creationInfo"]["created"], "2024-05-06T05:08:09Z");
    let packages = spdx["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 4);
    assert_eq!(packages[0]["SPDXID"], "SPDXRef-Image");
    assert_eq!(packages[0]["versionInfo"], "1.2");
    let lib = &packages[2];
    assert_eq!(lib["name"], "g++_lib?=");
    assert_eq!(lib["versionInfo"], "3.0-dev");
    assert_eq!(
        lib["SPDXID"],
        "SPDXRef-Package-1123456789abcdfghijklmnpqrsvwxyz-g---lib---3.0-dev"
    );
    assert_eq!(
        lib["externalRefs"][0]["referenceLocator"],
        "pkg:nix/g%2B%2B_lib%3F%3D@3.0-dev?store_path_hash=1123456789abcdfghijklmnpqrsvwxyz"
    );
    assert_eq!(lib["checksums"][0]["checksumValue"], "02".repeat(32));
    assert!(
        packages[3].get("versionInfo").is_none(),
        "`source` has no version"
    );
    let rels: Vec<String> = spdx["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let short = |v: &Value| {
                let s = v.as_str().unwrap();
                s.strip_prefix("SPDXRef-Package-")
                    .map_or(s, |s| &s[..1])
                    .to_owned()
            };
            format!(
                "{} {} {}",
                short(&r["spdxElementId"]),
                r["relationshipType"].as_str().unwrap(),
                short(&r["relatedSpdxElement"])
            )
        })
        .collect();
    assert_eq!(
        rels,
        [
            "SPDXRef-DOCUMENT DESCRIBES SPDXRef-Image",
            "SPDXRef-Image CONTAINS 0",
            "SPDXRef-Image CONTAINS 1",
            "SPDXRef-Image CONTAINS 2",
            "SPDXRef-Image DEPENDS_ON 0",
            "0 DEPENDS_ON 1",
            "0 DEPENDS_ON 2",
            "1 DEPENDS_ON 2",
        ]
    );
    let ns = spdx["documentNamespace"].as_str().unwrap();
    assert!(ns.starts_with("urn:uuid:"), "{ns}");
}

#[test]
fn cyclonedx_has_components_and_dependencies() {
    let (_, cdx) = docs();
    assert_eq!(cdx["metadata"]["timestamp"], "2024-05-06T05:08:09Z");
    assert_eq!(cdx["metadata"]["component"]["type"], "container");
    let components = cdx["components"].as_array().unwrap();
    assert_eq!(components.len(), 3);
    assert_eq!(components[0]["name"], "app");
    assert_eq!(components[0]["version"], "1.2");
    assert_eq!(components[0]["hashes"][0]["content"], "01".repeat(32));
    let deps = cdx["dependencies"].as_array().unwrap();
    assert_eq!(deps[0]["ref"], "image");
    assert_eq!(deps[0]["dependsOn"][0], format!("/nix/store/{APP}"));
    assert_eq!(
        deps[1]["dependsOn"].as_array().unwrap().len(),
        2,
        "no self-reference"
    );
    assert_eq!(deps[3]["dependsOn"].as_array().unwrap().len(), 0);
    let serial = cdx["serialNumber"].as_str().unwrap();
    assert!(serial.starts_with("urn:uuid:"), "{serial}");
}

/// The bytes are pinned: a change to either document (a field, an order,
/// the UUID) changes every user's SBOM digests, so it must be deliberate.
/// The tool version is part of the bytes.
#[test]
fn golden_digests() {
    let all: Vec<StorePath> = closure().paths().iter().map(|p| p.path.clone()).collect();
    let store = crate::store::StoreLocation {
        dir: StoreDir::default(),
        root: "/nonexistent".into(),
    };
    let packages = packages(&closure(), &all, &store).unwrap();
    let digest = |f| crate::oci::Digest::of(&write_sbom(f, &image(), &packages).unwrap()).hex();
    assert_eq!(digest(SbomFormat::SpdxJson), SPDX_GOLDEN);
    assert_eq!(digest(SbomFormat::CycloneDxJson), CDX_GOLDEN);
}

const SPDX_GOLDEN: &str = "cf649236f78d9d1efd9e67f504413dffc72dd427a81d331a3c4a4e9b682d939e";
const CDX_GOLDEN: &str = "8616758a1f0a1d454982998f90b4139384c45620c0b33ecdc931293533328eee";

#[test]
fn excluded_paths_and_their_edges_are_left_out() {
    let some = [path(APP), path(SRC)];
    let store = crate::store::StoreLocation {
        dir: StoreDir::default(),
        root: "/nonexistent".into(),
    };
    let packages = packages(&closure(), &some, &store).unwrap();
    assert_eq!(packages.len(), 2);
    assert_eq!(packages[0].references, [path(SRC)]);
}

#[test]
fn a_bad_created_is_an_error() {
    let mut image = image();
    image.created = "yesterday".into();
    assert!(matches!(
        write_sbom(SbomFormat::SpdxJson, &image, &[]),
        Err(Error::Created { .. })
    ));
}

#[test]
fn artifact_manifests_name_their_subject() {
    let subject = crate::oci::Descriptor {
        media_type: crate::oci::MANIFEST_MEDIA_TYPE.into(),
        digest: crate::oci::Digest::of(b"m"),
        size: 1,
    };
    let m: Value = serde_json::from_slice(&artifact_manifest(
        SbomFormat::CycloneDxJson,
        b"{}\n",
        &subject,
        "1970-01-01T00:00:01Z",
    ))
    .unwrap();
    assert_eq!(m["artifactType"], "application/vnd.cyclonedx+json");
    assert_eq!(m["config"]["mediaType"], EMPTY_MEDIA_TYPE);
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(m["layers"][0]["size"], 3);
    assert_eq!(m["subject"]["digest"], subject.digest.prefixed());
}
