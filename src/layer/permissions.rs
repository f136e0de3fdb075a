//! `[[customisation.permissions]]` rules: owner and mode overrides matched
//! by path or glob, applied to the headers of every layer nixlayer writes
//! (store layers and the customisation layer alike), so ownership and modes
//! need neither fakeroot nor root privileges (SPEC §4).
//!
//! Rules apply in order, the last matching rule winning for each field it
//! sets. With no rules, headers are untouched, so store layers stay
//! byte-identical to nixpkgs'.
//!
//! The glob dialect is deliberately tiny: `*` (any run of characters within
//! one component), `?` (one character within a component) and `**` (a whole
//! component: zero or more components, one or more at the end). Like gitignore and `globset`,
//! `/a/**` matches everything below `/a` but not `/a` itself. A hand-written
//! matcher of this size keeps a regex engine out of the build (`globset`
//! would bring one, and its `**` rules differ in corner cases). Components
//! are matched by dynamic programming over (pattern component, path
//! component), so any number of `**` costs at most the pattern's length
//! times the path's component matches, never the exponential backtracking
//! of a recursive matcher.

use crate::tar::{Header, Kind};

/// One `[[customisation.permissions]]` rule, resolved: the manifest checks
/// the entry, the settings make this of it, and this module applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionRule {
    /// The normalised pattern, absolute (`/nix/var/nix/**`).
    pub pattern: String,
    /// New owner id.
    pub uid: Option<u64>,
    /// New group id.
    pub gid: Option<u64>,
    /// New owner name; when `uid` is set without it, the name is cleared so
    /// that name-preferring tools fall back to the number.
    pub uname: Option<String>,
    /// New group name, cleared likewise when only `gid` is set.
    pub gname: Option<String>,
    /// Mode of files and directories (not symlinks, whose mode means nothing).
    pub mode: Option<u32>,
    /// Mode of directories, over `mode`.
    pub dir_mode: Option<u32>,
    /// Mode of regular files, over `mode`.
    pub file_mode: Option<u32>,
}

impl PermissionRule {
    /// A rule for `pattern` that changes nothing yet.
    #[must_use]
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            uid: None,
            gid: None,
            uname: None,
            gname: None,
            mode: None,
            dir_mode: None,
            file_mode: None,
        }
    }

    /// Whether the rule's pattern matches the absolute `path` (no trailing `/`).
    #[must_use]
    pub fn matches(&self, path: &[u8]) -> bool {
        glob_match(self.pattern.as_bytes(), path)
    }

    fn apply(&self, header: &mut Header) {
        if let Some(uid) = self.uid {
            header.uid = uid;
            header.uname = self.uname.clone().unwrap_or_default();
        } else if let Some(uname) = &self.uname {
            header.uname.clone_from(uname);
        }
        if let Some(gid) = self.gid {
            header.gid = gid;
            header.gname = self.gname.clone().unwrap_or_default();
        } else if let Some(gname) = &self.gname {
            header.gname.clone_from(gname);
        }
        let mode = match header.kind {
            Kind::Directory => self.dir_mode.or(self.mode),
            Kind::Regular => self.file_mode.or(self.mode),
            Kind::Symlink(_) => None,
        };
        if let Some(mode) = mode {
            header.mode = mode;
        }
    }
}

/// The rules of one build, in manifest order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    rules: Vec<PermissionRule>,
}

impl Permissions {
    /// The rules, applied in this order.
    #[must_use]
    pub fn new(rules: Vec<PermissionRule>) -> Self {
        Self { rules }
    }

    /// Whether there is no rule (headers stay as they are).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &[PermissionRule] {
        &self.rules
    }

    /// Applies every matching rule to `header`, whose name is an absolute
    /// tar name (a directory's trailing `/` is ignored).
    pub fn apply(&self, header: &mut Header) {
        if self.rules.is_empty() {
            return;
        }
        let name = header.name.strip_suffix(b"/").unwrap_or(&header.name);
        let name = if name.is_empty() { &b"/"[..] } else { name };
        let matching: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(name))
            .map(|(i, _)| i)
            .collect();
        for i in matching {
            self.rules[i].apply(header);
        }
    }

    /// A stable text of the rules, for layer keys.
    #[must_use]
    pub fn key_text(&self) -> String {
        let mut text = String::new();
        for r in &self.rules {
            text.push_str(&format!(
                "{}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0",
                r.pattern, r.uid, r.gid, r.uname, r.gname, r.mode, r.dir_mode, r.file_mode
            ));
        }
        text
    }
}

/// Whether `pattern` matches `path`, both absolute, component by component.
#[must_use]
pub fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    let pat: Vec<&[u8]> = components(pattern).collect();
    let comps: Vec<&[u8]> = components(path).collect();
    match_components(&pat, &comps)
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

fn match_components(pat: &[&[u8]], path: &[&[u8]]) -> bool {
    // `next[j]`: whether `pat[i + 1..]` matches `path[j..]`; `row[j]` the
    // same for `pat[i..]`, computed from the end of the pattern backwards.
    let n = path.len();
    // The empty pattern matches only the empty rest of a path.
    let mut next: Vec<bool> = (0..=n).map(|j| j == n).collect();
    for (i, component) in pat.iter().enumerate().rev() {
        let mut row = vec![false; n + 1];
        if *component == b"**" {
            if i + 1 == pat.len() {
                // A trailing `**` needs at least one component, so `/a/**`
                // is what is inside `/a`, not `/a` itself.
                for (j, cell) in row.iter_mut().enumerate() {
                    *cell = j < n;
                }
            } else {
                // Zero components (`next[j]`) or one more (`row[j + 1]`).
                row[n] = next[n];
                for j in (0..n).rev() {
                    row[j] = next[j] || row[j + 1];
                }
            }
        } else {
            for j in 0..n {
                row[j] = next[j + 1] && match_component(component, path[j]);
            }
        }
        next = row;
    }
    next[0]
}

