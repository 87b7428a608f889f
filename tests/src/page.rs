//! `BENCHMARKS.md` as a web page, and its screenshots by headless Chromium: the proof that the
//! plots it embeds open in a browser. `bench page` (`scripts/bench page`) writes the page and
//! the screenshots under `target/bench-page/`, and fails when the browser could not load an image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use pulldown_cmark::{Event, Options, Parser, Tag};

/// How long one Chromium run may take: it loads local files only.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);
/// The page's width in the screenshot.
const PAGE_WIDTH: u32 = 1100;

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// The image addresses `markdown` embeds, in page order.
#[must_use]
pub fn embedded_images(markdown: &str) -> Vec<String> {
    Parser::new_ext(markdown, options())
        .filter_map(|event| match event {
            Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.into_string()),
            _ => None,
        })
        .collect()
}

/// `path` as a `file://` URL (percent-encoding what a URL path cannot hold as is).
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// `markdown` as a standalone page whose relative addresses resolve against `base` (the
/// directory of the Markdown file). A script records, once the page has loaded, its height and
/// which images the browser could not decode, for [`screenshot`] to read.
#[must_use]
pub fn html(markdown: &str, base: &Path) -> String {
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, Parser::new_ext(markdown, options()));
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>staleless benchmarks</title>
<base href="{base}/">
<style>
body {{ font-family: sans-serif; max-width: 1040px; margin: 1.5em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }}
code {{ background: #f3f3f3; padding: 0 2px; }}
img {{ display: block; max-width: 100%; border: 1px solid #e4e4e4; margin: 1em 0; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", () => {{
  const broken = [...document.images].filter((image) => !image.complete || image.naturalWidth === 0);
  document.body.dataset.images = String(document.images.length);
  document.body.dataset.broken = broken.map((image) => image.getAttribute("src")).join(" ");
  document.body.dataset.height = String(document.documentElement.scrollHeight);
}});
</script>
</body></html>
"#,
        base = file_url(base).trim_end_matches('/')
    )
}

/// The value of `data-<name>` on the dumped page's body.
fn data_attribute<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("data-{name}=\"");
    let start = dom.find(&marker)? + marker.len();
    dom[start..].split('"').next()
}

/// What [`screenshot`] wrote.
#[derive(Debug)]
pub struct Screenshots {
    /// The page as HTML.
    pub html: PathBuf,
    /// The whole page, as a PNG.
    pub page: PathBuf,
    /// Each embedded SVG on its own, as a PNG.
    pub plots: Vec<PathBuf>,
}

/// Runs Chromium headless with `arguments` and returns what it printed.
async fn chromium(program: &Path, profile: &Path, arguments: &[String]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(program);
    // Without the background-networking flags Chromium tries to reach Google's hosts at every
    // start; on a closed network that costs time and fills the log.
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(arguments)
        .kill_on_drop(true);
    let output = tokio::time::timeout(CHROMIUM_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{} did not finish within {CHROMIUM_TIMEOUT:?}", program.display()))?
        .with_context(|| format!("cannot run {} (install Debian's chromium)", program.display()))?;
    ensure!(
        output.status.success(),
        "{} failed ({}): {}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Renders `markdown_path` to `out_dir/index.html`, loads it in Chromium (`program`), fails
/// when an image did not load, then screenshots the whole page and each embedded SVG.
///
/// # Errors
/// When a file cannot be read or written, Chromium fails, or the page shows a broken image.
pub async fn screenshot(markdown_path: &Path, out_dir: &Path, program: &Path) -> anyhow::Result<Screenshots> {
    let markdown =
        std::fs::read_to_string(markdown_path).with_context(|| format!("cannot read {}", markdown_path.display()))?;
    let base = markdown_path
        .parent()
        .context("the Markdown file has no directory")?
        .canonicalize()?;
    std::fs::create_dir_all(out_dir)?;
    let out_dir = out_dir.canonicalize()?;
    let profile = out_dir.join("chromium-profile");
    let html_path = out_dir.join("index.html");
    std::fs::write(&html_path, html(&markdown, &base))?;
    let page_url = file_url(&html_path);

    // The load event has fired once the virtual time budget is spent; then the DOM is dumped.
    let dom = chromium(
        program,
        &profile,
        &[
            "--virtual-time-budget=10000".to_owned(),
            "--dump-dom".to_owned(),
            page_url.clone(),
        ],
    )
    .await?;
    let images: usize = data_attribute(&dom, "images")
        .context("the page's load script did not run")?
        .parse()?;
    let expected = embedded_images(&markdown);
    ensure!(
        images == expected.len(),
        "the browser saw {images} images, the page embeds {}",
        expected.len()
    );
    let broken = data_attribute(&dom, "broken").unwrap_or_default().trim();
    ensure!(broken.is_empty(), "the browser could not load: {broken}");
    let height: u32 = data_attribute(&dom, "height").context("no page height")?.parse()?;

    let page = out_dir.join("BENCHMARKS.png");
    chromium(
        program,
        &profile,
        &[
            format!("--screenshot={}", page.display()),
            format!("--window-size={PAGE_WIDTH},{}", height.max(600)),
            page_url,
        ],
    )
    .await?;
    let mut plots = Vec::new();
    for image in expected.iter().filter(|image| image.ends_with(".svg")) {
        let name = Path::new(image).file_stem().context("an image without a name")?;
        let png = out_dir.join(name).with_extension("png");
        chromium(
            program,
            &profile,
            &[
                format!("--screenshot={}", png.display()),
                format!("--window-size={},{}", crate::plots::SIZE.0, crate::plots::SIZE.1),
                file_url(&base.join(image)),
            ],
        )
        .await?;
        plots.push(png);
    }
    Ok(Screenshots {
        html: html_path,
        page,
        plots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_found_in_page_order_and_only_images() {
        let markdown = "# B\n\n[a link](x.svg)\n\n![first](benchmarks/a.svg)\n\n| t |\n|---|\n| ![in a table](benchmarks/b.svg) |\n";
        assert_eq!(embedded_images(markdown), ["benchmarks/a.svg", "benchmarks/b.svg"]);
    }

    #[test]
    fn the_page_resolves_relative_images_against_the_markdown_directory() {
        let page = html(
            "![p](benchmarks/a.svg)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
            Path::new("/work/my repo"),
        );
        assert!(page.contains(r#"<base href="file:///work/my%20repo/">"#), "{page}");
        assert!(page.contains(r#"<img src="benchmarks/a.svg" alt="p" />"#), "{page}");
        assert!(page.contains("<table>"), "tables are rendered: {page}");
    }

    #[test]
    fn data_attributes_are_read_from_the_dumped_body() {
        let dom = r#"<body data-images="3" data-broken="" data-height="4200">"#;
        assert_eq!(data_attribute(dom, "images"), Some("3"));
        assert_eq!(data_attribute(dom, "broken"), Some(""));
        assert_eq!(data_attribute(dom, "height"), Some("4200"));
        assert_eq!(data_attribute(dom, "width"), None);
    }
}
