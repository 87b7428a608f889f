//! The plots of `BENCHMARKS.md` against the code that draws them: every plot `scripts/bench`
//! draws is committed in `benchmarks/` and embedded in the page, every SVG there is embedded,
//! and each is a drawn plot. A plot renamed or added in the bench without a run that draws it
//! (or one left behind after its part is gone) fails here. No local system: files only.

use std::collections::BTreeSet;

use staleless_tests::faults::Row;
use staleless_tests::{page, plots};

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

#[test]
fn every_plot_the_bench_draws_is_committed_embedded_and_drawn() {
    let root = infra::emulator::project_root();
    let markdown = read(&root.join("BENCHMARKS.md"));
    let embedded: BTreeSet<String> = page::embedded_images(&markdown).into_iter().collect();
    let committed: BTreeSet<String> = std::fs::read_dir(root.join(plots::DIR))
        .expect("the plots' directory")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".svg"))
        .map(|name| format!("{}/{name}", plots::DIR))
        .collect();
    assert_eq!(
        embedded,
        committed,
        "BENCHMARKS.md embeds exactly the SVGs of {}/",
        plots::DIR
    );

    let mut drawn: Vec<String> = vec![
        plots::STALENESS_CDF.to_owned(),
        plots::THROUGHPUT.to_owned(),
        plots::FLEET_CALLS.to_owned(),
        plots::FLEET_STALENESS_CDF.to_owned(),
    ];
    drawn.extend(
        Row::ALL
            .into_iter()
            .filter(|row| row.probes_during_fault())
            .map(|row| plots::fault_file(&row.slug())),
    );
    for file in &drawn {
        let path = format!("{}/{file}", plots::DIR);
        assert!(
            committed.contains(&path),
            "{path} is drawn by scripts/bench but not committed"
        );
    }
    assert_eq!(
        drawn.len(),
        committed.len(),
        "an SVG no part of scripts/bench draws: {committed:?}"
    );

    for path in &committed {
        let svg = read(&root.join(path));
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{path} is not a whole SVG"
        );
        // A plot has axes, labels and at least one drawn series, not only a frame.
        assert!(svg.matches("<text").count() >= 5, "{path} has no labels");
        assert!(
            svg.contains("stroke-width=\"2\"") || svg.contains("<rect"),
            "{path} draws no series"
        );
    }
}
