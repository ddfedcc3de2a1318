//! The three little languages inside supervisord's values, as supervisor reads them:
//! Python `%` formatting (`%(program_name)s`), `command` split by `shlex.split` (POSIX
//! rules) and `environment` read by a non-POSIX `shlex.shlex` (`KEY="v",KEY2=v2`).

use std::collections::BTreeMap;

/// What a `%(name)...` expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    Text(String),
    Number(i64),
    /// A value known only per instance (`process_num`): kept as this placeholder.
    Placeholder(String),
}

/// Python's `text % expansions`: `%%` is `%`, `%(name)s` / `%(name)d` / `%(name)r` a
/// named value (flags and width allowed for numbers, not for placeholders).
pub fn expand(text: &str, values: &BTreeMap<String, Expansion>) -> Result<String, String> {
    expand_noting(text, values, &mut Vec::new())
}

/// [`expand`], adding the name of each value used to `used`.
pub fn expand_noting(
    text: &str,
    values: &BTreeMap<String, Expansion>,
    used: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        let Some(named) = rest.strip_prefix('(') else {
            return Err(format!("a `%` must be `%%` or `%(name)s` in {text:?}"));
        };
        let close = named
            .find(')')
            .ok_or_else(|| format!("unclosed `%(` in {text:?}"))?;
        let name = &named[..close];
        let spec_and_rest = &named[close + 1..];
        let conv_at = spec_and_rest
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| format!("`%({name})` lacks a conversion such as `s` in {text:?}"))?;
        let spec = &spec_and_rest[..conv_at];
        let conv = spec_and_rest.as_bytes()[conv_at];
        let value = values.get(name).ok_or_else(|| {
            // The environment's names are not listed: there may be hundreds, and their
            // names may say more than the file should.
            let known: Vec<&str> = values
                .keys()
                .map(String::as_str)
                .filter(|k| !k.starts_with("ENV_"))
                .collect();
            format!(
                "`%({name})` cannot be expanded (known: {}, and ENV_X for each variable X of the environment)",
                known.join(", ")
            )
        })?;
        out.push_str(&format_one(value, spec, conv, name)?);
        used.push(name.to_owned());
        rest = &spec_and_rest[conv_at + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn format_one(value: &Expansion, spec: &str, conv: u8, name: &str) -> Result<String, String> {
    match (value, conv) {
        (Expansion::Placeholder(p), b's' | b'd' | b'i') if spec.is_empty() => Ok(p.clone()),
        (Expansion::Placeholder(_), _) => Err(format!(
            "`%({name}){spec}{}` has no holdfast equivalent (only `%({name})d`)",
            conv as char
        )),
        (Expansion::Number(n), b'd' | b'i' | b's') => pad(&n.to_string(), spec),
        (Expansion::Text(t), b's' | b'r') if spec.is_empty() => Ok(t.clone()),
        (Expansion::Text(t), b'd' | b'i') => t
            .parse::<i64>()
            .map_err(|_| format!("`%({name})d` of a non-number"))
            .and_then(|n| pad(&n.to_string(), spec)),
        _ => Err(format!(
            "unsupported conversion `%({name}){spec}{}`",
            conv as char
        )),
    }
}

/// The widest `%0Nd` accepted: enough for any real file, small enough for any input.
const MAX_WIDTH: usize = 64;

/// `%02d`-style width: `0` pads with zeros, `-` left-aligns.
fn pad(digits: &str, spec: &str) -> Result<String, String> {
    if spec.is_empty() {
        return Ok(digits.to_owned());
    }
    let (fill, left, width) = match spec.as_bytes()[0] {
        b'0' => ('0', false, &spec[1..]),
        b'-' => (' ', true, &spec[1..]),
        _ => (' ', false, spec),
    };
    let width: usize = width
        .parse()
        .ok()
        .filter(|w| *w <= MAX_WIDTH)
        .ok_or_else(|| format!("unsupported format `%{spec}d`"))?;
    let padding = width.saturating_sub(digits.len());
    let fill_text: String = std::iter::repeat_n(fill, padding).collect();
    Ok(match (left, fill) {
        (true, _) => format!("{digits}{fill_text}"),
        (false, '0') if digits.starts_with('-') => format!("-{fill_text}{}", &digits[1..]),
        (false, _) => format!("{fill_text}{digits}"),
    })
}

/// `shlex.split(command)`: POSIX shell words, quotes and backslashes removed.
pub fn split_command(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\\' => {
                let next = chars
                    .next()
                    .ok_or("no character after the final backslash")?;
                word.get_or_insert_default().push(next);
            }
            '\'' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("no closing quotation".to_owned()),
                    }
                }
            }
            '"' => double_quoted(&mut chars, word.get_or_insert_default())?,
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Inside `"..."` a backslash escapes only `"` and `\`.
fn double_quoted(chars: &mut std::str::Chars<'_>, word: &mut String) -> Result<(), String> {
    loop {
        match chars.next() {
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some(c @ ('"' | '\\')) => word.push(c),
                Some(c) => {
                    word.push('\\');
                    word.push(c);
                }
                None => return Err("no closing quotation".to_owned()),
            },
            Some(c) => word.push(c),
            None => return Err("no closing quotation".to_owned()),
        }
    }
}

/// `datatypes.dict_of_key_value_pairs`: tokens of a non-POSIX `shlex.shlex` with
/// `/.+-():` added to the word characters, read as `KEY = VALUE ,` groups; values lose
/// any quote characters at their ends. In file order.
pub fn environment(text: &str) -> Result<Vec<(String, String)>, String> {
    let tokens = env_tokens(text)?;
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let group = &tokens[i..tokens.len().min(i + 3)];
        if group.len() != 3 || group[1] != "=" {
            return Err(format!("unexpected end of KEY=value pairs in {text:?}"));
        }
        let value = group[2].trim_matches(['\'', '"']).to_owned();
        pairs.retain(|(k, _): &(String, String)| *k != group[0]);
        pairs.push((group[0].clone(), value));
        // The fourth token, normally a comma, is skipped unchecked, as supervisor does.
        i += 4;
    }
    Ok(pairs)
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_/.+-():".contains(c)
}

/// The tokens of Python's non-POSIX `shlex`: words, quoted strings with their quotes,
/// and single punctuation characters; `#` comments to the end of the line.
fn env_tokens(text: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            i = skip_line(&chars, i);
        } else if matches!(c, ' ' | '\t' | '\r' | '\n') {
            i += 1;
        } else if c == '"' || c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|&q| q == c)
                .ok_or("no closing quotation")?;
            tokens.push(chars[i..=i + 1 + end].iter().collect());
            i += end + 2;
        } else if is_word_char(c) {
            let (word, next) = env_word(&chars, i);
            tokens.push(word);
            i = next;
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    Ok(tokens)
}

