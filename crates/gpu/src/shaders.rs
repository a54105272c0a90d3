//! The WGSL sources in the repository's `shaders/` folder, embedded at build time, and the small
//! preprocessor that makes their variants.
//!
//! One source per op; variants come from a header and `#if NAME` / `#if !NAME` / `#else` /
//! `#endif` lines (nestable), never from copies; `#include FILE` inlines a shared piece.
//! Every variant a wrapper can request is listed by [`all_variants`], and the tests validate
//! each with naga.
//!
//! A define written `NAME=VALUE` becomes a constant instead, `const NAME: u32 = VALUEu;` in the
//! header (sizes a kernel unrolls by, such as attention's columns per invocation).
//!
//! The header defines `act` (the activation element type: `f32`, or `f16` with `enable f16;`)
//! and the define `ACT_F16` for the f16 path. Kernels accumulate in f32 either way.

use crate::tensor::DType;

pub const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
pub const ELEMENTWISE: &str = include_str!("../../../shaders/elementwise.wgsl");
pub const NORM: &str = include_str!("../../../shaders/norm.wgsl");
pub const ATTENTION: &str = include_str!("../../../shaders/attention.wgsl");
pub const ATTENTION_ROWS: &str = include_str!("../../../shaders/attention_rows.wgsl");
pub const LAYOUT: &str = include_str!("../../../shaders/layout.wgsl");
pub const REGION: &str = include_str!("../../../shaders/region.wgsl");
pub const EMBEDDING: &str = include_str!("../../../shaders/embedding.wgsl");
pub const IMAGE: &str = include_str!("../../../shaders/image.wgsl");
pub const NAIVE: &str = include_str!("../../../shaders/naive.wgsl");
pub const WORKGROUP_REDUCE: &str = include_str!("../../../shaders/workgroup_reduce.wgsl");
pub const WEIGHT_LOAD: &str = include_str!("../../../shaders/weight_load.wgsl");

/// (file name, source) of every shader.
pub const ALL: &[(&str, &str)] = &[
    ("matmul.wgsl", MATMUL),
    ("elementwise.wgsl", ELEMENTWISE),
    ("norm.wgsl", NORM),
    ("attention.wgsl", ATTENTION),
    ("attention_rows.wgsl", ATTENTION_ROWS),
    ("layout.wgsl", LAYOUT),
    ("region.wgsl", REGION),
    ("embedding.wgsl", EMBEDDING),
    ("image.wgsl", IMAGE),
    ("naive.wgsl", NAIVE),
    ("weight_load.wgsl", WEIGHT_LOAD),
    ("workgroup_reduce.wgsl", WORKGROUP_REDUCE),
];

/// Files that are only ever included into other shaders, never compiled alone.
pub const PIECES: &[&str] = &["weight_load.wgsl", "workgroup_reduce.wgsl"];

/// One compilable variant: a source, the activation type and the defines switched on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant {
    pub file: &'static str,
    pub act: DType,
    pub defines: Vec<&'static str>,
    pub entry: &'static str,
}

impl Variant {
    pub fn new(file: &'static str, act: DType, defines: &[&'static str]) -> Variant {
        let mut defines = defines.to_vec();
        defines.sort_unstable();
        Variant { file, act, defines, entry: "main" }
    }

    pub fn entry(mut self, entry: &'static str) -> Variant {
        self.entry = entry;
        self
    }

    /// The cache key: file, activation type, defines, entry point.
    pub fn key(&self) -> String {
        format!("{}:{:?}:{}:{}", self.file, self.act, self.defines.join("+"), self.entry)
    }

    pub fn source(&self) -> Result<String, String> {
        let (_, text) = ALL
            .iter()
            .find(|(name, _)| *name == self.file)
            .ok_or_else(|| format!("no shader named {}", self.file))?;
        let mut defines = self.defines.clone();
        let header = match self.act {
            DType::F32 => "alias act = f32;\n",
            DType::F16 => {
                defines.push("ACT_F16");
                "enable f16;\nalias act = f16;\n"
            }
        };
        let mut constants = String::new();
        for define in &defines {
            if let Some((name, value)) = define.split_once('=') {
                let value: u32 =
                    value.parse().map_err(|_| format!("define {define:?}: the value must be a u32"))?;
                constants.push_str(&format!("const {name}: u32 = {value}u;\n"));
            }
        }
        Ok(format!("{header}{constants}{}", preprocess(text, &defines)?))
    }
}

/// Keeps the lines whose `#if` conditions hold; directive lines and dropped lines become empty
/// lines, so line numbers in compiler errors still match the file (up to the first `#for`).
///
/// `#for C in COUNT` … `#endfor` repeats the lines between for C = 0 … COUNT − 1, with `{C}`
/// replaced by the number, where COUNT is a number or a `NAME=VALUE` define: unrolling by the
/// preprocessor, so per-invocation accumulators are separate variables and never an indexed
/// private array (which drivers may place in slow local memory).
pub fn preprocess(source: &str, defines: &[&str]) -> Result<String, String> {
    let unrolled = unroll(source, defines)?;
    conditionals(&unrolled, defines)
}

