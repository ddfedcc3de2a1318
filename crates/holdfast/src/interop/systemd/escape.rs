//! Quoting for unit files (systemd.syntax(7), systemd.service(5) "Command lines").
//!
//! Every value in a unit file goes through specifier expansion, so a literal `%` is
//! written `%%`. Command lines are also split into words (double quotes, C escapes) and
//! `$NAME` in them is an environment variable, so a literal `$` is `$$`. `Environment=`
//! is split into quoted words too but knows no `$`. Single-value settings such as
//! `WorkingDirectory=` are taken verbatim to the end of the line: there only what a line
//! cannot carry (control characters, a trailing backslash that would continue the line,
//! edge whitespace that would be trimmed) is refused.

use super::GenError;
use crate::config::Segment;

/// The text `{instance}` stands for in a template unit: the instance name.
pub const INSTANCE_SPECIFIER: &str = "%i";

/// An `ExecStart=` value: each argument one word, so systemd hands the program exactly
/// `args`. A `{instance}` piece becomes `%i` when `template` (see [`Piece`]).
pub fn command_line(args: &[Vec<Piece>]) -> String {
    args.iter()
        .map(|pieces| exec_word(pieces))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A part of an argument: literal text, or the instance specifier of a template unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Instance,
}

/// One argument of a command line: bare when it is made of characters that mean nothing
/// to the parser, else double-quoted with C escapes.
fn exec_word(pieces: &[Piece]) -> String {
    let bare = pieces.iter().all(|p| match p {
        Piece::Text(t) => t.chars().all(is_plain),
        Piece::Instance => true,
    }) && !pieces.is_empty()
        && pieces != [Piece::Text(String::new())];
    let mut out = String::new();
    if !bare {
        out.push('"');
    }
    for piece in pieces {
        match piece {
            Piece::Text(text) => text.chars().for_each(|c| push_quoted(&mut out, c, true)),
            Piece::Instance => out.push_str(INSTANCE_SPECIFIER),
        }
    }
    if !bare {
        out.push('"');
    }
    out
}

/// One `"KEY=VALUE"` word of `Environment=`.
pub fn env_assignment(key: &str, value: &str) -> String {
    env_assignment_pieces(key, &[Piece::Text(value.to_owned())])
}

/// Like [`env_assignment`], with `{instance}` pieces for a template unit.
pub fn env_assignment_pieces(key: &str, value: &[Piece]) -> String {
    let mut out = String::from("\"");
    key.chars().for_each(|c| push_quoted(&mut out, c, false));
    out.push('=');
    for piece in value {
        match piece {
            Piece::Text(text) => text.chars().for_each(|c| push_quoted(&mut out, c, false)),
            Piece::Instance => out.push_str(INSTANCE_SPECIFIER),
        }
    }
    out.push('"');
    out
}

/// A value taken verbatim to the end of the line (`WorkingDirectory=`, `PIDFile=`,
/// `Description=`): `%` doubled, and refused when a line cannot carry it.
pub fn verbatim(setting: &str, value: &str) -> Result<String, GenError> {
    let refused = |why: &str| GenError::Unrepresentable {
        setting: setting.to_owned(),
        value: value.to_owned(),
        why: why.to_owned(),
    };
    if value.chars().any(char::is_control) {
        return Err(refused("a unit file line cannot hold control characters"));
    }
    if value.ends_with('\\') {
        return Err(refused("a trailing backslash would continue the line"));
    }
    if value.trim() != value {
        return Err(refused("systemd trims leading and trailing whitespace"));
    }
    Ok(value.replace('%', "%%"))
}

/// Characters an unquoted command word may hold as they are.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ',' | ':' | '=' | '@')
}

/// `c` inside double quotes: C escapes for what the word splitter would interpret,
/// `%%` for the specifier sign and, in a command line, `$$` for the variable sign.
fn push_quoted(out: &mut String, c: char, command: bool) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '%' => out.push_str("%%"),
        '$' if command => out.push_str("$$"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if c.is_control() => {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
        c => out.push(c),
    }
}

