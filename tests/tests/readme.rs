//! The README and `docs/`: the README shows `middleware/examples/minimal.rs`
//! whole (CI builds the example, and compiles the README's snippets as
//! doctests of this crate), its first screen says what to install, how long
//! the first run takes and the two commands, every relative link of the
//! README and `docs/*.md` points at a file of the repository, and
//! `docs/compatibility.md` holds the measured matrix.

use std::path::Path;

use e2e::repo_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn readme_shows_the_minimal_example_whole() {
    let readme = read("README.md");
    let example = read("middleware/examples/minimal.rs");
    assert!(
        readme.contains(&format!("```rust,no_run\n{example}```\n")),
        "README.md must show middleware/examples/minimal.rs verbatim in a rust,no_run block"
    );
    // Pasted into an app's main.rs, it must not tell the user to run this
    // repository's example.
    assert!(
        !example.contains("cargo run"),
        "middleware/examples/minimal.rs names a cargo command; the README says how to run it"
    );
}

#[test]
fn readme_names_the_dependency_lines() {
    let readme = read("README.md");
    let version = env!("CARGO_PKG_VERSION");
    let minor = version
        .rsplit_once('.')
        .map_or(version, |(major_minor, _)| major_minor);
    assert!(
        readme.contains(&format!("tower-statsd = \"{minor}\"")),
        "README.md lacks the Cargo.toml line tower-statsd = \"{minor}\""
    );
    // Until the crate is on crates.io: the repository the manifest names.
    let manifest = read("Cargo.toml");
    let repository = manifest
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .expect("[workspace.package] repository")
        .trim_matches('"');
    assert!(
        readme.contains(&format!("tower-statsd = {{ git = \"{repository}\" }}")),
        "README.md lacks the git dependency on {repository}"
    );
}

#[test]
fn readme_first_screen_is_enough() {
    let readme = read("README.md");
    let first_screen = &readme[..readme
        .find("\n## ")
        .expect("README.md has sections after its first screen")];
    for needed in [
        "Rust 1.85",
        "Node.js 20",
        "Python 3.11",
        "root",
        "The first `scripts/demo` takes",
        "scripts/demo ",
        "scripts/test ",
        "![",
    ] {
        assert!(
            first_screen.contains(needed),
            "README.md's first screen (before its first `## `) lacks {needed:?}"
        );
    }
    assert!(
        first_screen.lines().count() <= 30,
        "README.md's first screen is {} lines long",
        first_screen.lines().count()
    );
    assert!(
        readme[first_screen.len()..].starts_with("\n## Contents\n"),
        "the table of contents follows the first screen"
    );
}

/// Relative link targets in a Markdown file, `](target)` without a scheme:
/// (file, or "" for the page itself; anchor, if any).
fn relative_links(markdown: &str) -> Vec<(String, Option<String>)> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .filter(|t| !t.contains("://"))
        .map(|t| match t.split_once('#') {
            Some((file, anchor)) => (file.to_owned(), Some(anchor.to_owned())),
            None => (t.to_owned(), None),
        })
        .collect()
}

/// The anchors GitHub gives a Markdown page's headings: lower case, spaces
/// to `-`, punctuation other than `-` and `_` dropped.
fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn links_of_the_readme_and_docs_point_at_files() {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        for (target, anchor) in relative_links(&text) {
            // docs/scaling-with-cores.md is written elsewhere in parallel.
            if target.ends_with("scaling-with-cores.md") {
                continue;
            }
            let file = if target.is_empty() {
                page.clone()
            } else {
                Path::new(dir).join(&target)
            };
            assert!(
                file.exists(),
                "{} links to {target}, which does not exist",
                page.display()
            );
            if let Some(anchor) = anchor {
                let headings = anchors(&std::fs::read_to_string(&file).unwrap());
                assert!(
                    headings.contains(&anchor),
                    "{} links to {target}#{anchor}, a heading {} does not have: {headings:?}",
                    page.display(),
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links checked");
}

#[test]
fn compatibility_doc_shows_the_measured_matrix() {
    // The newest run that `scripts/matrix` wrote to scripts/bench/results/.
    let results = repo_root().join("scripts/bench/results");
    let newest = std::fs::read_dir(&results)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-matrix.md"))
        .max()
        .expect("a *-matrix.md in scripts/bench/results");
    let run = std::fs::read_to_string(&newest).unwrap();
    // The quiet matrix in compatibility.md, the busy and saturation ones in
    // server-profiles.md.
    let doc = read("docs/compatibility.md") + &read("docs/server-profiles.md");
    let rows: Vec<&str> = run.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows.len() > 2, "{} has no table", newest.display());
    for row in rows {
        assert!(
            doc.contains(row),
            "docs/compatibility.md and docs/server-profiles.md lack this row of {}: {row}",
            newest.display()
        );
    }
}
