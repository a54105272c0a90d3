//! Prompt styles in A1111's `styles.csv`: a header row naming the columns `name`, `prompt` (or
//! `text`, the old format) and `negative_prompt`, then one style a row; read as A1111 reads it
//! (a UTF-8 byte-order mark skipped, spaces after a comma skipped, quoted fields with commas,
//! doubled quotes and line breaks, rows whose name is empty or starts with `#` skipped) and
//! written as it writes it (`name,prompt,negative_prompt`, quotes only where needed, CRLF).
//!
//! Applying a style: where the style's text has `{prompt}`, the prompt goes there; otherwise the
//! style is appended after ", " (empty parts left out) — for the prompt and the negative prompt
//! alike, one style after another.

/// One style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Style {
    pub name: String,
    pub prompt: String,
    pub negative_prompt: String,
}

/// Styles by name, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Styles {
    styles: Vec<Style>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StyleError {
    #[error(
        "the styles file has no `name` column (its first row names the columns: name,prompt,negative_prompt)"
    )]
    NoNameColumn,
    #[error("no style called {name:?}; the styles file has: {known}")]
    Unknown { name: String, known: String },
}

/// Python's csv reader (the excel dialect with `skipinitialspace`): rows of fields.
fn read_rows(text: &str) -> Vec<Vec<String>> {
    #[derive(PartialEq)]
    enum State {
        Start,
        Field,
        Quoted,
        QuoteInQuoted,
    }
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = State::Start;
    let mut chars = text.chars().peekable();
    let mut in_record = false;
    while let Some(c) = chars.next() {
        let end_of_line = c == '\n' || c == '\r';
        match state {
            State::Quoted => {
                if c == '"' {
                    state = State::QuoteInQuoted;
                } else {
                    field.push(c);
                }
                continue;
            }
            State::QuoteInQuoted if c == '"' => {
                field.push('"');
                state = State::Quoted;
                continue;
            }
            _ => {}
        }
        if end_of_line {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            if in_record {
                row.push(std::mem::take(&mut field));
            }
            rows.push(std::mem::take(&mut row));
            in_record = false;
            state = State::Start;
            continue;
        }
        in_record = true;
        match state {
            State::Start if c == ' ' => {}
            State::Start if c == '"' => state = State::Quoted,
            _ if c == ',' => {
                row.push(std::mem::take(&mut field));
                state = State::Start;
            }
            _ => {
                field.push(c);
                state = State::Field;
            }
        }
    }
    if in_record {
        row.push(field);
        rows.push(row);
    }
    // Blank lines are no rows.
    rows.retain(|r| !r.is_empty());
    rows
}

/// A field as Python's csv writer writes it (QUOTE_MINIMAL).
fn write_field(field: &str, out: &mut String) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// A1111's merge: `{prompt}` in the style takes the prompt; otherwise "prompt, style".
pub fn merge(style: &str, prompt: &str) -> String {
    if style.contains("{prompt}") {
        style.replace("{prompt}", prompt)
    } else {
        [prompt.trim(), style.trim()].into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join(", ")
    }
}