/// The pieces of `text`, with every `{instance}` a [`Piece::Instance`]; `Err` with a
/// placeholder systemd cannot express (`{instance + K}`: `%i` is a name, not a number).
pub fn template_pieces(text: &str) -> Result<Vec<Piece>, String> {
    let segments = crate::config::instance_segments(text)?;
    let mut pieces: Vec<Piece> = segments
        .into_iter()
        .map(|segment| match segment {
            Segment::Text(t) => Ok(Piece::Text(t.to_owned())),
            Segment::Instance { offset: 0, .. } => Ok(Piece::Instance),
            Segment::Instance { written, .. } => Err(written.to_owned()),
        })
        .collect::<Result<_, _>>()?;
    if pieces.is_empty() {
        pieces.push(Piece::Text(String::new()));
    }
    Ok(pieces)
}

/// Plain arguments as one-piece words.
pub fn literal(args: &[String]) -> Vec<Vec<Piece>> {
    args.iter().map(|a| vec![Piece::Text(a.clone())]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        command_line(&literal(
            &args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn plain_arguments_stay_bare() {
        assert_eq!(
            line(&["/usr/bin/web", "--port=8080", "-v", "a,b:c@d"]),
            "/usr/bin/web --port=8080 -v a,b:c@d"
        );
    }

    #[test]
    fn spaces_quotes_and_backslashes_are_quoted_and_escaped() {
        assert_eq!(
            line(&["/bin/sh", "-c", "echo \"hi there\" \\n"]),
            r#"/bin/sh -c "echo \"hi there\" \\n""#
        );
        assert_eq!(line(&["/bin/x", ""]), r#"/bin/x """#);
        assert_eq!(line(&["/bin/x", "it's"]), r#"/bin/x "it's""#);
    }

    #[test]
    fn percent_and_dollar_are_doubled_in_a_command_line() {
        assert_eq!(
            line(&["/bin/x", "100%", "$HOME", "${A}"]),
            r#"/bin/x "100%%" "$$HOME" "$${A}""#
        );
    }

    #[test]
    fn a_lone_semicolon_is_an_argument_not_a_separator() {
        assert_eq!(
            line(&["/usr/bin/find", ".", "-exec", "rm", "{}", ";"]),
            r#"/usr/bin/find . -exec rm "{}" ";""#
        );
    }

    #[test]
    fn control_characters_become_c_escapes() {
        assert_eq!(line(&["/bin/x", "a\nb\tc\u{1}"]), r#"/bin/x "a\nb\tc\x01""#);
    }

    #[test]
    fn environment_words_double_percent_but_keep_dollar() {
        assert_eq!(
            env_assignment("GREETING", "say \"hi\" 50% $USER \\"),
            r#""GREETING=say \"hi\" 50%% $USER \\""#
        );
    }

    #[test]
    fn instance_placeholders_become_the_instance_specifier() {
        let pieces = template_pieces("--id={instance}").unwrap();
        assert_eq!(command_line(&[pieces]), "--id=%i");
        let spaced = template_pieces("worker {instance} of 100%").unwrap();
        assert_eq!(command_line(&[spaced]), r#""worker %i of 100%%""#);
        assert_eq!(
            template_pieces("{instance + 8080}").unwrap_err(),
            "{instance + 8080}"
        );
        assert_eq!(
            template_pieces("{\"json\": 1}").unwrap(),
            vec![Piece::Text("{\"json\": 1}".into())]
        );
    }

    #[test]
    fn verbatim_values_refuse_what_a_line_cannot_carry() {
        assert_eq!(
            verbatim("WorkingDirectory", "/srv/my app%").unwrap(),
            "/srv/my app%%"
        );
        assert!(verbatim("WorkingDirectory", "/srv/a\nb").is_err());
        assert!(verbatim("WorkingDirectory", "/srv/a\\").is_err());
        assert!(verbatim("WorkingDirectory", " /srv").is_err());
    }
}
