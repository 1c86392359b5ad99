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
