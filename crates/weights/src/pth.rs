//! PyTorch `.pth` / `.pt` state dicts (`torch.save` since 1.6: a zip with `*/data.pkl` and one
//! `*/data/<key>` entry per storage), read without running anything: the pickle is interpreted
//! by a small machine that knows only what a state dict is made of — dicts (`OrderedDict`
//! included), lists, tuples, strings, numbers, storages (persistent ids) and
//! `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`. Any other global, any call of
//! anything else, compressed or malformed zips, sizes past the data: refused with the reason.
//! [`StateDict::to_safetensors`] turns the tensors into a safetensors file the rest of the
//! engine reads.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PthError {
    #[error("not a PyTorch zip checkpoint: {0}")]
    NotZip(String),
    #[error("the checkpoint's pickle is malformed: {0}")]
    Malformed(String),
    #[error("refused: the checkpoint's pickle uses {0}, which a state dict never needs (it could run code)")]
    Refused(String),
    #[error("the checkpoint holds no tensors{0}")]
    Empty(String),
}

fn malformed<T>(what: impl Into<String>) -> Result<T, PthError> {
    Err(PthError::Malformed(what.into()))
}

/// Limits that keep a hostile file from exhausting memory or time.
const MAX_ENTRIES: usize = 100_000;
const MAX_STACK: usize = 1_000_000;
const MAX_DIMS: usize = 16;

// ---------------------------------------------------------------- zip (stored entries only)

fn u16_at(b: &[u8], at: usize) -> Result<u16, PthError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(PthError::NotZip("truncated".into()))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PthError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(PthError::NotZip("truncated".into()))
}

