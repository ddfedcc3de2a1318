//! supervisord's INI dialect: Python's `RawConfigParser` as supervisor configures it
//! (`options.UnhosedConfigParser`: inline comments `;` and `#`, not strict).
//!
//! - A line whose first non-blank character is `;` or `#` is a comment; inside a line,
//!   `;` or `#` starts a comment only after whitespace (`a;b` is a value, `a ;b` is `a`),
//!   searched for in configparser's rounds ([`strip_comment`]).
//! - `key = value` or `key: value` (the first `=` or `:` splits), keys case-insensitive.
//! - A line indented deeper than its option's line continues the value (joined with a
//!   newline); blank lines inside a value are kept, trailing ones dropped.
//! - A repeated section merges into the first, a repeated option replaces the earlier
//!   one; `[DEFAULT]` options are every section's defaults.

use std::fmt;

/// A parsed file: sections in file order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ini {
    pub sections: Vec<Section>,
    pub defaults: Vec<Opt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    pub options: Vec<Opt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Opt {
    /// Lower-cased, as `optionxform` leaves it.
    pub key: String,
    pub value: String,
    /// 1-based line of `key =`.
    pub line: usize,
}

/// A line the parser cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl Section {
    /// The option's value (and its line), this section's own before `[DEFAULT]`'s.
    pub fn get<'a>(&'a self, ini: &'a Ini, key: &str) -> Option<&'a Opt> {
        self.options
            .iter()
            .find(|o| o.key == key)
            .or_else(|| ini.defaults.iter().find(|o| o.key == key))
    }
}

/// The text before an inline comment, as the configparser of Python 3.11 (supervisor's
/// `RawConfigParser._read`) finds it: in rounds, each of `;` and `#` moving to its next
/// occurrence; the first round that finds one at the start of the line or after
/// whitespace ends the search, at the leftmost such of that round. So in
/// `sh -c "echo a#b #c" ;note` the first round sees `#` in `a#b` (not a comment) and
/// ` ;` (a comment): the value keeps ` #c`, which a later round would have cut.
fn strip_comment(line: &str) -> (&str, bool) {
    if line.trim_start().starts_with([';', '#']) {
        return ("", true);
    }
    let mut from: Vec<(char, usize)> = vec![(';', 0), ('#', 0)];
    while !from.is_empty() {
        let mut start: Option<usize> = None;
        let mut next = Vec::new();
        for (prefix, at) in from {
            let Some(found) = line[at..].find(prefix).map(|i| at + i) else {
                continue;
            };
            next.push((prefix, found + 1));
            let after_space = found == 0 || line[..found].chars().next_back().is_some_and(py_space);
            if after_space {
                start = Some(start.map_or(found, |s| s.min(found)));
            }
        }
        if let Some(start) = start {
            return (&line[..start], true);
        }
        from = next;
    }
    (line, false)
}

/// Python's `str.isspace`: Unicode whitespace and the separators `\x1c`..`\x1f`.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Where the current value goes: a section's option or a `[DEFAULT]` option.
#[derive(Clone, Copy)]
enum Target {
    Section(usize, usize),
    Default(usize),
}

pub fn parse(text: &str) -> Result<Ini, IniError> {
    let mut ini = Ini::default();
    // The section options go to: None before any header, Some(None) for [DEFAULT].
    let mut current: Option<Option<usize>> = None;
    let mut target: Option<Target> = None;
    let mut indent_level = usize::MAX;
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let (content, had_comment) = strip_comment(raw_line);
        let value = content.trim();
        if value.is_empty() {
            // A blank line inside a value is part of it (not a comment-only line).
            if !had_comment && let Some(t) = target {
                value_of(&mut ini, t).push('\n');
            }
            continue;
        }
        let indent = raw_line.len() - raw_line.trim_start().len();
        if let Some(t) = target.filter(|_| indent > indent_level) {
            let v = value_of(&mut ini, t);
            v.push('\n');
            v.push_str(value);
            continue;
        }
        indent_level = indent;
        if let Some(name) = header(value) {
            current = Some(section_index(&mut ini, name, line_no));
            target = None;
            continue;
        }
        let Some(section) = current else {
            return Err(IniError {
                line: line_no,
                message: format!("no [section] header before {value:?}"),
            });
        };
        let Some((key, val)) = split_option(value) else {
            return Err(IniError {
                line: line_no,
                message: format!("not `key = value`: {value:?}"),
            });
        };
        target = Some(set(&mut ini, section, key, val, line_no));
    }
    finish(&mut ini);
    Ok(ini)
}

/// `[name]`: the text between the first `[` and the last `]` (Python's `\[(.+)\]`).
fn header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

