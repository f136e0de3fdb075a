//! `[[users]]` and `[[groups]]` into the customisation layer: `/etc/passwd`,
//! `/etc/group`, `/etc/shadow` (every password locked), `/etc/nsswitch.conf`
//! and the home directories, owned by their users. What nixpkgs' `fakeNss`
//! and `shadowSetup` give, from the manifest's checked accounts.

use crate::layer::customisation::{CustomisationTree, FileData, OnCollision};
use crate::layer::Owner;
use crate::manifest::Accounts;

use super::Error;

/// `hosts: files dns` lets `/etc/hosts` and DNS resolve names (glibc's
/// built-in default without the file is `dns files`, and musl ignores it).
const NSSWITCH: &str =
    "passwd:    files\ngroup:     files\nshadow:    files\nhosts:     files dns\n";

/// The files' text, in the order their lines are written.
fn files(accounts: &Accounts) -> [(&'static str, String, u32); 4] {
    let mut passwd = String::new();
    let mut shadow = String::new();
    for u in &accounts.users {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            u.name, u.uid, u.gid, u.description, u.home, u.shell
        ));
        // `!`: locked, no password logs in; day 1 keeps it deterministic.
        shadow.push_str(&format!("{}:!:1::::::\n", u.name));
    }
    let mut group = String::new();
    for g in &accounts.groups {
        group.push_str(&format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")));
    }
    [
        ("/etc/passwd", passwd, 0o644),
        ("/etc/group", group, 0o644),
        // Readable by root only, as shadow-utils leaves it without a
        // `shadow` group.
        ("/etc/shadow", shadow, 0o600),
        ("/etc/nsswitch.conf", NSSWITCH.to_owned(), 0o644),
    ]
}

