//! A1111's prompt attention syntax: `(word)` ×1.1, `[word]` ÷1.1, `(word:1.3)` an explicit
//! weight, `\(` `\)` `\[` `\]` literal brackets, and `BREAK` to start a new 75-token chunk.
//! Parsed into runs of text with weights, the way A1111's `parse_prompt_attention` does —
//! including its handling of unbalanced brackets — so prompts copied from A1111 weigh the same.

/// A run of prompt text and its attention weight. `Break` starts a new 75-token chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String, f64),
    Break,
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// One lexical token, matched in the same order of alternatives as A1111's regular expression.
enum Token<'a> {
    /// `\(`, `\)`, `\[`, `\]`, `\\` or a lone `\`: the text after the backslash, literally.
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:1.3)` closing a round bracket with a weight; the whole match kept for when no bracket is open.
    Weight(f64, &'a str),
    CloseRound,
    CloseSquare,
    Text(&'a str),
}

fn next_token(s: &str) -> (Token<'_>, usize) {
    let bytes = s.as_bytes();
    match bytes[0] {
        b'\\' => match bytes.get(1) {
            Some(b'(' | b')' | b'[' | b']' | b'\\') => (Token::Escaped(&s[1..2]), 2),
            _ => (Token::Escaped(""), 1),
        },
        b'(' => (Token::OpenRound, 1),
        b'[' => (Token::OpenSquare, 1),
        b':' => match weight_close(s) {
            Some((w, len)) => (Token::Weight(w, &s[..len]), len),
            None => (Token::Text(":"), 1),
        },
        b')' => (Token::CloseRound, 1),
        b']' => (Token::CloseSquare, 1),
        _ => {
            let len = s.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(s.len());
            (Token::Text(&s[..len]), len)
        }
    }
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`: (weight, match length).
fn weight_close(s: &str) -> Option<(f64, usize)> {
    let rest = &s[1..];
    let after_space = rest.trim_start();
    let mut i = s.len() - after_space.len();
    let number_start = i;
    let bytes = s.as_bytes();
    if matches!(bytes.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits_start = i;
    while matches!(bytes.get(i), Some(b'0'..=b'9' | b'.')) {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    let number = &s[number_start..i];
    let after_number = s[i..].trim_start();
    let close = s.len() - after_number.len();
    if !after_number.starts_with(')') {
        return None;
    }
    // A1111 calls float() on the match; a malformed number such as "1.2.3" makes it fail there.
    number.parse::<f64>().ok().map(|w| (w, close + 1))
}

/// A parsed run; `None` weight marks a BREAK.
type Run = (String, Option<f64>);

/// Splits text on `BREAK` as a whole word with the whitespace around it (A1111's
/// `\s*\bBREAK\b\s*`). Unlike A1111, a BREAK inside brackets still breaks (A1111 weighs its
/// marker and then no longer recognises it).
fn push_text(out: &mut Vec<Run>, text: &str) {
    let mut rest = text;
    loop {
        match find_break(rest) {
            Some((start, end)) => {
                out.push((rest[..start].to_string(), Some(1.0)));
                out.push((String::new(), None));
                rest = &rest[end..];
            }
            None => {
                out.push((rest.to_string(), Some(1.0)));
                return;
            }
        }
    }
}

fn find_break(s: &str) -> Option<(usize, usize)> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = s[from..].find("BREAK").map(|p| p + from) {
        let before_ok = s[..pos].chars().next_back().is_none_or(|c| !is_word(c));
        let after_ok = s[pos + 5..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            let start = s[..pos].trim_end().len();
            let end = s.len() - s[pos + 5..].trim_start().len();
            return Some((start, end));
        }
        from = pos + 5;
    }
    None
}

/// Parses a prompt into weighted runs, merging neighbours of equal weight.
pub fn parse(prompt: &str) -> Vec<Piece> {
    let mut res: Vec<Run> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<Run>, from: usize, by: f64| {
        for (_, weight) in &mut res[from..] {
            if let Some(w) = weight {
                *w *= by;
            }
        }
    };
    let mut rest = prompt;
    while !rest.is_empty() {
        let (token, len) = next_token(rest);
        match token {
            Token::Escaped(text) => res.push((text.to_string(), Some(1.0))),
            Token::OpenRound => round.push(res.len()),
            Token::OpenSquare => square.push(res.len()),
            Token::Weight(w, _) if !round.is_empty() => {
                let from = round.pop().unwrap_or(0);
                multiply(&mut res, from, w);
            }
            Token::CloseRound if !round.is_empty() => {
                let from = round.pop().unwrap_or(0);
                multiply(&mut res, from, ROUND);
            }
            Token::CloseSquare if !square.is_empty() => {
                let from = square.pop().unwrap_or(0);
                multiply(&mut res, from, SQUARE);
            }
            Token::Weight(_, text) | Token::Text(text) => push_text(&mut res, text),
            Token::CloseRound => push_text(&mut res, ")"),
            Token::CloseSquare => push_text(&mut res, "]"),
        }
        rest = &rest[len..];
    }
    // Unclosed brackets still apply, from where they opened to the end.
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), Some(1.0)));
    }
    let mut merged: Vec<Piece> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match (merged.last_mut(), weight) {
            (Some(Piece::Text(last, w)), Some(weight)) if *w == weight => last.push_str(&text),
            (_, Some(weight)) => merged.push(Piece::Text(text, weight)),
            (_, None) => merged.push(Piece::Break),
        }
    }
    merged
}