/// The entries of a zip whose members are stored (PyTorch writes them uncompressed): name →
/// byte range in `bytes`.
fn zip_entries(bytes: &[u8]) -> Result<HashMap<String, std::ops::Range<usize>>, PthError> {
    let bad = |what: &str| PthError::NotZip(what.to_string());
    if bytes.len() < 22 || &bytes[..4] != b"PK\x03\x04" {
        return Err(bad(if bytes.starts_with(b"\x80\x02") {
            "the legacy (pre-1.6) torch.save format is not supported; re-save it with a current PyTorch or use .safetensors"
        } else {
            "no zip signature"
        }));
    }
    // The end-of-central-directory record, within the last 64 KiB + 22 bytes.
    let floor = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (floor..=bytes.len() - 22)
        .rev()
        .find(|&i| &bytes[i..i + 4] == b"PK\x05\x06")
        .ok_or_else(|| bad("no end of central directory (truncated?)"))?;
    let count = u16_at(bytes, eocd + 10)? as usize;
    let mut at = u32_at(bytes, eocd + 16)? as usize;
    if count == 0xffff || at == 0xffff_ffff {
        return Err(bad("zip64 archives are not supported"));
    }
    let mut entries = HashMap::new();
    for _ in 0..count {
        if bytes.get(at..at + 4) != Some(b"PK\x01\x02") {
            return Err(bad("a damaged central directory"));
        }
        let method = u16_at(bytes, at + 10)?;
        let compressed = u32_at(bytes, at + 20)? as usize;
        let size = u32_at(bytes, at + 24)? as usize;
        let name_len = u16_at(bytes, at + 28)? as usize;
        let extra_len = u16_at(bytes, at + 30)? as usize;
        let comment_len = u16_at(bytes, at + 32)? as usize;
        let local = u32_at(bytes, at + 42)? as usize;
        let name = bytes.get(at + 46..at + 46 + name_len).ok_or_else(|| bad("truncated"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if method != 0 || compressed != size {
            return Err(bad(&format!(
                "entry {name} is compressed (method {method}); PyTorch stores entries"
            )));
        }
        if bytes.get(local..local + 4) != Some(b"PK\x03\x04") {
            return Err(bad(&format!("entry {name} points outside the file")));
        }
        let start = local + 30 + u16_at(bytes, local + 26)? as usize + u16_at(bytes, local + 28)? as usize;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad(&format!("entry {name} is truncated")))?;
        entries.insert(name, start..end);
        at += 46 + name_len + extra_len + comment_len;
        if entries.len() > MAX_ENTRIES {
            return Err(bad("too many entries"));
        }
    }
    Ok(entries)
}

// ---------------------------------------------------------------- pickle

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn from_storage(name: &str) -> Option<Dtype> {
        Some(match name {
            "FloatStorage" => Dtype::F32,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::BF16,
            "DoubleStorage" => Dtype::F64,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A callable this reader knows.
    Global(&'static str),
    StorageType(Dtype),
    Storage {
        dtype: Dtype,
        key: String,
    },
    Tensor(Tensor),
    Mark,
}

/// A tensor as the pickle describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    /// The storage's entry key (`data/<key>`).
    pub storage: String,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

const ALLOWED: [(&str, &str, &str); 4] = [
    ("collections", "OrderedDict", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2", "rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter", "rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state", "rebuild_parameter"),
];

fn global(module: &str, name: &str) -> Result<Value, PthError> {
    if let Some((_, _, id)) = ALLOWED.iter().find(|(m, n, _)| *m == module && *n == name) {
        return Ok(Value::Global(id));
    }
    if module == "torch" {
        if let Some(dtype) = Dtype::from_storage(name) {
            return Ok(Value::StorageType(dtype));
        }
    }
    Err(PthError::Refused(format!("{module}.{name}")))
}

fn int(v: &Value) -> Result<usize, PthError> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => malformed(format!("expected a size, got {other:?}")),
    }
}

fn ints(v: &Value) -> Result<Vec<usize>, PthError> {
    match v {
        Value::Tuple(items) | Value::List(items) if items.len() <= MAX_DIMS => {
            items.iter().map(int).collect()
        }
        other => malformed(format!("expected a shape, got {other:?}")),
    }
}

fn call(callable: Value, args: Value) -> Result<Value, PthError> {
    let Value::Tuple(args) = args else { return malformed("call arguments are not a tuple") };
    match callable {
        Value::Global("OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new())),
        Value::Global("rebuild_tensor") if args.len() >= 4 => {
            let Value::Storage { dtype, key } = &args[0] else {
                return malformed("a tensor without a storage");
            };
            let shape = ints(&args[2])?;
            let stride = ints(&args[3])?;
            if stride.len() != shape.len() {
                return malformed("a tensor's shape and stride differ in length");
            }
            Ok(Value::Tensor(Tensor {
                dtype: *dtype,
                storage: key.clone(),
                offset: int(&args[1])?,
                shape,
                stride,
            }))
        }
        Value::Global("rebuild_parameter") if !args.is_empty() => match &args[0] {
            Value::Tensor(_) => Ok(args[0].clone()),
            _ => malformed("a parameter without a tensor"),
        },
        other => malformed(format!("a call of {other:?} with {} arguments", args.len())),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PthError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else { return malformed("the pickle ends early") };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PthError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, PthError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    fn line(&mut self) -> Result<String, PthError> {
        let rest = &self.b[self.at..];
        let n = rest.iter().take(256).position(|&c| c == b'\n');
        let Some(n) = n else { return malformed("an unterminated global name") };
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.at += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> Result<String, PthError> {
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| PthError::Malformed("a string is not UTF-8".into()))
    }
}

/// Runs the pickle; returns its result.
fn unpickle(bytes: &[u8]) -> Result<Value, PthError> {
    let mut r = Reader { b: bytes, at: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or(PthError::Malformed("the stack is empty".into()));
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, PthError> {
        let Some(m) = stack.iter().rposition(|v| *v == Value::Mark) else { return malformed("no mark") };
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        if stack.len() > MAX_STACK || memo.len() > MAX_STACK {
            return malformed("too deep");
        }
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.take(8)?; // FRAME
            }
            b'.' => return pop(&mut stack),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => {
                let s = r.take(2)?;
                stack.push(Value::Int(u16::from_le_bytes([s[0], s[1]]) as i64))
            }
            b'J' => {
                let s = r.take(4)?;
                stack.push(Value::Int(i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64))
            }
            0x8a => {
                let n = r.u8()? as usize;
                let s = r.take(n)?;
                if n > 8 {
                    return malformed("an integer wider than 64 bits");
                }
                let mut v: i64 = 0;
                for (i, &b) in s.iter().enumerate() {
                    v |= (b as i64) << (8 * i);
                }
                if n > 0 && n < 8 && s[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let s = r.take(8)?;
                stack.push(Value::Float(f64::from_be_bytes(s.try_into().expect("8 bytes"))));
            }
            b'X' => {
                let n = r.u32()?;
                stack.push(Value::Str(r.text(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.text(n)?));
            }
            b'q' => {
                let k = r.u8()? as usize;
                memo.insert(k, stack.last().cloned().ok_or(PthError::Malformed("memo of nothing".into()))?);
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(k, stack.last().cloned().ok_or(PthError::Malformed("memo of nothing".into()))?);
            }
            0x94 => {
                let k = memo.len();
                memo.insert(k, stack.last().cloned().ok_or(PthError::Malformed("memo of nothing".into()))?);
            }
            b'h' | b'j' => {
                let k = if op == b'h' { r.u8()? as usize } else { r.u32()? };
                stack.push(memo.get(&k).cloned().ok_or(PthError::Malformed(format!("memo {k} unset")))?);
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(global(&module, &name)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(global(&m, &n)?),
                    _ => return malformed("a stack global without names"),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return malformed("a tuple of missing items");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'Q' => {
                // BINPERSID: ('storage', storage type, key, location, numel)
                let pid = pop(&mut stack)?;
                let Value::Tuple(parts) = pid else {
                    return malformed("a persistent id that is not a tuple");
                };
                match parts.as_slice() {
                    [Value::Str(kind), Value::StorageType(dtype), Value::Str(key), _, _]
                        if kind == "storage" =>
                    {
                        stack.push(Value::Storage { dtype: *dtype, key: key.clone() })
                    }
                    _ => return malformed("a persistent id that is not a storage"),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(call(callable, args)?);
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return malformed("an item set on something that is not a dict"),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                let Some(Value::Dict(d)) = stack.last_mut() else {
                    return malformed("items set on a non-dict");
                };
                if items.len() % 2 != 0 {
                    return malformed("an odd number of dict items");
                }
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return malformed("an append to a non-list"),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return malformed("appends to a non-list"),
                }
            }
            b'b' => {
                // BUILD: only the state an OrderedDict or a tensor may carry: none, or the
                // `_metadata` (module versions) `state_dict()` attaches. It is dropped here;
                // nothing runs.
                let state = pop(&mut stack)?;
                let harmless = match &state {
                    Value::None => true,
                    Value::Dict(d) => d.iter().all(|(k, _)| *k == Value::Str("_metadata".into())),
                    _ => false,
                };
                if !harmless {
                    return Err(PthError::Refused("object state (BUILD)".into()));
                }
            }
            other => return Err(PthError::Refused(format!("pickle opcode 0x{other:02x}"))),
        }
    }
}

// ---------------------------------------------------------------- state dicts

/// The tensors of a checkpoint, by name, with the bytes of their storages.
pub struct StateDict {
    pub tensors: Vec<(String, Tensor)>,
    storages: HashMap<String, Vec<u8>>,
}

impl StateDict {
    /// Reads a `torch.save` zip. The tensors are the top-level dict's, or where the file nests
    /// them (`params_ema`, else `params`, `state_dict`, `model`: as training frameworks save
    /// them, the EMA weights first, as spandrel picks them).
    pub fn from_bytes(bytes: &[u8]) -> Result<StateDict, PthError> {
        let entries = zip_entries(bytes)?;
        let pickle = entries
            .iter()
            .filter(|(name, _)| name.ends_with("data.pkl") && name.matches('/').count() == 1)
            .min_by_key(|(name, _)| name.len())
            .ok_or(PthError::NotZip("no data.pkl".into()))?;
        let prefix = pickle.0.trim_end_matches("data.pkl").to_string();
        let root = unpickle(&bytes[pickle.1.clone()])?;
        let mut dict = match root {
            Value::Dict(d) => d,
            other => return malformed(format!("the checkpoint is a {other:?}, not a dict")),
        };
        // (A1111's textual-inversion files keep their vectors in `string_to_param`.)
        for key in ["params_ema", "params", "state_dict", "model", "string_to_param"] {
            let nested =
                dict.iter().find(|(k, v)| *k == Value::Str(key.into()) && matches!(v, Value::Dict(_)));
            if let Some((_, Value::Dict(inner))) = nested {
                dict = inner.clone();
                break;
            }
        }
        let mut tensors = Vec::new();
        let mut storages = HashMap::new();
        for (k, v) in dict {
            let (Value::Str(name), Value::Tensor(t)) = (k, v) else { continue };
            if !storages.contains_key(&t.storage) {
                let path = format!("{prefix}data/{}", t.storage);
                let range = entries.get(&path).ok_or_else(|| PthError::NotZip(format!("no {path}")))?;
                storages.insert(t.storage.clone(), bytes[range.clone()].to_vec());
            }
            let storage = &storages[&t.storage];
            // The furthest element the view reads must be inside the storage.
            let last = t.shape.iter().zip(&t.stride).try_fold(t.offset, |acc, (&n, &s)| {
                if n == 0 {
                    Some(acc)
                } else {
                    acc.checked_add((n - 1).checked_mul(s)?)
                }
            });
            let fits = t.shape.contains(&0)
                || last
                    .and_then(|l| l.checked_add(1)?.checked_mul(t.dtype.size()))
                    .is_some_and(|end| end <= storage.len());
            if !fits {
                return malformed(format!("tensor {name} reaches past its storage"));
            }
            // No broadcast (stride 0) views: a tensor has at most its storage's elements, so a
            // forged shape cannot ask for more memory than the file holds.
            let elements = t.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if elements.is_none_or(|n| n > storage.len() / t.dtype.size()) {
                return malformed(format!("tensor {name} has more elements than its storage"));
            }
            tensors.push((name, t));
        }
        if tensors.is_empty() {
            return Err(PthError::Empty(" (a checkpoint of something other than weights?)".into()));
        }
        Ok(StateDict { tensors, storages })
    }

    /// A tensor's elements in row-major order, as little-endian bytes.
    pub fn contiguous_bytes(&self, t: &Tensor) -> Vec<u8> {
        let storage = &self.storages[&t.storage];
        let size = t.dtype.size();
        let count: usize = t.shape.iter().product();
        let mut out = Vec::with_capacity(count * size);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..count {
            let at = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[at * size..(at + 1) * size]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }

    /// A float tensor's elements as f32 in row-major order; `None` for integer and bool tensors.
    pub fn to_f32(&self, t: &Tensor) -> Option<Vec<f32>> {
        let bytes = self.contiguous_bytes(t);
        Some(match t.dtype.name() {
            "F32" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            "F16" => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            "BF16" => {
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            _ => return None,
        })
    }

    /// Every tensor as a safetensors file (names as in the checkpoint).
    pub fn to_safetensors(&self) -> Vec<u8> {
        let tensors: Vec<(String, &str, Vec<u64>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    t.dtype.name(),
                    t.shape.iter().map(|&d| d as u64).collect(),
                    self.contiguous_bytes(t),
                )
            })
            .collect();
        crate::safetensors::write(&tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_outside_the_state_dict_vocabulary_are_refused() {
        for (m, n) in [("os", "system"), ("builtins", "eval"), ("torch", "load"), ("collections", "deque")] {
            assert_eq!(global(m, n), Err(PthError::Refused(format!("{m}.{n}"))));
        }
        assert_eq!(global("torch", "HalfStorage"), Ok(Value::StorageType(Dtype::F16)));
    }

    #[test]
    fn a_hand_made_pickle_with_a_reduce_of_a_refused_global_runs_nothing() {
        // cos\nsystem\n(S'echo'\ntR.  (protocol 0 GLOBAL, then a call)
        let pickle = b"cos\nsystem\n(X\x04\x00\x00\x00echotR.";
        assert_eq!(unpickle(pickle), Err(PthError::Refused("os.system".into())));
        assert!(matches!(unpickle(b"}(X\x01\x00\x00\x00a"), Err(PthError::Malformed(_))), "truncated");
        assert!(matches!(unpickle(b"\x80\x02}q\x00."), Ok(Value::Dict(_))));
    }

    #[test]
    fn non_zips_and_legacy_files_say_what_they_are() {
        assert!(matches!(StateDict::from_bytes(b"hello"), Err(PthError::NotZip(_))));
        let legacy = [&b"\x80\x02"[..], &[0u8; 40]].concat();
        let e = StateDict::from_bytes(&legacy).err().unwrap().to_string();
        assert!(e.contains("legacy"), "{e}");
    }
}