impl Styles {
    /// A `styles.csv`'s text.
    pub fn parse_csv(text: &str) -> Result<Styles, StyleError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rows = read_rows(text).into_iter();
        let Some(header) = rows.next() else { return Ok(Styles::default()) };
        let column = |name: &str| header.iter().position(|h| h == name);
        let name_col = column("name").ok_or(StyleError::NoNameColumn)?;
        let prompt_col = column("prompt").or_else(|| column("text"));
        let negative_col = column("negative_prompt");
        let mut styles = Styles::default();
        for row in rows {
            let get = |col: Option<usize>| col.and_then(|c| row.get(c)).cloned().unwrap_or_default();
            let name = get(Some(name_col));
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            styles.insert(Style { name, prompt: get(prompt_col), negative_prompt: get(negative_col) });
        }
        Ok(styles)
    }

    /// The file A1111 writes: a header and one row a style, CRLF line ends.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("name,prompt,negative_prompt\r\n");
        for s in &self.styles {
            write_field(&s.name, &mut out);
            out.push(',');
            write_field(&s.prompt, &mut out);
            out.push(',');
            write_field(&s.negative_prompt, &mut out);
            out.push_str("\r\n");
        }
        out
    }

    /// Adds a style, or replaces the one of that name in its place.
    pub fn insert(&mut self, style: Style) {
        match self.styles.iter_mut().find(|s| s.name == style.name) {
            Some(existing) => *existing = style,
            None => self.styles.push(style),
        }
    }

    /// Takes the style of that name away.
    pub fn remove(&mut self, name: &str) {
        self.styles.retain(|s| s.name != name);
    }

    pub fn get(&self, name: &str) -> Option<&Style> {
        self.styles.iter().find(|s| s.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Style> {
        self.styles.iter()
    }

    pub fn len(&self) -> usize {
        self.styles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.styles.is_empty()
    }

    /// The prompt and negative prompt with the named styles applied in order.
    pub fn apply(
        &self,
        names: &[String],
        prompt: &str,
        negative: &str,
    ) -> Result<(String, String), StyleError> {
        let (mut prompt, mut negative) = (prompt.to_string(), negative.to_string());
        for name in names {
            let style = self.get(name).ok_or_else(|| StyleError::Unknown {
                name: name.clone(),
                known: if self.is_empty() {
                    "none".into()
                } else {
                    self.styles.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                },
            })?;
            prompt = merge(&style.prompt, &prompt);
            negative = merge(&style.negative_prompt, &negative);
        }
        Ok((prompt, negative))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a1111_s_quirks_read_and_round_trip() {
        // A byte-order mark, spaces after commas in the header, quoted commas, doubled quotes,
        // a line break inside quotes, a comment row, a blank line, a short row, CRLF.
        let text = "\u{feff}name, prompt, negative_prompt\r\n\
            Cinematic,\"{prompt}, film grain, 35mm\",\"blurry, lowres\"\r\n\
            # disabled,ignored,ignored\r\n\
            \r\n\
            Quote,\"a \"\"quoted\"\" word\",\r\n\
            Two lines,\"first\nsecond\",\r\n\
            Short,watercolor\r\n";
        let styles = Styles::parse_csv(text).unwrap();
        assert_eq!(styles.len(), 4);
        let c = styles.get("Cinematic").unwrap();
        assert_eq!(
            (c.prompt.as_str(), c.negative_prompt.as_str()),
            ("{prompt}, film grain, 35mm", "blurry, lowres")
        );
        assert_eq!(styles.get("Quote").unwrap().prompt, "a \"quoted\" word");
        assert_eq!(styles.get("Two lines").unwrap().prompt, "first\nsecond");
        assert_eq!(styles.get("Short").unwrap().negative_prompt, "");
        let again = Styles::parse_csv(&styles.to_csv()).unwrap();
        assert_eq!(again, styles);
        assert!(styles
            .to_csv()
            .starts_with("name,prompt,negative_prompt\r\nCinematic,\"{prompt}, film grain, 35mm\""));
    }

    #[test]
    fn the_old_text_column_reads_as_the_prompt() {
        let styles = Styles::parse_csv("name,text\nInk,\"ink drawing, cross-hatching\"\n").unwrap();
        assert_eq!(styles.get("Ink").unwrap().prompt, "ink drawing, cross-hatching");
        assert!(matches!(Styles::parse_csv("title,prompt\nx,y\n"), Err(StyleError::NoNameColumn)));
    }

    #[test]
    fn styles_apply_as_a1111_merges_them() {
        let styles = Styles::parse_csv(
            "name,prompt,negative_prompt\nCine,\"{prompt}, film grain\",blurry\nInk,ink drawing,\nBrand,\"poster of {prompt}\",\"{prompt}, text\"\n",
        )
        .unwrap();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            styles.apply(&names(&["Cine"]), "a fox", "").unwrap(),
            ("a fox, film grain".to_string(), "blurry".to_string())
        );
        assert_eq!(styles.apply(&names(&["Ink"]), " a fox ", "").unwrap().0, "a fox, ink drawing");
        assert_eq!(styles.apply(&names(&["Ink"]), "", "").unwrap().0, "ink drawing");
        assert_eq!(
            styles.apply(&names(&["Ink", "Brand"]), "a fox", "lowres").unwrap(),
            ("poster of a fox, ink drawing".to_string(), "lowres, text".to_string())
        );
        let err = styles.apply(&names(&["Nope"]), "a", "").unwrap_err();
        assert!(err.to_string().contains("Cine, Ink, Brand"), "{err}");
    }
}
