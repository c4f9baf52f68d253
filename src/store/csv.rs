//! A small RFC 4180 CSV reader for mailbox imports.
//!
//! Fields are separated by commas and records by CRLF, LF or a lone CR (old Mac files); a
//! field in double quotes may hold commas, line breaks and doubled quotes (`""`). Each record
//! carries the line it starts on so errors can name it, counting line breaks of all three
//! kinds inside quotes too. Blank lines are skipped.

/// One record: its first line (1-based) and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) line: usize,
    pub(crate) fields: Vec<String>,
}

/// The text is not well-formed CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A quoted field runs to the end of the input.
    #[error("line {0}: a quoted field is never closed")]
    UnclosedQuote(usize),
    /// Text follows a closing quote before the next comma or line end.
    #[error("line {0}: unexpected text after a closing quote")]
    TextAfterQuote(usize),
    /// A double quote inside an unquoted field.
    #[error("line {0}: a double quote inside an unquoted field (quote the whole field)")]
    StrayQuote(usize),
    /// Bytes that are not UTF-8 (a file saved as Latin-1 or Windows-1252).
    #[error("line {0}: {not_utf8}", not_utf8 = crate::config::NOT_UTF8)]
    NotUtf8(usize),
}

/// The CSV's bytes as text.
///
/// # Errors
/// [`CsvError::NotUtf8`] naming the line of the first byte that is not UTF-8, line breaks
/// counted as `parse` counts them.
pub fn text(bytes: Vec<u8>) -> Result<String, CsvError> {
    crate::config::utf8_text(bytes).map_err(CsvError::NotUtf8)
}

/// Splits `text` into records.
///
/// # Errors
/// [`CsvError`] naming the line of the first malformed field.
pub(crate) fn parse(text: &str) -> Result<Vec<Record>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        let start_line = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut end = false;
        loop {
            let Some(c) = chars.next() else {
                end = true;
                break;
            };
            match c {
                '"' if field.is_empty() && !quoted => {
                    quoted = true;
                    let field_line = line;
                    loop {
                        match chars.next() {
                            None => return Err(CsvError::UnclosedQuote(field_line)),
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                let crlf = c == '\r' && chars.peek() == Some(&'\n');
                                if matches!(c, '\n' | '\r') && !crlf {
                                    line += 1;
                                }
                                field.push(c);
                            }
                        }
                    }
                    match chars.peek() {
                        None | Some(',' | '\n' | '\r') => {}
                        Some(_) => return Err(CsvError::TextAfterQuote(line)),
                    }
                }
                '"' => return Err(CsvError::StrayQuote(line)),
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    quoted = false;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' | '\r' => {
                    line += 1;
                    break;
                }
                c => field.push(c),
            }
        }
        fields.push(field);
        let blank = fields.len() == 1 && fields[0].trim().is_empty() && !quoted;
        if !blank {
            records.push(Record {
                line: start_line,
                fields,
            });
        }
        if end {
            return Ok(records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_name_their_line() {
        assert_eq!(text(b"1001,Ann\n".to_vec()).unwrap(), "1001,Ann\n");
        // A Latin-1 export: ü is 0xFC.
        for (bytes, line) in [
            (&b"1001,Ann\n1002,M\xfcller\n"[..], 2),
            (b"1001,Ann\r\n1002,Bo\r\n1003,M\xfcller\r\n", 3),
            (b"1001,Ann\r1002,M\xfcller\r", 2),
            (b"\xfc", 1),
            (b"\"a\nb\",1\n\xfc", 3),
        ] {
            assert_eq!(
                text(bytes.to_vec()),
                Err(CsvError::NotUtf8(line)),
                "{bytes:?}"
            );
        }
    }

    fn fields(text: &str) -> Vec<(usize, Vec<String>)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|r| (r.line, r.fields))
            .collect()
    }

    fn rec(line: usize, fields: &[&str]) -> (usize, Vec<String>) {
        (line, fields.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn plain_records_with_crlf_lf_and_blank_lines() {
        assert_eq!(
            fields("1001,Alice,a@example.com,\r\n\r\n1002,Bob\n"),
            [
                rec(1, &["1001", "Alice", "a@example.com", ""]),
                rec(3, &["1002", "Bob"]),
            ]
        );
        assert!(fields("").is_empty());
        assert_eq!(fields("\u{feff}1001"), [rec(1, &["1001"])]);
    }

    #[test]
    fn lone_cr_line_breaks_count_as_lines_inside_quotes_too() {
        let text = "1001,\"a\rb\"\r1002,x\"y\r";
        assert_eq!(parse(text), Err(CsvError::StrayQuote(3)));
        let text = "1001,\"a\r\nb\"\r\n1002,x\"y\r\n";
        assert_eq!(
            parse(text),
            Err(CsvError::StrayQuote(3)),
            "CRLF is one line"
        );
    }

    #[test]
    fn quoted_fields_hold_commas_quotes_and_newlines() {
        assert_eq!(
            fields("1001,\"Smith, \"\"Al\"\"\nJr.\",x@y\n1002,\"\"\n"),
            [
                rec(1, &["1001", "Smith, \"Al\"\nJr.", "x@y"]),
                rec(3, &["1002", ""]),
            ]
        );
    }

    #[test]
    fn malformed_input_names_the_line() {
        assert_eq!(
            parse("1001,ok\n1002,\"open"),
            Err(CsvError::UnclosedQuote(2))
        );
        assert_eq!(parse("1001\n1002,\"a\"b"), Err(CsvError::TextAfterQuote(2)));
        assert_eq!(parse("1\n2\n3,a\"b"), Err(CsvError::StrayQuote(3)));
    }
}
