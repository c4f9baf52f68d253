//! The dotted key a TOML error is about, for the errors of the configuration file, the
//! dialplans and the prompt manifests (`line 7, key route[2].match: …`). The `toml` crate
//! gives an error's position but not its key.
//!
//! Tables in an array and the items of a list count from 1 (`route[2]`,
//! `route[1].trusted_sources[3]`). A key is named only when every part of it is a plain word
//! (letters, digits, `_`, `-`) shorter than an admin token: an admin token pasted where a
//! key goes must not come back in the error that refuses it.

use toml::de::{DeTable, DeValue};

use crate::admin::MIN_CONFIGURED_TOKEN;

/// The key at byte `offset` of `text`, the position of a TOML error.
///
/// A shape error (an unknown key, a value of the wrong type, a missing field) comes from a
/// document that parses, so the key is read off the parsed document: that names the key
/// inside an inline table (`sip = { max_calls = "x" }` is `sip.max_calls`), a value over
/// several lines, and numbers the tables of an array. A syntax error's key is read off the
/// lines: the table above and the key of a `key = value` line. On a line of any other shape,
/// which could be a secret with its `=` missing, no key written on it is named: only the key
/// whose value the line continues (a list over several lines), or else the table.
pub(crate) fn key_at(text: &str, offset: usize) -> Option<String> {
    match DeTable::parse(text) {
        Ok(document) => named(deepest_in_table(document.get_ref(), offset)?),
        Err(_) => match key_on_line(text, offset) {
            Ok(key) => Some(key),
            Err(table) => continued_value(text, offset).or(table),
        },
    }
}

/// What to say of a table written `[[name]]` where one table goes, given the key the error
/// is at (`name[1]`, a top-level list's first table): a bracket too many.
pub(crate) fn one_table_not_a_list(key: Option<&str>) -> Option<String> {
    let table = key?.strip_suffix("[1]")?;
    (!table.contains(['.', '['])).then(|| {
        format!("[[{table}]] makes a list of tables; write [{table}], with single brackets")
    })
}

/// The parts of a key path: a key (and where it is written), or a position in a list (from
/// 1).
enum Part {
    Key(String, usize),
    Index(usize),
}

/// The path joined with dots, positions in brackets; `None` when a part is not a plain word.
fn named(path: Vec<Part>) -> Option<String> {
    let mut out = String::new();
    for part in path {
        match part {
            Part::Key(key, _) if is_plain(&key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key);
            }
            Part::Key(..) => return None,
            Part::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key.len() < MIN_CONFIGURED_TOKEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The longest path in `table` whose key or value covers `offset`. A table declared by a
/// `[header]` spans only its header, its keys lie below it, so every branch is searched.
fn deepest_in_table(table: &DeTable<'_>, offset: usize) -> Option<Vec<Part>> {
    table
        .iter()
        .filter_map(|(key, value)| {
            let on_it = key.span().contains(&offset) || value.span().contains(&offset);
            let below = deepest_in_value(value.get_ref(), offset);
            (on_it || below.is_some()).then(|| {
                let mut path = vec![Part::Key(key.get_ref().to_string(), key.span().start)];
                path.extend(below.unwrap_or_default());
                path
            })
        })
        .max_by_key(Vec::len)
}

fn deepest_in_value(value: &DeValue<'_>, offset: usize) -> Option<Vec<Part>> {
    match value {
        DeValue::Table(table) => deepest_in_table(table, offset),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let below = deepest_in_value(item.get_ref(), offset);
                (item.span().contains(&offset) || below.is_some()).then(|| {
                    let mut path = vec![Part::Index(i + 1)];
                    path.extend(below.unwrap_or_default());
                    path
                })
            })
            .max_by_key(Vec::len),
        _ => None,
    }
}

/// The key whose value, begun on a line above, the line at `offset` continues (a list
/// written over several lines), read off what of the broken document parses. Keys written
/// on that line itself are left out.
fn continued_value(text: &str, offset: usize) -> Option<String> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let (document, _) = DeTable::parse_recoverable(text);
    let mut path = deepest_in_table(document.get_ref(), offset)?;
    if let Some(on_the_line) = path
        .iter()
        .position(|part| matches!(part, Part::Key(_, at) if *at >= line_start))
    {
        path.truncate(on_the_line);
    }
    named(path)
}

