//! `darkroom brief`: a brief file made, filled, culled and exported as a case study (the HTML page
//! self-contained, the rejected directions with their reasons, the finals at full size; the
//! contact sheet framing each image by its verdict).

use darkroom_workflow::brief::{self, Verdict};

mod common;
use common::{darkroom, root};

fn ok(args: &[&str]) -> String {
    let out = darkroom(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_brief_made_culled_and_exported() {
    let dir = std::env::temp_dir().join(format!("darkroom-brief-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("harbour.darkroom-brief.zip");
    let f = file.to_str().unwrap();
    ok(&[
        "brief",
        "new",
        f,
        "--title",
        "Harbour <at> dusk",
        "--text",
        "Warm, quiet.",
        "--palette",
        "#0b1f3a,#d94f30",
        "--aspect",
        "16:9, 1:1",
    ]);
    let again = darkroom(&["brief", "new", f, "--title", "x"]);
    assert_eq!(again.status.code(), Some(2), "an existing file is not overwritten");
    let images = root().join("tests/fixtures/images");
    let (astronaut, coffee) = (images.join("astronaut.png"), images.join("coffee.png"));
    ok(&["brief", "add", f, "--name", "First look", astronaut.to_str().unwrap(), coffee.to_str().unwrap()]);
    ok(&["brief", "add", f, coffee.to_str().unwrap()]);
    ok(&["brief", "mark", f, "2", "--reject", "off palette & too busy", "--rating", "2"]);
    ok(&["brief", "mark", f, "images/0001.png", "--final", "--rating", "5"]);
    assert_eq!(darkroom(&["brief", "mark", f, "7", "--keep"]).status.code(), Some(2));
    assert_eq!(darkroom(&["brief", "mark", f, "1", "--rating", "6"]).status.code(), Some(2));

    let board = brief::from_zip(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(board.brief.constraints.aspect_ratios, ["16:9", "1:1"]);
    let its = board.iterations();
    assert_eq!((its.len(), its[0].name.as_str(), its[0].images.len()), (2, "First look", 2));
    assert_eq!(board.images[1].culling.verdict, Verdict::Reject);
    assert!(board.images[0].culling.is_final && board.images[0].culling.verdict == Verdict::Keep);
    assert!(
        board.images[0].scores.contains_key("palette_delta_e")
            && board.images[0].scores.contains_key("sharpness")
    );
    let shown = ok(&["brief", "show", f]);
    assert!(shown.contains("rejected 2/5: off palette & too busy"), "{shown}");

    let (html, sheet) = (dir.join("case.html"), dir.join("sheet.png"));
    ok(&["brief", "export", f, "--html", html.to_str().unwrap(), "--sheet", sheet.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Harbour &lt;at&gt; dusk"));
    assert!(page.contains("Rejected: off palette &amp; too busy"));
    let finals = &page[page.find("id=\"finals\"").unwrap()..];
    assert_eq!(finals.matches("<figure").count(), 1);
    assert!(!page.contains("src=\"http") && !page.contains("<script"));
    let png = std::fs::read(&sheet).unwrap();
    let decoded = brief::decode_png(&png, "sheet").unwrap();
    assert!(decoded.width >= 600 && decoded.height > 400, "{}x{}", decoded.width, decoded.height);
    assert_eq!(darkroom(&["brief", "export", f]).status.code(), Some(2), "nothing asked for");
    let bogus = dir.join("bogus.zip");
    std::fs::write(&bogus, b"not a zip").unwrap();
    let out = darkroom(&["brief", "export", bogus.to_str().unwrap(), "--html", html.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a brief file"));
    let _ = std::fs::remove_dir_all(&dir);
}
