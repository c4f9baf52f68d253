//! Values cut out of messages that quote what they were given: a secret put in the wrong
//! place (a passcode sent as a JSON key, an admin token pasted under another setting) must
//! not come back in the error that refuses it.

use crate::admin::MIN_CONFIGURED_TOKEN;

/// A serde message without the values it quotes: each string (`invalid type: string
/// "1234"`) becomes `"…"`, and the name of an unknown field or variant is kept only when it
/// is a plain word (letters and `_`) shorter than an admin token (a typo such as `databse`),
/// else it is `…`. The names serde lists as expected are kept.
pub(crate) fn serde_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quote = false;
    let mut escaped = false;
    for c in message.chars() {
        if in_quote && (escaped || c == '\\') {
            // serde writes a string with Debug escapes: `\"` does not end it.
            escaped = !escaped;
        } else if c == '"' {
            if in_quote {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(c);
        }
    }
    // An unknown key is the sender's own text, backticks and all: it is read up to where
    // serde's list of the names expected begins, which holds plain names only, so that a
    // backtick in it cannot shift what follows.
    for prefix in ["unknown field `", "unknown variant `"] {
        if let Some(key_and_rest) = out.strip_prefix(prefix)
            && let Some(end) = ["`, expected ", "`, there are no "]
                .iter()
                .filter_map(|tail| key_and_rest.rfind(tail))
                .max()
        {
            let key = &key_and_rest[..end];
            let plain = !key.is_empty()
                && key.len() < MIN_CONFIGURED_TOKEN
                && key.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
            out = format!(
                "{prefix}{}{}",
                if plain { key } else { "…" },
                &key_and_rest[end..]
            );
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_unknown_names_that_could_be_secrets_are_cut() {
        assert_eq!(
            serde_message(r#"invalid type: string "ab\"4826", expected a boolean"#),
            "invalid type: string \"…\", expected a boolean"
        );
        assert_eq!(
            serde_message("unknown variant `udpp`, expected one of `udp`, `tcp`"),
            "unknown variant `udpp`, expected one of `udp`, `tcp`"
        );
        let long = "abcdefghijklmnopqrstuvwxyzabcdefgh";
        assert_eq!(
            serde_message(&format!("unknown field `{long}`, expected `store`")),
            "unknown field `…`, expected `store`"
        );
        assert_eq!(
            serde_message("unknown variant `vpt_0123456789abcdef`, expected `auto`"),
            "unknown variant `…`, expected `auto`"
        );
    }
}
