//! `[[users]]` and `[[groups]]` (what nixpkgs' `fakeNss` and `shadowSetup`,
//! or apko's `accounts`, give an image): checked here, each problem at its
//! line, into [`Accounts`] with every default filled in: `root` and
//! `nobody` (and their groups) unless the manifest defines them, a group
//! per user whose primary gid no group has, members from both sides.
//!
//! Kept apart from the other sections so `[closure]` and `[config]` work
//! can change without touching it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{Error, LoadedManifest};

/// `[[users]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// Login name.
    pub name: Spanned<String>,
    /// User id.
    pub uid: Spanned<u32>,
    /// Primary group id; default the group named like the user if the
    /// manifest defines one, else the uid.
    pub gid: Option<Spanned<u32>>,
    /// Home directory; default `/home/NAME` (`/root` for uid 0). Created,
    /// owned by the user, unless it is `/` or `/nonexistent`.
    pub home: Option<Spanned<String>>,
    /// Login shell; default `/bin/sh`.
    pub shell: Option<Spanned<String>>,
    /// The GECOS field; default empty.
    pub description: Option<Spanned<String>>,
    /// Supplementary groups, by name.
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
}

/// `[[groups]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Group name.
    pub name: Spanned<String>,
    /// Group id.
    pub gid: Spanned<u32>,
    /// Member user names.
    #[serde(default)]
    pub members: Vec<Spanned<String>>,
}

/// A user account, every field resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserAccount {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// GECOS field.
    pub description: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// Whether the layer gets the home directory, owned by the user.
    pub create_home: bool,
}

/// A group, every field resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAccount {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member user names, sorted, once each.
    pub members: Vec<String>,
}

/// The checked accounts, users sorted by uid then name, groups by gid then
/// name, so the files are the same whatever the manifest's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    /// `/etc/passwd` and `/etc/shadow`.
    pub users: Vec<UserAccount>,
    /// `/etc/group`.
    pub groups: Vec<GroupAccount>,
}

/// Homes that are conventionally absent, never created.
const NO_HOME: [&str; 3] = ["/", "/nonexistent", "/var/empty"];

/// Why `name` cannot be an account name, if it cannot: the files are
/// `:`-separated lines and member lists `,`-separated, and shadow-utils
/// refuses a leading `-` (it would read as an option).
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 32 {
        return Some(format!("account name `{name}` must be 1 to 32 characters"));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.starts_with('-')
        || !name.chars().all(ok_char)
        || name.chars().all(|c| c.is_ascii_digit())
    {
        return Some(format!(
            "account name `{name}` must be letters, digits, `_`, `-` or `.`, not start with `-`, and not be all digits"
        ));
    }
    None
}

/// `(uid_t)-1`: the kernel reads it as "leave unchanged", so no account
/// can have it (runc fails with `setgroups: invalid argument`).
const NO_ID: u32 = u32::MAX;

fn no_id(key: &str) -> String {
    format!("{key} {NO_ID} is (uid_t)-1, which the kernel takes as \"no change\" and no account can have")
}

/// Why a home or shell cannot go into `/etc/passwd`, if it cannot.
fn field_problem(key: &str, value: &str) -> Option<String> {
    if !value.starts_with('/') {
        return Some(format!("`{key}` `{value}` must be an absolute path"));
    }
    if value.contains([':', '\n', '\0']) || value.split('/').any(|c| c == "..") {
        return Some(format!(
            "`{key}` `{value}` cannot hold `:`, a newline, a NUL or `..`"
        ));
    }
    None
}

impl LoadedManifest {
    /// Why `home` cannot be made a directory of the layer, if it cannot:
    /// inside the store directory (only store layers fill it), or at or
    /// under one of the account files. Checked here so the error names the
    /// manifest line, not only the path.
    fn home_problem(&self, home: &str) -> Option<String> {
        let normal = format!(
            "/{}",
            home.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect::<Vec<_>>()
                .join("/")
        );
        let under = |dir: &str| {
            let dir = dir.trim_end_matches('/');
            normal == dir || normal.starts_with(&format!("{dir}/"))
        };
        let store = self.store_dir().unwrap_or(super::DEFAULT_STORE_DIR);
        if under(store) {
            return Some(format!(
                "`home` `{home}` is inside the store directory `{store}`, which only store paths fill"
            ));
        }
        [
            "/etc/passwd",
            "/etc/group",
            "/etc/shadow",
            "/etc/nsswitch.conf",
        ]
        .into_iter()
        .find(|file| under(file))
        .map(|file| format!("`home` `{home}` would replace the account file `{file}`"))
    }