/// A LoRA a prompt asks for with A1111's `<lora:name>` or `<lora:name:scale>` (scale 1 when
/// left out; `<lyco:…>` is read the same way).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    pub name: String,
    pub scale: f32,
}

/// The prompt without its `<lora:…>` tags (which A1111 removes before encoding: they choose
/// weights, they are not words), and the tags in order. A malformed tag (no name, a scale that
/// is not a number) stays in the text.
pub fn extract_loras(prompt: &str) -> (String, Vec<LoraTag>) {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            text.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let inner = &after[..close];
        let tag = inner.split_once(':').and_then(|(kind, args)| {
            if kind != "lora" && kind != "lyco" {
                return None;
            }
            let mut parts = args.splitn(2, ':');
            let name = parts.next()?.trim();
            let scale = match parts.next() {
                // A1111 allows `name:te_scale:unet_scale`; the first number is the strength.
                Some(s) => s.split(':').next()?.trim().parse::<f32>().ok()?,
                None => 1.0,
            };
            (!name.is_empty()).then(|| LoraTag { name: name.to_string(), scale })
        });
        match tag {
            Some(tag) => tags.push(tag),
            None => text.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    text.push_str(rest);
    (text, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str, weight: f64) -> Piece {
        Piece::Text(text.into(), weight)
    }

    // The examples in A1111's `parse_prompt_attention` docstring (modules/prompt_parser.py),
    // with its float results written as A1111 prints them.
    #[test]
    fn a1111_documented_examples() {
        assert_eq!(parse("normal text"), [t("normal text", 1.0)]);
        assert_eq!(parse("an (important) word"), [t("an ", 1.0), t("important", 1.1), t(" word", 1.0)]);
        assert_eq!(parse("(unbalanced"), [t("unbalanced", 1.1)]);
        assert_eq!(parse("\\(literal\\]"), [t("(literal]", 1.0)]);
        assert_eq!(parse("(unnecessary)(parens)"), [t("unnecessaryparens", 1.1)]);
        assert_eq!(
            parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            [
                t("a ", 1.0),
                t("house", 1.5730000000000004),
                t(" ", 1.1),
                t("on", 1.0),
                t(" a ", 1.1),
                t("hill", 0.55),
                t(", sun, ", 1.1),
                t("sky", 1.4641000000000006),
                t(".", 1.1),
            ]
        );
    }

    #[test]
    fn breaks_split_chunks_and_weights_survive_them() {
        assert_eq!(parse("a cat BREAK a dog"), [t("a cat", 1.0), Piece::Break, t("a dog", 1.0)]);
        assert_eq!(parse("BREAKFAST"), [t("BREAKFAST", 1.0)]);
        assert_eq!(parse("(red BREAK blue:1.2)"), [t("red", 1.2), Piece::Break, t("blue", 1.2)]);
    }

    #[test]
    fn stray_closers_colons_and_empty_prompts_are_text() {
        assert_eq!(parse("a) b] c: d"), [t("a) b] c: d", 1.0)]);
        assert_eq!(parse("ratio 16:9"), [t("ratio 16:9", 1.0)]);
        assert_eq!(parse("[faded]"), [t("faded", 1.0 / 1.1)]);
        assert_eq!(parse("(x:-0.5)"), [t("x", -0.5)]);
        assert_eq!(parse(""), [t("", 1.0)]);
        assert_eq!(parse("weight:1.2) alone"), [t("weight:1.2) alone", 1.0)]);
    }

    #[test]
    fn lora_tags_are_taken_out_of_the_prompt() {
        let (text, tags) = extract_loras("a castle <lora:watercolor:0.7>, (sunset:1.2) <lyco:ink> <b>");
        assert_eq!(text, "a castle , (sunset:1.2)  <b>");
        assert_eq!(
            tags,
            vec![
                LoraTag { name: "watercolor".into(), scale: 0.7 },
                LoraTag { name: "ink".into(), scale: 1.0 }
            ]
        );
        let (text, tags) = extract_loras("<lora::1> <lora:x:big> <lora:y:0.5:0.2> <lora:unclosed");
        assert_eq!(text, "<lora::1> <lora:x:big>  <lora:unclosed");
        assert_eq!(tags, vec![LoraTag { name: "y".into(), scale: 0.5 }]);
    }
}