/// The section's index, `None` for `[DEFAULT]`; a repeated name merges.
fn section_index(ini: &mut Ini, name: &str, line: usize) -> Option<usize> {
    if name == "DEFAULT" {
        return None;
    }
    if let Some(i) = ini.sections.iter().position(|s| s.name == name) {
        return Some(i);
    }
    ini.sections.push(Section {
        name: name.to_owned(),
        line,
        options: Vec::new(),
    });
    Some(ini.sections.len() - 1)
}

/// `key = value` split at the first `=` or `:`; the key must not be empty.
fn split_option(value: &str) -> Option<(String, &str)> {
    let at = value.find(['=', ':'])?;
    let key = value[..at].trim();
    if key.is_empty() {
        return None;
    }
    Some((key.to_lowercase(), value[at + 1..].trim()))
}

fn set(ini: &mut Ini, section: Option<usize>, key: String, value: &str, line: usize) -> Target {
    let opt = Opt {
        key,
        value: value.to_owned(),
        line,
    };
    let list = match section {
        Some(i) => &mut ini.sections[i].options,
        None => &mut ini.defaults,
    };
    list.retain(|o| o.key != opt.key);
    list.push(opt);
    let at = list.len() - 1;
    match section {
        Some(i) => Target::Section(i, at),
        None => Target::Default(at),
    }
}

fn value_of(ini: &mut Ini, target: Target) -> &mut String {
    match target {
        Target::Section(s, o) => &mut ini.sections[s].options[o].value,
        Target::Default(o) => &mut ini.defaults[o].value,
    }
}

/// Values lose the blank lines they ended with (`rstrip` of the joined lines).
fn finish(ini: &mut Ini) {
    let all = ini
        .sections
        .iter_mut()
        .flat_map(|s| s.options.iter_mut())
        .chain(ini.defaults.iter_mut());
    for opt in all {
        let kept = opt.value.trim_end().len();
        opt.value.truncate(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str, key: &str) -> String {
        let ini = parse(text).unwrap();
        let s = &ini.sections[0];
        s.get(&ini, key).unwrap().value.clone()
    }

    #[test]
    fn inline_comments_need_whitespace_before_them() {
        assert_eq!(
            one("[program:a]\ncommand = /bin/a;b ; note\n", "command"),
            "/bin/a;b"
        );
        assert_eq!(
            one("[program:a]\ncommand=/bin/a#b #note\n", "command"),
            "/bin/a#b"
        );
        assert_eq!(
            one("[program:a]\n; whole line\ncommand=x\n", "command"),
            "x"
        );
    }

    #[test]
    fn inline_comments_are_found_in_rounds_like_python_3_11() {
        // Round one: `#` of `a#b` is no comment, ` ;` is: ` #c` stays in the value.
        assert_eq!(
            one(
                "[program:a]\ncommand=/bin/sh -c \"echo a#b #c\" ;note\n",
                "command"
            ),
            "/bin/sh -c \"echo a#b #c\""
        );
        // Without a `;`, round two finds ` #c`.
        assert_eq!(
            one("[program:a]\ncommand=echo a#b #c\n", "command"),
            "echo a#b"
        );
        assert_eq!(one("[program:a]\ncommand=x ;a #b\n", "command"), "x");
    }

    #[test]
    fn indented_lines_continue_a_value_and_keys_ignore_case() {
        let text = "[program:a]\nEnvironment = A=\"1\",\n  B=\"2\"\n\nCommand: /bin/a\n";
        assert_eq!(one(text, "environment"), "A=\"1\",\nB=\"2\"");
        assert_eq!(one(text, "command"), "/bin/a");
    }

    #[test]
    fn repeated_sections_merge_and_defaults_fill_in() {
        let text = "[DEFAULT]\nuser = www\n[program:a]\ncommand=x\n[program:a]\ncommand=y\n";
        let ini = parse(text).unwrap();
        assert_eq!(ini.sections.len(), 1);
        assert_eq!(ini.sections[0].get(&ini, "command").unwrap().value, "y");
        assert_eq!(ini.sections[0].get(&ini, "command").unwrap().line, 6);
        assert_eq!(ini.sections[0].get(&ini, "user").unwrap().value, "www");
    }

    #[test]
    fn bad_lines_are_errors_with_their_line_number() {
        assert_eq!(parse("command = x\n").unwrap_err().line, 1);
        assert_eq!(parse("[program:a]\n\njust words\n").unwrap_err().line, 3);
        assert_eq!(parse("[program:a]\n= x\n").unwrap_err().line, 2);
    }
}