    /// Whether the manifest defines any account (then the layer gets the
    /// account files and `config.User` must name an account).
    #[must_use]
    pub fn has_accounts(&self) -> bool {
        !self.manifest.users.is_empty() || !self.manifest.groups.is_empty()
    }

    /// `[[users]]` and `[[groups]]`, checked and completed; `None` when
    /// the manifest has neither (the image then has whatever account files
    /// its `contents`, `files` or base image give).
    ///
    /// # Errors
    /// At the first bad value: a bad name, a duplicate name or id, a
    /// relative home or shell, a group naming an undefined user or a user
    /// an undefined group, or a `config.User` that names no account.
    pub fn accounts(&self) -> Result<Option<Accounts>, Error> {
        if !self.has_accounts() {
            return Ok(None);
        }
        let m = &self.manifest;
        let at = |span: Range<usize>, message: String| self.error_at(span, message, None);

        // Groups first: a user's default gid looks them up.
        let mut groups: BTreeMap<String, GroupAccount> = BTreeMap::new();
        let mut gids: BTreeMap<u32, String> = BTreeMap::new();
        for g in &m.groups {
            let name = g.name.get_ref();
            if let Some(problem) = name_problem(name) {
                return Err(at(g.name.span(), problem));
            }
            if groups.contains_key(name) {
                return Err(at(
                    g.name.span(),
                    format!("group `{name}` is defined twice"),
                ));
            }
            let gid = *g.gid.get_ref();
            if gid == NO_ID {
                return Err(at(g.gid.span(), no_id("gid")));
            }
            if let Some(other) = gids.insert(gid, name.clone()) {
                return Err(at(
                    g.gid.span(),
                    format!("gid {gid} is already group `{other}`'s"),
                ));
            }
            groups.insert(
                name.clone(),
                GroupAccount {
                    name: name.clone(),
                    gid,
                    members: Vec::new(),
                },
            );
        }

        let mut users: BTreeMap<String, UserAccount> = BTreeMap::new();
        let mut uids: BTreeMap<u32, String> = BTreeMap::new();
        for u in &m.users {
            let name = u.name.get_ref();
            if let Some(problem) = name_problem(name) {
                return Err(at(u.name.span(), problem));
            }
            if users.contains_key(name) {
                return Err(at(u.name.span(), format!("user `{name}` is defined twice")));
            }
            let uid = *u.uid.get_ref();
            if uid == NO_ID {
                return Err(at(u.uid.span(), no_id("uid")));
            }
            if let Some(other) = uids.insert(uid, name.clone()) {
                return Err(at(
                    u.uid.span(),
                    format!("uid {uid} is already user `{other}`'s"),
                ));
            }
            let gid = match &u.gid {
                Some(gid) if *gid.get_ref() == NO_ID => {
                    return Err(at(gid.span(), no_id("gid")));
                }
                Some(gid) => *gid.get_ref(),
                None => groups.get(name).map_or(uid, |g| g.gid),
            };
            let home = match &u.home {
                Some(home) => {
                    if let Some(problem) = field_problem("home", home.get_ref()) {
                        return Err(at(home.span(), problem));
                    }
                    if let Some(problem) = self.home_problem(home.get_ref()) {
                        return Err(at(home.span(), problem));
                    }
                    home.get_ref().clone()
                }
                None if uid == 0 => "/root".to_owned(),
                None => format!("/home/{name}"),
            };
            let shell = match &u.shell {
                Some(shell) => {
                    if let Some(problem) = field_problem("shell", shell.get_ref()) {
                        return Err(at(shell.span(), problem));
                    }
                    shell.get_ref().clone()
                }
                None => "/bin/sh".to_owned(),
            };
            let description = match &u.description {
                Some(d) if d.get_ref().contains([':', '\n', '\0']) => {
                    return Err(at(
                        d.span(),
                        "`description` cannot hold `:`, a newline or a NUL".to_owned(),
                    ))
                }
                Some(d) => d.get_ref().clone(),
                None => String::new(),
            };
            let home_normal = home.trim_end_matches('/');
            let create_home = !NO_HOME.contains(&home.as_str())
                && !NO_HOME.contains(&home_normal)
                && !home_normal.is_empty();
            users.insert(
                name.clone(),
                UserAccount {
                    name: name.clone(),
                    uid,
                    gid,
                    description,
                    home,
                    shell,
                    create_home,
                },
            );
        }

        // Memberships, from both sides; every name must be defined.
        for g in &m.groups {
            for member in &g.members {
                if !users.contains_key(member.get_ref()) && !is_default_user(member.get_ref()) {
                    return Err(self.error_at(
                        member.span(),
                        format!(
                            "group `{}` lists `{}`, which no `[[users]]` defines",
                            g.name.get_ref(),
                            member.get_ref()
                        ),
                        Some("add a `[[users]]` entry with that name".to_owned()),
                    ));
                }
                if let Some(group) = groups.get_mut(g.name.get_ref()) {
                    group.members.push(member.get_ref().clone());
                }
            }
        }
        for u in &m.users {
            for group in &u.groups {
                let Some(g) = groups.get_mut(group.get_ref()) else {
                    return Err(self.error_at(
                        group.span(),
                        format!(
                            "user `{}` is in group `{}`, which no `[[groups]]` defines",
                            u.name.get_ref(),
                            group.get_ref()
                        ),
                        Some("add a `[[groups]]` entry with that name".to_owned()),
                    ));
                };
                g.members.push(u.name.get_ref().clone());
            }
        }

        // Defaults: root and nobody (fakeNss's), unless defined by name or id.
        let defaults = [("root", 0, "/root"), ("nobody", 65534, "/nonexistent")];
        for (name, id, home) in defaults {
            if !users.contains_key(name) && !uids.contains_key(&id) {
                uids.insert(id, name.to_owned());
                users.insert(
                    name.to_owned(),
                    UserAccount {
                        name: name.to_owned(),
                        uid: id,
                        gid: id,
                        description: String::new(),
                        home: home.to_owned(),
                        shell: if id == 0 { "/bin/sh" } else { "/bin/false" }.to_owned(),
                        create_home: false,
                    },
                );
            }
        }
        for (name, id) in [("root", 0), ("nogroup", 65534)] {
            if !groups.contains_key(name) && !gids.contains_key(&id) {
                gids.insert(id, name.to_owned());
                groups.insert(
                    name.to_owned(),
                    GroupAccount {
                        name: name.to_owned(),
                        gid: id,
                        members: Vec::new(),
                    },
                );
            }
        }
        // A user whose primary gid no group has gets a group of its own
        // name (useradd's USERGROUPS_ENAB), if that name is free.
        for user in users.values() {
            if !gids.contains_key(&user.gid) && !groups.contains_key(&user.name) {
                gids.insert(user.gid, user.name.clone());
                groups.insert(
                    user.name.clone(),
                    GroupAccount {
                        name: user.name.clone(),
                        gid: user.gid,
                        members: Vec::new(),
                    },
                );
            }
        }

        let mut accounts = Accounts {
            users: users.into_values().collect(),
            groups: groups.into_values().collect(),
        };
        accounts
            .users
            .sort_by(|a, b| (a.uid, &a.name).cmp(&(b.uid, &b.name)));
        accounts
            .groups
            .sort_by(|a, b| (a.gid, &a.name).cmp(&(b.gid, &b.name)));
        for g in &mut accounts.groups {
            let members: BTreeSet<String> = g.members.drain(..).collect();
            g.members = members.into_iter().collect();
        }
        self.check_config_user(&accounts)?;
        Ok(Some(accounts))
    }