fn unroll(source: &str, defines: &[&str]) -> Result<String, String> {
    let mut out = String::with_capacity(source.len());
    let mut lines = source.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(spec) = line.trim_start().strip_prefix("#for ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let bad = || format!("line {}: expected `#for NAME in COUNT`, got {line:?}", number + 1);
        let (name, count) = spec.split_once(" in ").ok_or_else(bad)?;
        let (name, count) = (name.trim(), count.trim());
        let count: usize = match count.parse() {
            Ok(n) => n,
            Err(_) => defines
                .iter()
                .find_map(|d| d.strip_prefix(count).and_then(|rest| rest.strip_prefix('=')))
                .ok_or_else(|| format!("line {}: #for over {count:?}, which no define gives", number + 1))?
                .parse()
                .map_err(|_| bad())?,
        };
        let mut body = Vec::new();
        loop {
            let (_, inner) =
                lines.next().ok_or_else(|| format!("line {}: #for without #endfor", number + 1))?;
            let trimmed = inner.trim_start();
            if trimmed.starts_with("#endfor") {
                break;
            }
            if trimmed.starts_with("#for ") {
                return Err(format!("line {}: #for blocks do not nest", number + 1));
            }
            body.push(inner);
        }
        let placeholder = format!("{{{name}}}");
        for i in 0..count {
            for inner in &body {
                out.push_str(&inner.replace(&placeholder, &i.to_string()));
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn conditionals(source: &str, defines: &[&str]) -> Result<String, String> {
    // Each open #if: (this branch is taken, the enclosing region is active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut out = String::with_capacity(source.len());
    for (number, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let active = stack.last().map_or(true, |&(taken, outer)| taken && outer);
        if let Some(cond) = trimmed.strip_prefix("#if ") {
            let cond = cond.trim();
            let value = match cond.strip_prefix('!') {
                Some(name) => !defines.contains(&name.trim()),
                None => defines.contains(&cond),
            };
            stack.push((value, active));
        } else if trimmed.starts_with("#else") {
            let top = stack.last_mut().ok_or(format!("line {}: #else without #if", number + 1))?;
            top.0 = !top.0;
        } else if trimmed.starts_with("#endif") {
            stack.pop().ok_or(format!("line {}: #endif without #if", number + 1))?;
        } else if let Some(name) = trimmed.strip_prefix("#include ") {
            if active {
                let (_, text) = ALL
                    .iter()
                    .find(|(file, _)| *file == name.trim())
                    .ok_or_else(|| format!("line {}: no shader {name:?} to include", number + 1))?;
                out.push_str(&preprocess(text, defines)?);
            }
        } else if trimmed.starts_with('#') {
            return Err(format!("line {}: unknown directive {trimmed:?}", number + 1));
        } else if active {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !stack.is_empty() {
        return Err("#if without #endif".into());
    }
    Ok(out)
}

/// Every variant any op can request, for validation.
pub fn all_variants() -> Vec<Variant> {
    let mut all = crate::ops::matmul::variants();
    all.extend(crate::ops::elementwise::variants());
    all.extend(crate::ops::norm::variants());
    all.extend(crate::ops::attention::variants());
    all.extend(crate::ops::layout::variants());
    all.extend(crate::ops::region::variants());
    all.extend(crate::ops::embedding::variants());
    all.extend(crate::ops::image::variants());
    all.extend(crate::ops::naive::variants());
    all.extend(crate::ops::attention::rows_variants());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_keeps_the_taken_branches_and_line_count() {
        let src = "a\n#if X\nb\n#if !Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf";
        let with_x = preprocess(src, &["X"]).unwrap();
        assert_eq!(with_x.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(), ["a", "b", "c", "f"]);
        assert_eq!(with_x.lines().count(), src.lines().count());
        let with_xy = preprocess(src, &["X", "Y"]).unwrap();
        assert_eq!(with_xy.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(), ["a", "b", "d", "f"]);
        let none = preprocess(src, &[]).unwrap();
        assert_eq!(none.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(), ["a", "e", "f"]);
    }

    #[test]
    fn preprocessor_rejects_unbalanced_and_unknown_directives() {
        assert!(preprocess("#if X\na", &[]).is_err());
        assert!(preprocess("#endif", &[]).is_err());
        assert!(preprocess("#else", &[]).is_err());
        assert!(preprocess("#define X", &[]).is_err());
    }

    #[test]
    fn for_repeats_its_lines_with_the_index() {
        let src = "a\n#for C in COLS\nx{C} = {C}u;\n#if Y\ny{C}\n#endif\n#endfor\nb";
        let text = preprocess(src, &["COLS=3", "Y"]).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(kept, ["a", "x0 = 0u;", "y0", "x1 = 1u;", "y1", "x2 = 2u;", "y2", "b"]);
        let literal = preprocess("#for I in 2\n{I}\n#endfor", &[]).unwrap();
        assert_eq!(literal.lines().collect::<Vec<_>>(), ["0", "1"]);
        assert!(preprocess("#for C in COLS\nx\n#endfor", &[]).is_err(), "no COLS define");
        assert!(preprocess("#for C in 2\nx", &[]).is_err(), "no #endfor");
        assert!(preprocess("#for C in 2\n#for D in 2\n#endfor\n#endfor", &[]).is_err(), "nested");
        assert!(preprocess("#for C\n#endfor", &[]).is_err(), "no count");
    }

    #[test]
    fn include_inlines_a_shared_piece_with_the_same_defines() {
        let text = preprocess("#if W_F16\n#include weight_load.wgsl\n#endif", &["W_F16"]).unwrap();
        assert!(text.contains("fn load_weight") && text.contains("unpack2x16float"));
        assert!(!text.contains("extractBits"), "other formats' branches must be dropped");
        assert!(preprocess("#include nope.wgsl", &[]).is_err());
        assert!(!preprocess("#if X\n#include nope.wgsl\n#endif", &[]).unwrap().contains("load_weight"));
    }

    #[test]
    fn f16_variants_enable_f16() {
        let v = Variant::new("matmul.wgsl", DType::F16, &["B_ACT"]);
        assert!(v.source().unwrap().starts_with("enable f16;\nalias act = f16;"));
        assert!(Variant::new("nope.wgsl", DType::F32, &[]).source().is_err());
    }
}
