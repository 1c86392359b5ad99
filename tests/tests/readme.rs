//! The README shows `middleware/examples/minimal.rs` whole (CI builds the
//! example, and compiles the README's snippets as doctests of this crate).

use e2e::repo_root;

#[test]
fn readme_shows_the_minimal_example_whole() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(repo_root().join("middleware/examples/minimal.rs")).unwrap();
    assert!(
        readme.contains(&format!("```rust,no_run\n{example}```\n")),
        "README.md must show middleware/examples/minimal.rs verbatim in a rust,no_run block"
    );
}

#[test]
fn readme_names_the_dependency_line() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let minor = version
        .rsplit_once('.')
        .map_or(version, |(major_minor, _)| major_minor);
    assert!(
        readme.contains(&format!("tower-statsd = \"{minor}\"")),
        "README.md lacks the Cargo.toml line tower-statsd = \"{minor}\""
    );
}

#[test]
fn readme_shows_the_measured_compatibility_matrix() {
    // The newest run that `scripts/matrix` wrote to scripts/bench/results/.
    let results = repo_root().join("scripts/bench/results");
    let newest = std::fs::read_dir(&results)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-matrix.md"))
        .max()
        .expect("a *-matrix.md in scripts/bench/results");
    let run = std::fs::read_to_string(&newest).unwrap();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let rows: Vec<&str> = run.lines().filter(|l| l.starts_with("| ")).collect();
    assert!(rows.len() > 2, "{} has no table", newest.display());
    for row in rows {
        assert!(
            readme.contains(row),
            "README.md lacks this row of {}: {row}",
            newest.display()
        );
    }
}