/// A syntax error's key, read off the text: the table header above `offset` (tables of an
/// array numbered) plus the key of the line when it is `key = value`; for a line of another
/// shape, `Err` with the table alone.
fn key_on_line(text: &str, offset: usize) -> Result<String, Option<String>> {
    let Some(before) = text.get(..offset.min(text.len())) else {
        return Err(None);
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let mut table = None;
    let mut arrays: Vec<(&str, usize)> = Vec::new();
    for line in text[..line_end].lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[") {
            let name = header_name(name);
            let count = match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    arrays.push((name, 1));
                    1
                }
            };
            table = Some(format!("{name}[{count}]"));
        } else if let Some(name) = line.strip_prefix('[') {
            table = Some(header_name(name).to_owned());
        }
    }
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return table.ok_or(None);
    }
    let key = match line.split_once('=') {
        Some((key, value))
            if key.trim().split('.').all(|part| is_plain(part.trim()))
                && !value.trim().is_empty()
                && !value.trim_start().starts_with('=') =>
        {
            key.trim()
        }
        // A blank line, a comment, a key without its `=` or a secret pasted alone.
        _ => return Err(table),
    };
    Ok(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

/// The name in a table header, given the text after its opening bracket(s), leaving out a
/// comment after it (`[sip]  # SIP`).
pub(crate) fn header_name(after_open: &str) -> &str {
    after_open.split(']').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the error `text` gives when read as `T`.
    fn key_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(text: &str) -> Option<String> {
        let e = toml::from_str::<T>(text).unwrap_err();
        key_at(text, e.span().unwrap().start)
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default)]
        sip: Option<Sip>,
        #[serde(default)]
        route: Vec<Route>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sip {
        #[serde(default)]
        max_calls: u32,
        #[serde(default)]
        timers: Option<Timers>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Timers {
        t1: u32,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Route {
        user: String,
        #[serde(default)]
        trusted: Vec<u8>,
    }

    #[test]
    fn shape_errors_name_the_key_however_the_table_is_written() {
        for (text, key) in [
            ("[sip]\nmax_calls = \"x\"\n", "sip.max_calls"),
            ("[sip]\nmax_cals = 1\n", "sip.max_cals"),
            ("sip = { max_calls = \"x\" }\n", "sip.max_calls"),
            ("sip = {\n  max_calls = \"x\"\n}\n", "sip.max_calls"),
            ("sip.max_calls = \"x\"\n", "sip.max_calls"),
            ("[sip]\ntimers = { t1 = -1 }\n", "sip.timers.t1"),
            ("[sip.timers]\nt1 = true\n", "sip.timers.t1"),
            ("[sip.timers]\n", "sip.timers"),
            ("[sip]\nmax_calls = [\n  1,\n  2,\n]\n", "sip.max_calls"),
            // `[[sip]]` makes a list where one table is wanted.
            ("[[sip]]\nmax_calls = 1\n", "sip[1]"),
            (
                "[[route]]\nuser = \"a\"\n[[route]]\nuzer = \"b\"\n",
                "route[2].uzer",
            ),
            ("[[route]]\nuser = \"a\"\n[[route]]\n", "route[2]"),
            (
                "[[route]]\nuser = \"a\"\ntrusted = [1, 2, 300]\n",
                "route[1].trusted[3]",
            ),
        ] {
            assert_eq!(key_of::<Doc>(text).as_deref(), Some(key), "{text:?}");
        }
    }

    #[test]
    fn a_key_that_could_be_a_token_is_not_named() {
        let token = "vpt_0123456789abcdef0123456789abcdef";
        assert_eq!(key_of::<Doc>(&format!("{token} = 1\n")), None);
        assert_eq!(key_of::<Doc>(&format!("[sip]\n\"{token}\" = 1\n")), None);
        assert_eq!(key_of::<Doc>("[sip]\n\"max calls\" = 1\n"), None);
    }

    #[test]
    fn syntax_errors_name_the_key_of_a_key_value_line_only() {
        let at = |text: &str| {
            let e = toml::from_str::<toml::Table>(text).unwrap_err();
            key_at(text, e.span().unwrap().start)
        };
        assert_eq!(
            at("[sip]\nmax_calls = 12x\n").as_deref(),
            Some("sip.max_calls")
        );
        assert_eq!(
            at("[[route]]\nuser = \"a\"\n[[route]]\nuser = \"b\n").as_deref(),
            Some("route[2].user")
        );
        // A list over several lines is named on its later lines, never a key written there.
        assert_eq!(
            at("[[route]]\nmatch = \"1\"\ntrusted = [\n  \"10.0.0.0/8\",\n  bogus,\n]\n")
                .as_deref(),
            Some("route[1].trusted[2]")
        );
        assert_eq!(
            at("[sip]\nx = [\n  1,\n  4f1d8a2c9e==\n]\n").as_deref(),
            Some("sip.x")
        );
        for line in [
            "token: 4f1d8a2c9e",
            "4f1d8a2c9e==",
            "4f1d8a2c9e",
            "\"4f1d8a2c9e\"",
        ] {
            assert_eq!(at(&format!("[admin]\n{line}\n")).as_deref(), Some("admin"));
            assert_eq!(at(&format!("{line}\n")), None, "{line}");
        }
    }
}
