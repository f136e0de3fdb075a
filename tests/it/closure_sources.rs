//! Closure sources against the real Nix tools: the `golden` fixture's
//! closure, exported in every format by `nix-store`, `nix path-info` and
//! an exportReferencesGraph build, must read back as one graph.

use std::path::{Path, PathBuf};

use nixlayer::closure::{
    read_closure, ClosureGraph, Error, NixStoreError, PathInfo, Source, StoreLocation,
};
use nixlayer::nix::{StoreDir, StorePath};

use crate::util;

fn live_store() -> StoreLocation {
    StoreLocation {
        dir: StoreDir::default(),
        root: PathBuf::from("/"),
    }
}

fn store_path(path: &Path) -> StorePath {
    StorePath::parse(
        &StoreDir::default(),
        path.to_str().expect("UTF-8 store path"),
    )
    .expect("a store path")
}

/// The golden closure in the four file formats, written by the real tools.
struct Exports {
    _dir: tempfile::TempDir,
    root: StorePath,
    registration: PathBuf,
    graph: PathBuf,
    path_info: PathBuf,
    dot: PathBuf,
}

fn export_golden() -> Option<Exports> {
    let root_path = util::nix_fixture("golden")?;
    let graph_build = util::nix_fixture("golden-graph")?;
    let root = root_path.to_str().expect("UTF-8 store path");
    let dir = util::temp_dir();

    let requisites = String::from_utf8(util::nix("nix-store", &["-qR", root])).unwrap();
    let mut dump_args = vec!["--dump-db"];
    dump_args.extend(requisites.lines());
    let registration = dir.path().join("registration");
    std::fs::write(&registration, util::nix("nix-store", &dump_args)).unwrap();

    let dot = dir.path().join("closure.dot");
    std::fs::write(&dot, util::nix("nix-store", &["--query", "--graph", root])).unwrap();

    let path_info = dir.path().join("path-info.json");
    let info = util::nix("nix", &["path-info", "--json", "--recursive", root]);
    std::fs::write(&path_info, info).unwrap();

    // The build copied its whole `.attrs.json`; the source reads the list
    // exportReferencesGraph put under `graph`, as nixpkgs does. Pretty
    // printing spreads it over lines, as a person editing it would.
    let attrs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&graph_build).unwrap()).unwrap();
    let graph = dir.path().join("graph.json");
    std::fs::write(&graph, serde_json::to_vec_pretty(&attrs["graph"]).unwrap()).unwrap();

    Some(Exports {
        root: store_path(&root_path),
        _dir: dir,
        registration,
        graph,
        path_info,
        dot,
    })
}

fn without_self_references(graph: &ClosureGraph) -> Vec<PathInfo> {
    graph
        .paths()
        .iter()
        .map(|p| PathInfo {
            references: p
                .references
                .iter()
                .filter(|r| **r != p.path)
                .cloned()
                .collect(),
            nar_hash: None,
            ..p.clone()
        })
        .collect()
}

fn names(graph: &ClosureGraph) -> Vec<&str> {
    graph.paths().iter().map(|p| p.path.name()).collect()
}

// The golden closure (fixtures/golden/tar/store.nix); ⟲ marks a self-reference.
//
//   golden-all ──▶ golden-symlink ─────────┐
//       │ └──────▶ golden-single-file.conf ─┤
//       └────────────────────────────────▶ golden-app-0.1 ──▶ golden-zlib-1.3 ⟲
//                                              └──────────────▶ golden-libc-2.40 ⟲ ◀── (zlib)
#[test]
fn every_source_gives_the_same_graph() {
    let Some(x) = export_golden() else { return };
    let store = live_store();
    let roots = std::slice::from_ref(&x.root);
    let read = |source: Source| {
        read_closure(&source, &store, roots).unwrap_or_else(|e| panic!("{source:?}: {e}"))
    };

    let registration = read(Source::Registration(x.registration.clone()));
    assert_eq!(
        names(&registration),
        [
            "golden-zlib-1.3",
            "golden-libc-2.40",
            "golden-symlink",
            "golden-all",
            "golden-single-file.conf",
            "golden-app-0.1",
        ]
    );
    let libc = registration.paths()[1].clone();
    assert_eq!(
        libc.references,
        std::slice::from_ref(&libc.path),
        "libc refers to itself"
    );
    assert!(registration.paths().iter().all(|p| p.nar_hash.is_some()));

    // Hashes, sizes and references, all equal.
    assert_eq!(
        read(Source::Graph(x.graph.clone())),
        registration,
        "graph JSON"
    );
    assert_eq!(
        read(Source::PathInfo(x.path_info.clone())),
        registration,
        "path-info"
    );
    assert_eq!(read(Source::NixStore), registration, "nix-store");

    // DOT has no hashes, and Nix leaves self-references out of it, so it
    // is compared modulo both; its sizes come from disk and must match.
    let dot = read(Source::Dot(x.dot.clone()));
    assert!(dot.paths().iter().all(|p| p.nar_hash.is_none()));
    assert!(dot.get(libc.path.as_str()).unwrap().references.is_empty());
    assert_eq!(dot.paths(), without_self_references(&registration), "DOT");
}