/// A word goes on through word characters and quote characters; a `#` inside it skips
/// the rest of its line and the word continues on the next (Python's behaviour).
fn env_word(chars: &[char], start: usize) -> (String, usize) {
    let mut word = String::new();
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            i = skip_line(chars, i);
        } else if is_word_char(c) || c == '"' || c == '\'' {
            word.push(c);
            i += 1;
        } else {
            break;
        }
    }
    (word, i)
}

fn skip_line(chars: &[char], from: usize) -> usize {
    chars[from..]
        .iter()
        .position(|&c| c == '\n')
        .map_or(chars.len(), |p| from + p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, Expansion> {
        BTreeMap::from([
            ("program_name".into(), Expansion::Text("web".into())),
            (
                "process_num".into(),
                Expansion::Placeholder("{instance}".into()),
            ),
            ("numprocs".into(), Expansion::Number(3)),
            ("n".into(), Expansion::Number(7)),
        ])
    }

    #[test]
    fn percent_formats_expand_like_python() {
        let v = values();
        assert_eq!(
            expand("%(program_name)s-%(n)03d 100%%", &v).unwrap(),
            "web-007 100%"
        );
        assert_eq!(
            expand("--id=%(process_num)d", &v).unwrap(),
            "--id={instance}"
        );
        assert!(expand("%(process_num)02d", &v).is_err());
        assert!(expand("%(nope)s", &v).unwrap_err().contains("nope"));
        let mut with_env = v.clone();
        with_env.insert("ENV_SECRET_NAME".into(), Expansion::Text("x".into()));
        let err = expand("%(nope)s", &with_env).unwrap_err();
        assert!(!err.contains("SECRET_NAME"), "{err}");
        assert!(expand("50%", &v).is_err());
    }

    #[test]
    fn commands_split_like_shlex_split() {
        assert_eq!(
            split_command(r#"/bin/sh -c 'echo "a b"' x\ y "q\"\n""#).unwrap(),
            vec!["/bin/sh", "-c", "echo \"a b\"", "x y", "q\"\\n"]
        );
        assert_eq!(split_command("a '' b").unwrap(), vec!["a", "", "b"]);
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \\").is_err());
    }

    #[test]
    fn environment_pairs_parse_like_supervisor() {
        assert_eq!(
            environment(r#"A="1,2",B=/x/y, C='it is' ,D=x:y"#).unwrap(),
            vec![
                ("A".into(), "1,2".into()),
                ("B".into(), "/x/y".into()),
                ("C".into(), "it is".into()),
                ("D".into(), "x:y".into())
            ]
        );
        assert!(environment("A=1,B").is_err());
        assert!(environment("A=a*b").is_err());
        assert!(environment("A=\"x").is_err());
    }
}