/// Adds the account files and home directories to `tree`. A path that
/// `contents` or `files` already gave follows `on_collision`: an error, or
/// the first (theirs) is kept.
pub(super) fn add_accounts(
    tree: &mut CustomisationTree,
    accounts: &Accounts,
    on_collision: OnCollision,
) -> Result<(), Error> {
    let collide = |tree: &CustomisationTree, path: &str, want_dir: bool| -> Result<bool, Error> {
        match tree.is_dir(path) {
            None => Ok(false),
            Some(true) if want_dir => Ok(false),
            Some(_) => match on_collision {
                OnCollision::First => Ok(true),
                _ => Err(Error::AccountCollision {
                    path: path.to_owned(),
                }),
            },
        }
    };
    let root = Owner::default();
    for (path, text, mode) in files(accounts) {
        if !collide(tree, path, false)? {
            tree.add_file(path, FileData::Inline(text.into_bytes()), mode, &root)?;
        }
    }
    for u in accounts.users.iter().filter(|u| u.create_home) {
        if !collide(tree, &u.home, true)? {
            let owner = Owner {
                uid: u64::from(u.uid),
                gid: u64::from(u.gid),
                uname: u.name.clone(),
                gname: accounts
                    .groups
                    .iter()
                    .find(|g| g.gid == u.gid)
                    .map_or_else(String::new, |g| g.name.clone()),
            };
            // A home that `dirs` or `contents` already made a directory
            // (`/tmp` at 1777, `/srv`) keeps its mode and only takes the
            // user as owner: 0700 would silently lock everyone else out.
            let mode = tree.dir_mode(&u.home).unwrap_or(0o700);
            tree.add_dir(&u.home, mode, &owner)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{GroupAccount, UserAccount};
    use crate::nix::StoreDir;

    fn user(name: &str, uid: u32, home: &str) -> UserAccount {
        UserAccount {
            name: name.into(),
            uid,
            gid: uid,
            description: String::new(),
            home: home.into(),
            shell: "/bin/sh".into(),
            create_home: true,
        }
    }

    #[test]
    fn a_home_that_is_already_a_directory_keeps_its_mode() {
        let mut tree = CustomisationTree::new(StoreDir::default(), Owner::default());
        tree.add_dir("/tmp", 0o1777, &Owner::default()).unwrap();
        let accounts = Accounts {
            users: vec![user("app", 1000, "/tmp"), user("web", 1001, "/home/web")],
            groups: Vec::new(),
        };
        add_accounts(&mut tree, &accounts, OnCollision::Error).unwrap();
        assert_eq!(
            tree.dir_mode("/tmp"),
            Some(0o1777),
            "/tmp stays world-writable"
        );
        assert_eq!(
            tree.dir_mode("/home/web"),
            Some(0o700),
            "a new home is the user's only"
        );
    }

    #[test]
    fn lines() {
        let accounts = Accounts {
            users: vec![UserAccount {
                name: "app".into(),
                uid: 1000,
                gid: 1000,
                description: String::new(),
                home: "/home/app".into(),
                shell: "/bin/sh".into(),
                create_home: true,
            }],
            groups: vec![GroupAccount {
                name: "wheel".into(),
                gid: 10,
                members: vec!["app".into(), "root".into()],
            }],
        };
        let [passwd, group, shadow, nss] = files(&accounts);
        assert_eq!(passwd.1, "app:x:1000:1000::/home/app:/bin/sh\n");
        assert_eq!(group.1, "wheel:x:10:app,root\n");
        assert_eq!(shadow.1, "app:!:1::::::\n");
        assert!(nss.1.contains("hosts:     files dns\n"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Accounts with any names and fields (`:`, newlines, `,`, `..`,
        /// NUL among them): refused at their line, or files whose every
        /// line has its fields and no more, and a layer tree without panic.
        #[test]
        fn any_account_fields_are_refused_or_stay_in_their_fields(
            users in proptest::collection::vec((
                "([a-z0-9_.-]{1,8}|(?s:.){0,6})",
                0..70_000_u32,
                proptest::option::of("(/[a-z:,.\n\x00]{0,5}){0,3}|(?s:.){0,6}"),
                proptest::option::of("(/[a-z:,.\n\x00]{0,5}){0,3}|(?s:.){0,6}"),
                proptest::option::of("(?s:.){0,8}"),
                proptest::collection::vec("([a-z]{1,4}|(?s:.){0,4})", 0..2),
            ), 1..4),
            groups in proptest::collection::vec((
                "([a-z0-9_.-]{1,8}|(?s:.){0,6})",
                0..70_000_u32,
                proptest::collection::vec("([a-z]{1,4}|(?s:.){0,4})", 0..3),
            ), 0..3),
        ) {
            let q = |v: &str| toml::Value::String(v.to_owned()).to_string();
            let list = |v: &[String]| v.iter().map(|x| q(x)).collect::<Vec<_>>().join(", ");
            let mut text = "name = \"x\"\n[closure]\nroots = []\n".to_owned();
            for (name, uid, home, shell, description, groups) in &users {
                text.push_str(&format!("[[users]]\nname = {}\nuid = {uid}\ngroups = [{}]\n", q(name), list(groups)));
                for (key, value) in [("home", home), ("shell", shell), ("description", description)] {
                    if let Some(v) = value {
                        text.push_str(&format!("{key} = {}\n", q(v)));
                    }
                }
            }
            for (name, gid, members) in &groups {
                text.push_str(&format!("[[groups]]\nname = {}\ngid = {gid}\nmembers = [{}]\n", q(name), list(members)));
            }
            let loaded = crate::manifest::LoadedManifest::from_text(
                std::path::PathBuf::from("/m/image.toml"),
                text,
            );
            let Ok(Some(accounts)) = loaded.map(|m| m.accounts()) .and_then(|a| a) else {
                return Ok(());
            };
            let [passwd, group, shadow, _] = files(&accounts);
            for ((_, text, _), fields, count) in [
                (&passwd, 7, accounts.users.len()),
                (&group, 4, accounts.groups.len()),
                (&shadow, 9, accounts.users.len()),
            ] {
                proptest::prop_assert_eq!(text.lines().count(), count, "{}", text);
                for line in text.lines() {
                    proptest::prop_assert_eq!(line.split(':').count(), fields, "{}", line);
                    proptest::prop_assert!(!line.contains('\0'), "{}", line);
                }
            }
            let mut tree = CustomisationTree::new(StoreDir::default(), Owner::default());
            let _ = add_accounts(&mut tree, &accounts, OnCollision::Error);
        }
    }
}
