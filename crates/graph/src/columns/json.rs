//! JSON text of any serializable value, for `Json` columns (see
//! [`to_json`](super::to_json) for the representation). Written here rather
//! than taken from a JSON crate: it never fails on a value serde can
//! serialize (a map with keys that are not strings included) and never
//! writes what Postgres `jsonb` refuses.

use std::fmt::{self, Write as _};

use serde::ser::{self, Serialize};

#[derive(Debug)]
pub(super) struct JsonError(String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

impl ser::Error for JsonError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        JsonError(msg.to_string())
    }
}

/// Appends `value` as JSON to `out`.
pub(super) fn write<T: Serialize + ?Sized>(value: &T, out: &mut String) -> Result<(), JsonError> {
    value.serialize(Json { out })
}

/// `s` as a JSON string.
fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Postgres `jsonb` refuses `\u0000`.
            '\0' => out.push('\u{fffd}'),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn float(f: f64, out: &mut String) {
    if f.is_finite() {
        // `{:?}` is the shortest text that reads back as the same float,
        // and always JSON: `1.0`, `1e-7`, `-0.0`.
        let _ = write!(out, "{f:?}");
    } else {
        out.push_str("null");
    }
}

struct Json<'o> {
    out: &'o mut String,
}

/// An array or object being written.
struct Compound<'o> {
    out: &'o mut String,
    first: bool,
    /// What closes it: `]`, `}`, or `]}` / `}}` for an enum variant.
    close: &'static str,
}

impl Compound<'_> {
    fn comma(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }
}

impl<'o> Json<'o> {
    fn open(self, open: &str, close: &'static str) -> Compound<'o> {
        self.out.push_str(open);
        Compound {
            out: self.out,
            first: true,
            close,
        }
    }

    fn variant(self, variant: &str, open: &str, close: &'static str) -> Compound<'o> {
        self.out.push('{');
        string(variant, self.out);
        self.out.push(':');
        self.open(open, close)
    }
}

macro_rules! display {
    ($($method:ident($t:ty);)*) => {
        $(fn $method(self, v: $t) -> Result<(), JsonError> {
            let _ = write!(self.out, "{v}");
            Ok(())
        })*
    };
}

impl<'o> ser::Serializer for Json<'o> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = Compound<'o>;
    type SerializeTuple = Compound<'o>;
    type SerializeTupleStruct = Compound<'o>;
    type SerializeTupleVariant = Compound<'o>;
    type SerializeMap = Compound<'o>;
    type SerializeStruct = Compound<'o>;
    type SerializeStructVariant = Compound<'o>;

    display! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
    }

    fn serialize_f32(self, v: f32) -> Result<(), JsonError> {
        float(f64::from(v), self.out);
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), JsonError> {
        float(v, self.out);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        string(v.encode_utf8(&mut [0; 4]), self.out);
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        string(v, self.out);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), JsonError> {
        let mut seq = self.open("[", "]");
        for b in v {
            seq.comma();
            let _ = write!(seq.out, "{b}");
        }
        ser::SerializeSeq::end(seq)
    }

    fn serialize_none(self) -> Result<(), JsonError> {
        self.out.push_str("null");
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), JsonError> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), JsonError> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        string(variant, self.out);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.out.push('{');
        string(variant, self.out);
        self.out.push(':');
        value.serialize(Json { out: self.out })?;
        self.out.push('}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'o>, JsonError> {
        Ok(self.open("[", "]"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Compound<'o>, JsonError> {
        Ok(self.open("[", "]"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'o>, JsonError> {
        Ok(self.open("[", "]"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'o>, JsonError> {
        Ok(self.variant(variant, "[", "]}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'o>, JsonError> {
        Ok(self.open("{", "}"))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Compound<'o>, JsonError> {
        Ok(self.open("{", "}"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'o>, JsonError> {
        Ok(self.variant(variant, "{", "}}"))
    }
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.comma();
        value.serialize(Json { out: self.out })
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), JsonError> {
        self.comma();
        string(key, self.out);
        self.out.push(':');
        value.serialize(Json { out: self.out })
    }

    fn close(self) -> Result<(), JsonError> {
        self.out.push_str(self.close);
        Ok(())
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.element(value)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.element(value)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.element(value)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.element(value)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), JsonError> {
        self.comma();
        // JSON keys are strings: a key that is not one is its JSON text.
        let mut text = String::new();
        key.serialize(Json { out: &mut text })?;
        if text.starts_with('"') {
            self.out.push_str(&text);
        } else {
            string(&text, self.out);
        }
        self.out.push(':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        value.serialize(Json { out: self.out })
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}
