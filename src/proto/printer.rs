//! Writes messages as Caffe-style prototxt: fields in field-number order (so `layer`, number
//! 100, comes last as in Caffe's output), two-space indent, `name { ... }` blocks, repeated
//! fields written repeatedly and enums by name.

use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

/// Prototxt text of a message that implements `ReflectMessage` (a `DynamicMessage`; the prost
/// types generated from caffe.proto do not implement it: use `message_to_prototxt` for those).
pub fn to_prototxt<T: ReflectMessage>(msg: &T) -> String {
    let dynamic = msg.transcode_to_dynamic();
    let mut out = String::new();
    write_message(&dynamic, 0, &mut out);
    out
}

/// Prototxt text of a generated Caffe message, given its full name (e.g. "caffe.NetParameter").
pub fn message_to_prototxt<T: prost::Message>(msg: &T, full_name: &str) -> anyhow::Result<String> {
    let desc = super::descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow::anyhow!("internal: message {full_name} missing from the schema"))?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())?;
    let mut out = String::new();
    write_message(&dynamic, 0, &mut out);
    Ok(out)
}

fn write_message(msg: &DynamicMessage, indent: usize, out: &mut String) {
    let mut fields: Vec<_> = msg.fields().collect();
    fields.sort_by_key(|(f, _)| f.number());
    for (field, value) in fields {
        match value {
            Value::List(items) => {
                for item in items {
                    write_field(field.name(), &field.kind(), item, indent, out);
                }
            }
            v => write_field(field.name(), &field.kind(), v, indent, out),
        }
    }
}

fn write_field(name: &str, kind: &Kind, value: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Message(m) => {
            out.push_str(&format!("{pad}{name} {{\n"));
            write_message(m, indent + 1, out);
            out.push_str(&format!("{pad}}}\n"));
        }
        v => out.push_str(&format!("{pad}{name}: {}\n", scalar(kind, v))),
    }
}

fn scalar(kind: &Kind, v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::I32(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::F32(x) => float(*x as f64, x.to_string()),
        Value::F64(x) => float(*x, x.to_string()),
        Value::String(s) => quote(s.as_bytes()),
        Value::Bytes(b) => quote(b),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map(|v| v.name().to_string())
                .unwrap_or(n.to_string()),
            _ => n.to_string(),
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => unreachable!("handled by caller"),
    }
}

fn float(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        shortest
    }
}

fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\{:03o}", b)),
        }
    }
    s.push('"');
    s
}
