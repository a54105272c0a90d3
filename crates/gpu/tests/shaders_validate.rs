//! Every `shaders/*.wgsl` is embedded, and every variant any op can request validates with naga.

use std::path::Path;

use darkroom_gpu::shaders::{all_variants, Variant, ALL, PIECES};

fn shader_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .wgsl files found in {}", dir.display());
    files
}

#[test]
fn every_shader_file_is_embedded_unchanged_and_has_variants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let variants = all_variants();
    for name in shader_files() {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        let embedded = ALL.iter().find(|(n, _)| *n == name);
        assert_eq!(embedded.map(|(_, text)| *text), Some(on_disk.as_str()), "{name}: not embedded, or stale");
        if PIECES.contains(&name.as_str()) {
            let include = format!("#include {name}");
            assert!(
                variants.iter().any(|v| ALL.iter().any(|(f, text)| *f == v.file && text.contains(&include))),
                "{name}: a piece that no compiled shader includes"
            );
        } else {
            assert!(variants.iter().any(|v| v.file == name), "{name}: no op requests any variant of it");
        }
    }
}

#[test]
fn every_variant_validates() {
    let variants = all_variants();
    let mut failures = Vec::new();
    for v in &variants {
        if let Err(e) = validate(v) {
            failures.push(format!("{}: {e}", v.key()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} variants fail:\n{}",
        failures.len(),
        variants.len(),
        failures.join("\n")
    );
    println!("validated {} variants of {} shaders", variants.len(), shader_files().len());
}

fn validate(v: &Variant) -> Result<(), String> {
    let source = v.source()?;
    validate_source(&source, v.entry)
}

fn validate_source(source: &str, entry: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    if !module.entry_points.iter().any(|e| e.name == entry) {
        return Err(format!("no entry point `{entry}`"));
    }
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

#[test]
fn validation_rejects_a_broken_shader() {
    // Guards the tests above against a validator that accepts anything.
    let broken = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    assert!(validate_source(broken, "main").is_err());
    let fine = "@compute @workgroup_size(1) fn main() { }";
    assert!(validate_source(fine, "main").is_ok());
    assert!(validate_source(fine, "other").is_err());
}

#[test]
fn every_shader_is_covered_by_a_kernel_test() {
    // Kernel tests end with `assert_covers(&gpu, "<file>", …)`, which checks at run time that
    // they compiled and ran every variant of that shader; here, every shader must have one.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernels");
    let sources: String = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    let uncovered: Vec<String> = shader_files()
        .into_iter()
        .filter(|name| !PIECES.contains(&name.as_str()))
        .filter(|name| !sources.contains(&format!("assert_covers(&gpu, \"{name}\"")))
        .collect();
    assert!(uncovered.is_empty(), "shaders no kernel test covers: {uncovered:?}");
}