/// `*` and `?` within one component (bytes; a `?` is one byte).
fn match_component(pat: &[u8], name: &[u8]) -> bool {
    // Iterative wildcard matching with one backtrack point: linear-ish and
    // no recursion, the classic two-pointer algorithm.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_components() {
        assert!(glob_match(b"/nix/var/nix/**", b"/nix/var/nix/db/db.sqlite"));
        assert!(glob_match(b"/nix/var/nix/**", b"/nix/var/nix/db"));
        assert!(!glob_match(b"/nix/var/nix/**", b"/nix/var/nix"));
        assert!(!glob_match(b"/nix/var/nix/**", b"/nix/var/nixos/x"));
        assert!(glob_match(b"/home/user", b"/home/user"));
        assert!(!glob_match(b"/home/user", b"/home/user/x"));
        assert!(glob_match(b"/etc/*.conf", b"/etc/a.conf"));
        assert!(!glob_match(b"/etc/*.conf", b"/etc/x/a.conf"));
        assert!(glob_match(
            b"/nix/store/*-hello-*/bin/*",
            b"/nix/store/abc-hello-2.1/bin/hello"
        ));
        assert!(glob_match(b"/**/bin/?ash", b"/usr/local/bin/bash"));
        assert!(!glob_match(b"/**", b"/"));
        assert!(glob_match(b"/**", b"/etc"));
        assert!(glob_match(b"/a/**/z", b"/a/z"));
        assert!(glob_match(b"/a*b*c", b"/aXXbYYbc"));
        assert!(!glob_match(b"/a*b*c", b"/aXXbYYb"));
        assert!(glob_match(b"/**/**", b"/a"));
        assert!(!glob_match(b"/**/**", b"/"));
        assert!(glob_match(b"/a/**/b/**", b"/a/x/b/y"));
        assert!(!glob_match(b"/a/**/b/**", b"/a/x/b"));
        assert!(glob_match(b"/", b"/"));
        assert!(!glob_match(b"/", b"/a"));
    }

    /// Many `**` against a long path that does not match: the recursive
    /// matcher tried every way to split the path among them (about
    /// C(60, 30) ≈ 10^17 here, which never finished); this must answer at
    /// once, and correctly.
    #[test]
    fn many_double_stars_on_a_long_path_answer_correctly() {
        let pattern = format!("{}/nomatch", "/**/a".repeat(30));
        let path = "/a".repeat(60);
        assert!(!glob_match(pattern.as_bytes(), path.as_bytes()));
        let path = format!("{path}/nomatch");
        assert!(glob_match(pattern.as_bytes(), path.as_bytes()));
        // All `**`: any path below `/`, but not `/` itself.
        let pattern = "/**".repeat(200);
        assert!(glob_match(pattern.as_bytes(), "/x".repeat(400).as_bytes()));
        assert!(!glob_match(pattern.as_bytes(), b"/"));
        let pattern = format!("{}/y", "/**".repeat(200));
        assert!(!glob_match(pattern.as_bytes(), "/x".repeat(400).as_bytes()));
    }

    /// The recursive definition the matcher replaces, kept as the oracle.
    fn reference(pat: &[&[u8]], path: &[&[u8]]) -> bool {
        match pat.split_first() {
            None => path.is_empty(),
            Some((first, rest)) if *first == b"**" => {
                let least = usize::from(rest.is_empty());
                (least..=path.len()).any(|skip| reference(rest, &path[skip..]))
            }
            Some((first, rest)) => match path.split_first() {
                Some((comp, path_rest)) => {
                    match_component(first, comp) && reference(rest, path_rest)
                }
                None => false,
            },
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_like_the_recursive_definition(
            pattern in proptest::collection::vec("\\*\\*|\\*|a|b|a\\*|\\?", 0..7),
            path in proptest::collection::vec("a|b|ab|ba", 0..7),
        ) {
            let pat: Vec<&[u8]> = pattern.iter().map(|c| c.as_bytes()).collect();
            let comps: Vec<&[u8]> = path.iter().map(|c| c.as_bytes()).collect();
            proptest::prop_assert_eq!(match_components(&pat, &comps), reference(&pat, &comps));
        }
    }

    fn header(name: &str, kind: Kind) -> Header {
        Header {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o555,
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
            size: 0,
        }
    }

    #[test]
    fn later_rules_win_per_field_and_symlinks_keep_their_mode() {
        let mut all = PermissionRule::new("/srv/**");
        all.uid = Some(1000);
        all.mode = Some(0o700);
        let mut files = PermissionRule::new("/srv/**");
        files.file_mode = Some(0o600);
        files.gid = Some(100);
        files.gname = Some("users".into());
        let perms = Permissions::new(vec![all, files]);

        let mut dir = header("/srv/data/", Kind::Directory);
        perms.apply(&mut dir);
        assert_eq!((dir.uid, dir.gid, dir.mode), (1000, 100, 0o700));
        assert_eq!((dir.uname.as_str(), dir.gname.as_str()), ("", "users"));

        let mut file = header("/srv/data/x", Kind::Regular);
        perms.apply(&mut file);
        assert_eq!(file.mode, 0o600);

        let mut link = header("/srv/l", Kind::Symlink(b"x".to_vec()));
        link.mode = 0o777;
        perms.apply(&mut link);
        assert_eq!((link.uid, link.mode), (1000, 0o777));

        let mut outside = header("/srv/", Kind::Directory);
        perms.apply(&mut outside);
        assert_eq!((outside.uid, outside.mode), (0, 0o555));
    }
}
