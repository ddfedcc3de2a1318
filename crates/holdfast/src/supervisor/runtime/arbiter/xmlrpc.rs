//! XML-RPC, as much as supervisord speaks: calls with string, int and bool parameters,
//! answers of any value, faults. Encoding escapes every text; decoding uses quick-xml
//! and rejects what is not a well-formed `methodResponse`.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::Event;

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    Double(f64),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
    Nil,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// A member of a struct.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.get(key),
            _ => None,
        }
    }
}

/// Why a call gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// The server answered with a fault (supervisord: `BAD_NAME`, `NOT_RUNNING`, ...).
    #[error("fault {code}: {string}")]
    Fault { code: i64, string: String },
    /// The answer is no XML-RPC response.
    #[error("malformed XML-RPC response: {0}")]
    Malformed(String),
}

/// A `methodCall` of `method` with `params`, every text escaped.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    out.push_str(&escape(method));
    out.push_str("</methodName><params>");
    for param in params {
        out.push_str("<param>");
        encode_value(param, &mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

fn encode_value(value: &Value, out: &mut String) {
    out.push_str("<value>");
    match value {
        Value::Int(i) => out.push_str(&format!("<int>{i}</int>")),
        Value::Bool(b) => out.push_str(&format!("<boolean>{}</boolean>", u8::from(*b))),
        Value::Str(s) => out.push_str(&format!("<string>{}</string>", escape(s.as_str()))),
        Value::Double(d) => out.push_str(&format!("<double>{d}</double>")),
        Value::Nil => out.push_str("<nil/>"),
        Value::Array(items) => {
            out.push_str("<array><data>");
            items.iter().for_each(|v| encode_value(v, out));
            out.push_str("</data></array>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (name, v) in members {
                out.push_str(&format!("<member><name>{}</name>", escape(name.as_str())));
                encode_value(v, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// The value of a `methodResponse`, or its fault.
pub fn parse_response(body: &[u8]) -> Result<Value, RpcError> {
    let text = std::str::from_utf8(body).map_err(|e| RpcError::Malformed(e.to_string()))?;
    let tree = Node::parse(text).map_err(RpcError::Malformed)?;
    if tree.name != "methodResponse" {
        return Err(RpcError::Malformed(format!(
            "<{}> instead of <methodResponse>",
            tree.name
        )));
    }
    if let Some(fault) = tree.child("fault") {
        let value = value_of(fault.child("value").ok_or_else(|| missing("fault value"))?)?;
        let code = value.get("faultCode").and_then(Value::as_int);
        let string = value.get("faultString").and_then(Value::as_str);
        return match (code, string) {
            (Some(code), Some(string)) => Err(RpcError::Fault {
                code,
                string: string.to_owned(),
            }),
            _ => Err(missing("faultCode and faultString")),
        };
    }
    let value = tree
        .child("params")
        .and_then(|p| p.child("param"))
        .and_then(|p| p.child("value"))
        .ok_or_else(|| missing("params/param/value"))?;
    value_of(value)
}

fn missing(what: &str) -> RpcError {
    RpcError::Malformed(format!("no {what}"))
}

/// A `<value>` element as a [`Value`]; a bare text is a string (XML-RPC's default).
fn value_of(node: &Node) -> Result<Value, RpcError> {
    let Some(typed) = node.children.first() else {
        return Ok(Value::Str(node.text.clone()));
    };
    let text = typed.text.trim();
    let bad = |what: &str| RpcError::Malformed(format!("bad {what} {text:?}"));
    Ok(match typed.name.as_str() {
        "int" | "i4" | "i8" => Value::Int(text.parse().map_err(|_| bad("int"))?),
        "boolean" => match text {
            "1" => Value::Bool(true),
            "0" => Value::Bool(false),
            _ => return Err(bad("boolean")),
        },
        "string" => Value::Str(typed.text.clone()),
        "double" => Value::Double(text.parse().map_err(|_| bad("double"))?),
        "nil" => Value::Nil,
        "array" => {
            let data = typed.child("data").ok_or_else(|| missing("array data"))?;
            let items: Result<Vec<Value>, RpcError> = data.children.iter().map(value_of).collect();
            Value::Array(items?)
        }
        "struct" => {
            let mut members = BTreeMap::new();
            for member in &typed.children {
                let name = member.child("name").ok_or_else(|| missing("member name"))?;
                let value = member
                    .child("value")
                    .ok_or_else(|| missing("member value"))?;
                members.insert(name.text.clone(), value_of(value)?);
            }
            Value::Struct(members)
        }
        other => return Err(RpcError::Malformed(format!("unknown type <{other}>"))),
    })
}

/// How deep elements may nest: supervisord's answers nest a few levels; a deeper
/// document is hostile (the tree is walked, and dropped, recursively).
const MAX_DEPTH: usize = 64;

/// An element with its child elements and its text (unescaped).
#[derive(Debug, Default)]
struct Node {
    name: String,
    children: Vec<Node>,
    text: String,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The document's root element.
    fn parse(text: &str) -> Result<Node, String> {
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<Node> = Vec::new();
        loop {
            match reader.read_event().map_err(|e| e.to_string())? {
                Event::Start(_) if stack.len() >= MAX_DEPTH => {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                Event::Start(start) => stack.push(Node {
                    name: start.local_name().as_ref().to_owned(),
                    ..Node::default()
                }),
                Event::Empty(empty) => {
                    let node = Node {
                        name: empty.local_name().as_ref().to_owned(),
                        ..Node::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => return Ok(node),
                    }
                }
                Event::Text(t) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&t.xml10_content());
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => String::from(c),
                        None => {
                            let name = r.xml10_content();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .map(str::to_owned)
                                .ok_or_else(|| format!("unknown entity &{name};"))?
                        }
                    };
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&resolved);
                    }
                }
                Event::CData(c) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&c.xml10_content());
                    }
                }
                Event::End(_) => {
                    let node = stack.pop().ok_or("unbalanced end tag")?;
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(node),
                        None => return Ok(node),
                    }
                }
                Event::Eof => return Err("the document ends before its root element".to_owned()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_escapes_its_texts() {
        let call = encode_call(
            "supervisor.getProcessInfo",
            &[Value::Str("a<b>&\"c\"".into()), Value::Bool(true)],
        );
        assert!(call.contains("<methodName>supervisor.getProcessInfo</methodName>"));
        assert!(call.contains("<string>a&lt;b&gt;&amp;&quot;c&quot;</string>"));
        assert!(call.contains("<boolean>1</boolean>"));
        // What it encodes, a parser reads back.
        let response = call
            .replace("methodCall", "methodResponse")
            .replace("<methodName>supervisor.getProcessInfo</methodName>", "");
        let value = parse_response(response.as_bytes()).unwrap();
        assert_eq!(value, Value::Str("a<b>&\"c\"".into()));
    }

    #[test]
    fn a_process_info_struct_is_read() {
        let body = r#"<?xml version='1.0'?>
<methodResponse>
<params>
<param>
<value><struct>
<member>
<name>name</name>
<value><string>web</string></value>
</member>
<member>
<name>statename</name>
<value><string>RUNNING</string></value>
</member>
<member>
<name>pid</name>
<value><int>4242</int></value>
</member>
<member>
<name>description</name>
<value>pid 4242, uptime 0:00:05 &amp; more</value>
</member>
<member>
<name>ok</name>
<value><boolean>1</boolean></value>
</member>
<member>
<name>list</name>
<value><array><data><value><i4>1</i4></value><value><nil/></value></data></array></value>
</member>
</struct></value>
</param>
</params>
</methodResponse>
"#;
        let value = parse_response(body.as_bytes()).unwrap();
        assert_eq!(value.get("name").and_then(Value::as_str), Some("web"));
        assert_eq!(value.get("pid").and_then(Value::as_int), Some(4242));
        assert_eq!(
            value.get("description").and_then(Value::as_str),
            Some("pid 4242, uptime 0:00:05 & more")
        );
        assert_eq!(value.get("ok"), Some(&Value::Bool(true)));
        assert_eq!(
            value.get("list"),
            Some(&Value::Array(vec![Value::Int(1), Value::Nil]))
        );
    }

    #[test]
    fn a_fault_is_an_error_with_its_code_and_string() {
        let body = "<?xml version='1.0'?><methodResponse><fault><value><struct>\
            <member><name>faultCode</name><value><int>10</int></value></member>\
            <member><name>faultString</name><value><string>BAD_NAME: nope</string></value></member>\
            </struct></value></fault></methodResponse>";
        assert_eq!(
            parse_response(body.as_bytes()),
            Err(RpcError::Fault {
                code: 10,
                string: "BAD_NAME: nope".into()
            })
        );
    }

    #[test]
    fn a_deeply_nested_answer_is_malformed_not_a_stack_overflow() {
        let depth = 100_000;
        let body = format!(
            "<methodResponse><params><param>{}{}</param></params></methodResponse>",
            "<value><array><data>".repeat(depth),
            "</data></array></value>".repeat(depth)
        );
        let err = parse_response(body.as_bytes()).expect_err("too deep");
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn a_bad_response_is_malformed_not_a_value() {
        for body in [
            "",
            "<html>502 Bad Gateway</html>",
            "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
            "<methodResponse><params></params></methodResponse>",
            "<methodResponse><params><param><value><int>1</int>",
            "<methodResponse><fault><value><struct></struct></value></fault></methodResponse>",
        ] {
            assert!(
                matches!(parse_response(body.as_bytes()), Err(RpcError::Malformed(_))),
                "{body:?}"
            );
        }
    }
}