#[test]
fn dot_nar_sizes_equal_the_stores() {
    let Some(x) = export_golden() else { return };
    let dot = read_closure(&Source::Dot(x.dot), &live_store(), &[]).unwrap();
    let registration =
        read_closure(&Source::Registration(x.registration), &live_store(), &[]).unwrap();
    assert_eq!(dot.len(), registration.len());
    for (computed, recorded) in dot.paths().iter().zip(registration.paths()) {
        assert_eq!(computed.path, recorded.path);
        assert_eq!(
            computed.nar_size, recorded.nar_size,
            "NAR size of `{}` computed from disk",
            computed.path
        );
    }
}

#[test]
fn file_sources_without_roots_give_the_whole_file_and_with_roots_their_closure() {
    let Some(x) = export_golden() else { return };
    let store = live_store();
    let sources = [
        Source::Registration(x.registration),
        Source::Graph(x.graph),
        Source::PathInfo(x.path_info),
        Source::Dot(x.dot),
    ];
    for source in &sources {
        let whole = read_closure(source, &store, &[]).unwrap();
        assert_eq!(whole.len(), 6, "{source:?}");
        assert_eq!(
            whole,
            read_closure(source, &store, std::slice::from_ref(&x.root)).unwrap()
        );

        let app = whole
            .paths()
            .iter()
            .find(|p| p.path.name() == "golden-app-0.1")
            .unwrap()
            .path
            .clone();
        let sub = read_closure(source, &store, &[app]).unwrap();
        assert_eq!(
            names(&sub),
            ["golden-zlib-1.3", "golden-libc-2.40", "golden-app-0.1"],
            "{source:?}"
        );
    }
}

#[test]
fn nix_store_reports_a_root_that_is_not_valid() {
    if !util::require_tool("nix-store") {
        return;
    }
    let absent = StorePath::parse(
        &StoreDir::default(),
        "/nix/store/00000000000000000000000000000000-not-built",
    )
    .unwrap();
    let err = read_closure(&Source::NixStore, &live_store(), &[absent]).unwrap_err();
    let Error::NixStore { source, .. } = &err else {
        panic!("expected Error::NixStore, got {err:?}")
    };
    let cause = source.downcast_ref::<NixStoreError>();
    assert!(
        matches!(cause, Some(NixStoreError::InvalidRoots(paths)) if paths[0].ends_with("-not-built")),
        "{err:?}"
    );
}

#[test]
fn errors_name_the_file() {
    let dir = util::temp_dir();
    let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
    let b = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";
    let hash = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    let dangling = util::write(dir.path(), "reg", &format!("{a}\n{hash}\n8\n\n1\n{b}\n"));
    let err = read_closure(&Source::Registration(dangling), &live_store(), &[]).unwrap_err();
    assert!(matches!(err, Error::DanglingReference { .. }), "{err:?}");
    assert!(err.to_string().contains("/reg`"), "{err}");

    let ok = util::write(dir.path(), "ok", &format!("{a}\n{hash}\n8\n\n0\n"));
    let root = StorePath::parse(&StoreDir::default(), b).unwrap();
    let err = read_closure(&Source::Registration(ok), &live_store(), &[root]).unwrap_err();
    assert!(matches!(err, Error::MissingRoot { .. }), "{err:?}");
    assert!(err.to_string().contains("/ok`"), "{err}");

    let missing = dir.path().join("absent.dot");
    let err = read_closure(&Source::Dot(missing.clone()), &live_store(), &[]).unwrap_err();
    assert!(
        matches!(err, Error::Io { ref path, .. } if *path == missing),
        "{err:?}"
    );
}

/// A chroot store (`store.root` not `/`): `nix-store` gets
/// `--store local?root=…`, DOT sizes are read under the root.
#[test]
fn a_chroot_store_gives_the_same_graph() {
    let Some(x) = export_golden() else { return };
    let chroot = util::temp_dir();
    let uri = format!("local?root={}", chroot.path().display());
    util::nix(
        "nix",
        &["copy", "--no-check-sigs", "--to", &uri, x.root.as_str()],
    );
    let store = StoreLocation {
        dir: StoreDir::default(),
        root: chroot.path().to_owned(),
    };
    let roots = std::slice::from_ref(&x.root);
    let live = read_closure(&Source::Registration(x.registration), &live_store(), roots).unwrap();
    let from_chroot = read_closure(&Source::NixStore, &store, roots).unwrap();
    assert_eq!(from_chroot, live);

    // Sizes computed from the chroot's copies, not from /nix/store.
    let dot = read_closure(&Source::Dot(x.dot), &store, roots).unwrap();
    assert_eq!(dot.paths(), without_self_references(&live));
    // A root that holds no store: refused before Nix creates a database there.
    let moved = StoreLocation {
        dir: StoreDir::default(),
        root: chroot.path().join("elsewhere"),
    };
    let err = read_closure(&Source::NixStore, &moved, roots).unwrap_err();
    assert!(
        matches!(&err, Error::NixStore { source, .. }
            if matches!(source.downcast_ref(), Some(NixStoreError::NoDatabase(_)))),
        "{err:?}"
    );

    // Store paths are read-only; make them removable for the temp dir's cleanup.
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(chroot.path())
        .status();
}
