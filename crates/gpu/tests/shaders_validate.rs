//! Every `shaders/*.wgsl` parses and validates with naga, and every one is embedded in the crate.

use std::path::Path;

#[test]
fn every_shader_in_the_folder_validates_and_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .wgsl files found in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        match validate(&source) {
            Ok(()) => {}
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        let embedded = darkroom_gpu::shaders::ALL.iter().find(|(n, _)| *n == name);
        match embedded {
            Some((_, text)) => assert_eq!(*text, source, "{name}: embedded copy is stale"),
            None => failures.push(format!("{name}: not listed in darkroom_gpu::shaders::ALL")),
        }
    }
    assert!(
        failures.is_empty(),
        "shader problems:\n{}",
        failures.join("\n")
    );
    println!("validated {} shaders", files.len());
}

fn validate(source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

#[test]
fn validation_rejects_a_broken_shader() {
    // Guards the test above against a validator that accepts anything.
    let broken = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    assert!(validate(broken).is_err());
}
