//! `--exclude PATTERN`, `--exclude-file FILE` and `--one-file-system`: what a directory push
//! leaves out, with rsync's and restic's reading of a pattern:
//!
//! - a pattern without `/` matches a name at any depth (`*.tmp`, `node_modules`);
//! - a pattern with `/` matches the path from the source's top (`var/cache/*`; a leading `/`
//!   is the same);
//! - a trailing `/` matches directories only (`cache/`);
//! - `*` and `?` stay within one name, `**` crosses directories.
//!
//! An excluded directory is not descended into. Exclude files hold one pattern per line;
//! blank lines and lines starting with `#` are skipped.

use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{CliError, Result};

const MAX_EXCLUDE_FILE_BYTES: usize = 256 * 1024;
const MAX_PATTERNS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Excludes {
    /// Matched against an entry's name.
    names: GlobSet,
    names_dirs_only: GlobSet,
    /// Matched against the path from the source's top.
    paths: GlobSet,
    paths_dirs_only: GlobSet,
    pub count: usize,
    /// Stay on the source's file system: a directory on another one is kept, empty.
    pub one_file_system: bool,
}

impl Excludes {
    pub fn new(patterns: &[String], files: &[impl AsRef<Path>], one_file_system: bool) -> Result<Excludes> {
        let mut all: Vec<(String, String)> = patterns.iter().map(|p| (p.clone(), "--exclude".to_string())).collect();
        for file in files {
            let file = file.as_ref();
            let bytes = vault_io::read_bounded(file, MAX_EXCLUDE_FILE_BYTES)?;
            let text = String::from_utf8(bytes).map_err(|_| CliError::Usage(format!("--exclude-file {}: not UTF-8 text", file.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim_end();
                if !line.is_empty() && !line.starts_with('#') {
                    all.push((line.to_string(), format!("{} line {}", file.display(), n + 1)));
                }
            }
        }
        if all.len() > MAX_PATTERNS {
            return Err(CliError::Usage(format!("{} exclude patterns, at most {MAX_PATTERNS}", all.len())));
        }
        let mut sets = [GlobSetBuilder::new(), GlobSetBuilder::new(), GlobSetBuilder::new(), GlobSetBuilder::new()];
        for (pattern, place) in &all {
            let dirs_only = pattern.ends_with('/');
            let body = pattern.trim_end_matches('/');
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(CliError::Usage(format!("exclude pattern `{pattern}` ({place}) matches nothing: give a name or a path, e.g. `*.tmp` or `var/cache/`")));
            }
            let glob = glob(body).map_err(|e| CliError::Usage(format!("exclude pattern `{pattern}` ({place}): {e}")))?;
            sets[usize::from(anchored) * 2 + usize::from(dirs_only)].add(glob);
        }
        let [names, names_dirs_only, paths, paths_dirs_only] = sets.map(|b| b.build().expect("each glob compiled alone"));
        Ok(Excludes { names, names_dirs_only, paths, paths_dirs_only, count: all.len(), one_file_system })
    }

    /// Whether the entry at `rel` (from the source's top) is left out.
    pub fn excludes(&self, rel: &Path, is_dir: bool) -> bool {
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        self.names.is_match(name) || self.paths.is_match(rel) || (is_dir && (self.names_dirs_only.is_match(name) || self.paths_dirs_only.is_match(rel)))
    }
}

/// `*` within a name, `**` across names: rsync's and gitignore's reading.
fn glob(pattern: &str) -> std::result::Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excludes(patterns: &[&str]) -> Excludes {
        Excludes::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(), &[] as &[&Path], false).unwrap()
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_top() {
        let ex = excludes(&["*.tmp", "var/cache/*", "/build", "logs/"]);
        assert!(ex.excludes(Path::new("a.tmp"), false));
        assert!(ex.excludes(Path::new("deep/down/b.tmp"), false));
        assert!(!ex.excludes(Path::new("a.tmpx"), false));
        assert!(ex.excludes(Path::new("var/cache/x"), false));
        assert!(!ex.excludes(Path::new("var/cache/x/y"), false), "`*` stays within one name");
        assert!(!ex.excludes(Path::new("other/var/cache/x"), false), "a path pattern is anchored at the top");
        assert!(ex.excludes(Path::new("build"), true));
        assert!(!ex.excludes(Path::new("src/build"), true));
        assert!(ex.excludes(Path::new("srv/logs"), true));
        assert!(!ex.excludes(Path::new("srv/logs"), false), "a trailing `/` matches directories only");
        assert!(excludes(&["**/node_modules"]).excludes(Path::new("a/b/node_modules"), true));
    }

    #[test]
    fn a_bad_or_empty_pattern_is_refused_with_its_place() {
        let err = Excludes::new(&["/".to_string()], &[] as &[&Path], false).unwrap_err().to_string();
        assert!(err.contains("exclude pattern `/` (--exclude) matches nothing"), "{err}");
        let err = Excludes::new(&["a[".to_string()], &[] as &[&Path], false).unwrap_err().to_string();
        assert!(err.contains("exclude pattern `a[`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("excludes");
        std::fs::write(&file, "# caches\n*.tmp\n\ncache/\nx[\n").unwrap();
        let err = Excludes::new(&[], &[&file], false).unwrap_err().to_string();
        assert!(err.contains("line 5"), "{err}");
        std::fs::write(&file, "# caches\n*.tmp\n\ncache/\n").unwrap();
        assert_eq!(Excludes::new(&[], &[&file], false).unwrap().count, 2);
    }
}