    /// `config.User` (`user`, `uid`, `user:group`, `uid:gid`): a name must
    /// be an account's. Docker resolves names through the image's
    /// `/etc/passwd` when the container starts; checked here, a typo is an
    /// error at its line instead of a container that does not start.
    fn check_config_user(&self, accounts: &Accounts) -> Result<(), Error> {
        let Some(serde_json::Value::String(user)) = self.manifest.config.get("User") else {
            return Ok(());
        };
        let (user_part, group_part) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let span = || self.config_user_span().unwrap_or(0..0);
        if !numeric(user_part) && !accounts.users.iter().any(|u| u.name == user_part) {
            return Err(self.error_at(
                span(),
                format!("`config.User` names user `{user_part}`, which no account defines"),
                Some("add a `[[users]]` entry with that name, or give a numeric uid".to_owned()),
            ));
        }
        if let Some(group) = group_part {
            if !numeric(group) && !accounts.groups.iter().any(|g| g.name == group) {
                return Err(self.error_at(
                    span(),
                    format!("`config.User` names group `{group}`, which no account defines"),
                    Some(
                        "add a `[[groups]]` entry with that name, or give a numeric gid".to_owned(),
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where `config.User`'s value is in the text (the typed manifest keeps
    /// `[config]` without spans).
    fn config_user_span(&self) -> Option<Range<usize>> {
        let doc = DeTable::parse(&self.text).ok()?;
        let (_, config) = doc
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "config")?;
        let DeValue::Table(config) = config.get_ref() else {
            return None;
        };
        let (_, user) = config.iter().find(|(k, _)| k.get_ref() == "User")?;
        Some(user.span())
    }
}

/// The accounts every image with `[[users]]` has unless it defines them.
fn is_default_user(name: &str) -> bool {
    matches!(name, "root" | "nobody")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn load(text: &str) -> Result<LoadedManifest, Error> {
        LoadedManifest::from_text(
            PathBuf::from("/m/image.toml"),
            format!("name = \"x\"\n[closure]\nroots = []\n{text}"),
        )
    }

    #[test]
    fn defaults_and_implicit_groups() {
        let m = load(
            "[config]\nUser = \"app\"\n[[users]]\nname = \"app\"\nuid = 1000\ngroups = [\"wheel\"]\n\
             [[groups]]\nname = \"wheel\"\ngid = 10\n",
        )
        .unwrap();
        let a = m.accounts().unwrap().unwrap();
        let users: Vec<(&str, u32, u32, &str, bool)> = a
            .users
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.uid,
                    u.gid,
                    u.home.as_str(),
                    u.create_home,
                )
            })
            .collect();
        assert_eq!(
            users,
            [
                ("root", 0, 0, "/root", false),
                ("app", 1000, 1000, "/home/app", true),
                ("nobody", 65534, 65534, "/nonexistent", false),
            ]
        );
        let groups: Vec<(&str, u32, Vec<String>)> = a
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.gid, g.members.clone()))
            .collect();
        assert_eq!(
            groups,
            [
                ("root", 0, vec![]),
                ("wheel", 10, vec!["app".to_owned()]),
                ("app", 1000, vec![]),
                ("nogroup", 65534, vec![]),
            ]
        );
        assert!(load("").unwrap().accounts().unwrap().is_none());
    }

