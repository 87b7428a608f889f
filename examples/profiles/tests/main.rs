//! The example refuses to start without its topic or with a malformed address, naming the
//! setting; serving it end to end is `tests/tests/example.rs` and the fault matrix.

use std::process::Command;

fn refused_naming(extra: &[(&str, &str)], setting: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_staleless-example"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(extra.iter().copied())
        .output()
        .expect("the example runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started without a valid {setting}: {stderr}");
    assert!(stderr.contains(setting), "stderr does not name {setting}: {stderr}");
}

#[test]
fn the_example_names_its_missing_topic() {
    refused_naming(&[], "INVALIDATION_TOPIC_ARN");
}

#[test]
fn the_example_names_its_malformed_address() {
    refused_naming(&[("EXAMPLE_ADDR", "not an address")], "EXAMPLE_ADDR");
}

/// The lines between two markers of `text`, the markers' own lines left out.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|line| !line.contains(start))
        .skip(1)
        .take_while(|line| !line.contains(end))
        .collect()
}

#[test]
fn the_readme_shows_the_wiring_as_the_example_has_it() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let main = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/main.rs")).expect("main.rs");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let wiring = between(&main, "// wiring:", "// end of wiring");
    let section = between(&readme, "## Use it in your service", "## Benchmarks");
    let shown = between(&section.join("\n"), "```rust", "```")
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(
        shown, wiring,
        "README.md's wiring differs from examples/profiles/src/main.rs"
    );
    let statements = wiring.iter().filter(|line| line.trim_end().ends_with(';')).count();
    let lines = wiring.iter().filter(|line| !line.trim().is_empty()).count();
    assert!(lines <= 30, "the wiring takes {lines} lines");
    assert!(
        readme.contains(&format!(
            "That is {lines} lines as rustfmt lays them out ({statements} statements)"
        )),
        "README.md's count is not {lines} lines, {statements} statements"
    );
}
