//! `darkroom grid` on the tiny model: every cell is the image `darkroom generate` makes with
//! that cell's settings, byte for byte (prompt S/R, steps and CFG axes, A1111 ranges), and the
//! grid image holds the cells under their legends with the plot recorded in its parameters.

mod common;

use common::{darkroom, root};

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn grid_cells_are_generate_s_images_and_the_grid_is_labelled() {
    let tmp = std::env::temp_dir().join(format!("darkroom-grid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let model = root().join("tests/fixtures/tiny-sd");
    let model = model.to_str().unwrap();
    let out = tmp.join("grid");
    #[rustfmt::skip]
    let common = ["--model", model, "--width", "32", "--height", "40", "--precision", "f32", "--seed", "21", "--quiet"];
    let mut args =
        vec!["grid", "--x", "steps:1-3 (+2)", "--y", "cfg:1-7 [2]", "--z", "prompt:lighthouse,owl"];
    args.extend_from_slice(&["--prompt", "a lighthouse at dusk", "--out", out.to_str().unwrap()]);
    args.extend_from_slice(&common);
    let made = darkroom(&args);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(String::from_utf8_lossy(&made.stdout).lines().count(), 2 * 2 * 2 + 1);

    // Cell x2 (3 steps), y2 (CFG 7), z2 (owl) is generate with those settings.
    let single = tmp.join("single.png");
    #[rustfmt::skip]
    let mut one = vec!["generate", "--prompt", "a owl at dusk", "--steps", "3", "--cfg", "7", "--out", single.to_str().unwrap()];
    one.extend_from_slice(&common);
    let generated = darkroom(&one);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    assert_eq!(std::fs::read(out.join("x2-y2-z2.png")).unwrap(), std::fs::read(&single).unwrap());

    let grid = std::fs::read(out.join("grid.png")).unwrap();
    let (w, h) = png_size(&grid);
    assert!(w > 2 * 2 * 32 && h > 2 * 40, "two 2x2 grids with legends: {w}x{h}");
    for k in [1, 2] {
        let (gw, gh) = png_size(&std::fs::read(out.join(format!("grid-z{k}.png"))).unwrap());
        assert!(gw > 2 * 32 && gh > 2 * 40);
    }
    let params = darkroom(&["params", out.join("grid.png").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&params.stdout);
    assert!(
        text.contains("Script: X/Y/Z plot, X Type: Steps, X Values: 1-3 (+2), Y Type: CFG Scale"),
        "{text}"
    );

    // A search value that is not in the prompt is refused before anything runs.
    let mut bad =
        vec!["grid", "--x", "prompt:cat,owl", "--prompt", "a lighthouse", "--out", out.to_str().unwrap()];
    bad.extend_from_slice(&common);
    let refused = darkroom(&bad);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("\"cat\" is what is searched"));
    let _ = std::fs::remove_dir_all(&tmp);
}