    #[test]
    fn a_defined_root_replaces_the_default() {
        let m = load("[[users]]\nname = \"root\"\nuid = 0\nshell = \"/bin/bash\"\n").unwrap();
        let a = m.accounts().unwrap().unwrap();
        assert_eq!(a.users.iter().filter(|u| u.uid == 0).count(), 1);
        assert_eq!(a.users[0].shell, "/bin/bash");
        assert!(a.users[0].create_home, "a defined root gets /root");
    }

    #[test]
    fn bad_accounts_point_at_their_line() {
        for (text, line, says) in [
            ("[[users]]\nname = \"a:b\"\nuid = 1\n", 5, "account name"),
            (
                "[[users]]\nname = \"a\"\nuid = 1\n[[users]]\nname = \"b\"\nuid = 1\n",
                9,
                "uid 1",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\n[[users]]\nname = \"a\"\nuid = 2\n",
                8,
                "twice",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\nhome = \"home/a\"\n",
                7,
                "absolute",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\nshell = \"/bin/sh:x\"\n",
                7,
                "cannot hold",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\ngroups = [\"wheel\"]\n",
                7,
                "no `[[groups]]`",
            ),
            (
                "[[groups]]\nname = \"g\"\ngid = 5\nmembers = [\"bob\"]\n",
                7,
                "no `[[users]]`",
            ),
            (
                "[config]\nUser = \"ghost\"\n[[users]]\nname = \"a\"\nuid = 1\n",
                5,
                "ghost",
            ),
            (
                "[config]\nUser = \"a:staff\"\n[[users]]\nname = \"a\"\nuid = 1\n",
                5,
                "staff",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\nhome = \"/nix/store/x\"\n",
                7,
                "inside the store directory",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\nhome = \"//etc/passwd/\"\n",
                7,
                "account file `/etc/passwd`",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 4294967295\n",
                6,
                "(uid_t)-1",
            ),
            (
                "[[users]]\nname = \"a\"\nuid = 1\ngid = 4294967295\n",
                7,
                "(uid_t)-1",
            ),
            (
                "[[groups]]\nname = \"g\"\ngid = 4294967295\n",
                6,
                "(uid_t)-1",
            ),
            ("[[users]]\nname = \"a\"\nuid = -1\n", 6, ""),
            (
                "[[users]]\nname = \"a\"\nuid = 1\nshel = \"/bin/sh\"\n",
                7,
                "shell",
            ),
        ] {
            match load(text) {
                Err(Error::Invalid {
                    line: l,
                    message,
                    hint,
                    ..
                }) => {
                    assert_eq!(l, line, "{text}: {message}");
                    let said = format!("{message} {}", hint.unwrap_or_default());
                    assert!(said.contains(says), "{text}: {said}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // Numeric users need no account; a name does only with accounts.
        load("[config]\nUser = \"1000:1000\"\n[[users]]\nname = \"a\"\nuid = 1\n").unwrap();
        load("[config]\nUser = \"ghost\"\n").unwrap();
    }
}
