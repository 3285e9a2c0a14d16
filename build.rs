//! Gives the `ringspan` binary the git commit it is built from, for `ringspan --version`:
//! `RINGSPAN_COMMIT` is the short hash of HEAD, with `-dirty` when tracked files differ from
//! it, or `unknown` when there is no git, no repository, or the repository found is not this
//! crate's (a source tarball unpacked inside another one). Never fails the build.
//!
//! It runs again when HEAD moves (a checkout, a commit, a reset) or the index changes (an
//! `add`, a commit): an edit not yet added shows as `-dirty` from the next such change on.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let own = own_repository(&dir);
    let commit = own.then(|| commit(&dir)).flatten().unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RINGSPAN_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
    if own {
        for path in watched(&dir) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// `git` in `dir`: its standard output, trimmed, if it ran and succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        // Reading the status must not take the index lock from a git command the user runs.
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

/// Whether `dir` is the top of a git repository (not a directory inside another one's tree).
fn own_repository(dir: &Path) -> bool {
    let Some(top) = git(dir, &["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    match (Path::new(&top).canonicalize(), dir.canonicalize()) {
        (Ok(top), Ok(dir)) => top == dir,
        _ => false,
    }
}

/// The short hash of HEAD, `-dirty` if tracked files changed; `None` if git cannot say.
fn commit(dir: &Path) -> Option<String> {
    let hash = git(dir, &["rev-parse", "--short", "HEAD"])?;
    if hash.is_empty() {
        return None;
    }
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"])?;
    Some(if status.is_empty() { hash } else { format!("{hash}-dirty") })
}

/// The files whose change means HEAD or the index may have changed: HEAD and the index of this
/// worktree, the branch HEAD names and the packed refs. Only those that exist: Cargo runs a
/// build script again whenever a file it watches is missing.
fn watched(dir: &Path) -> Vec<PathBuf> {
    // Each printed relative to `dir` unless absolute; `join` keeps an absolute one as it is.
    let (Some(git_dir), Some(common)) =
        (git(dir, &["rev-parse", "--git-dir"]), git(dir, &["rev-parse", "--git-common-dir"]))
    else {
        return Vec::new();
    };
    let (git_dir, common) = (dir.join(git_dir), dir.join(common));
    let mut paths = vec![git_dir.join("HEAD"), git_dir.join("index"), common.join("packed-refs")];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        paths.push(common.join(branch));
    }
    paths.retain(|path| path.exists());
    paths
}
