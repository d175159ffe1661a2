//! Writing a value's cells: a serializer that walks the value beside its
//! layout ([`Node`]), putting each leaf into its column.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

use super::{Cell, NaiveDate, NaiveDateTime, Node, Uuid, ValueType};

/// Why a value did not fit its layout, and in which column.
#[derive(Debug)]
pub(super) struct CellError {
    pub(super) column: Option<usize>,
    pub(super) message: String,
}

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CellError {}

impl ser::Error for CellError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CellError {
            column: None,
            message: msg.to_string(),
        }
    }
}

/// Writes `value`, laid out as `node`, into `out` (the row's cells, all
/// `NULL` to begin with).
pub(super) fn write<T: Serialize + ?Sized>(
    node: &Node,
    value: &T,
    out: &mut [Cell],
) -> Result<(), CellError> {
    if let Node::Leaf {
        col,
        ty: ValueType::Json,
    } = *node
    {
        let mut text = String::new();
        super::json::write(value, &mut text).map_err(|e| CellError {
            column: Some(col),
            message: e.to_string(),
        })?;
        out[col] = Cell::Json(text);
        return Ok(());
    }
    value.serialize(Writer { node, out })
}

/// What serde handed over for one leaf.
enum Prim<'v> {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Char(char),
    Str(&'v str),
    Bytes(&'v [u8]),
}

impl Prim<'_> {
    fn what(&self) -> &'static str {
        match self {
            Prim::Bool(_) => "a bool",
            Prim::I64(_) | Prim::U64(_) | Prim::I128(_) | Prim::U128(_) => "an integer",
            Prim::F64(_) => "a float",
            Prim::Char(_) => "a char",
            Prim::Str(_) => "a string",
            Prim::Bytes(_) => "bytes",
        }
    }
}

struct Writer<'a> {
    node: &'a Node,
    out: &'a mut [Cell],
}

impl<'a> Writer<'a> {
    fn column(&self) -> Option<usize> {
        match self.node {
            Node::Leaf { col, .. } => Some(*col),
            _ => None,
        }
    }

    fn mismatch(&self, found: &str) -> CellError {
        let expected = match self.node {
            Node::Leaf { ty, .. } => ty.name(),
            Node::Unit => "a unit",
            Node::Fields(_) => "a struct or tuple",
            Node::Opt(_) => "an option",
        };
        CellError {
            column: self.column(),
            message: format!("the value gave {found} where its type's layout has {expected}"),
        }
    }

    fn put(self, p: Prim<'_>) -> Result<(), CellError> {
        let Node::Leaf { col, ty } = *self.node else {
            return Err(self.mismatch(p.what()));
        };
        let bad = |detail: String| CellError {
            column: Some(col),
            message: detail,
        };
        let cell = match (ty, &p) {
            (ValueType::Bool, Prim::Bool(b)) => Cell::Bool(*b),
            (ValueType::Int, Prim::I64(i)) => Cell::Int(*i),
            (ValueType::Int, Prim::U64(u)) => {
                Cell::Int(i64::try_from(*u).map_err(|_| bad(format!("{u} does not fit a BIGINT")))?)
            }
            (ValueType::Numeric, Prim::I64(i)) => Cell::Numeric(i.to_string()),
            (ValueType::Numeric, Prim::U64(u)) => Cell::Numeric(u.to_string()),
            (ValueType::Numeric, Prim::I128(i)) => Cell::Numeric(i.to_string()),
            (ValueType::Numeric, Prim::U128(u)) => Cell::Numeric(u.to_string()),
            (ValueType::Float, Prim::F64(f)) => Cell::Float(*f),
            (ValueType::Text, Prim::Str(s)) => Cell::Text((*s).to_owned()),
            (ValueType::Text, Prim::Char(c)) => Cell::Text(c.to_string()),
            (ValueType::Date, Prim::Str(s)) => Cell::Date(match plain_date(s.as_bytes()) {
                Some(d) => d,
                None => s
                    .parse::<NaiveDate>()
                    .map_err(|e| bad(format!("`{s}` is not a date: {e}")))?,
            }),
            (ValueType::Timestamp, Prim::Str(s)) => {
                Cell::Timestamp(match plain_timestamp(s.as_bytes()) {
                    Some(t) => t,
                    None => s
                        .parse::<NaiveDateTime>()
                        .map_err(|e| bad(format!("`{s}` is not a timestamp: {e}")))?,
                })
            }
            (ValueType::Uuid, Prim::Bytes(b)) => {
                Cell::Uuid(Uuid::from_slice(b).map_err(|e| bad(format!("not a UUID: {e}")))?)
            }
            (ValueType::Uuid, Prim::Str(s)) => Cell::Uuid(
                s.parse::<Uuid>()
                    .map_err(|e| bad(format!("`{s}` is not a UUID: {e}")))?,
            ),
            (ValueType::Bytes, Prim::Bytes(b)) => Cell::Bytes(b.to_vec()),
            _ => return Err(self.mismatch(p.what())),
        };
        self.out[col] = cell;
        Ok(())
    }

    /// A struct's or tuple's fields, or (a bytes leaf) a sequence of `u8`s.
    fn compound(self, len: Option<usize>) -> Result<Compound<'a>, CellError> {
        match self.node {
            Node::Fields(nodes) => Ok(Compound::Fields {
                nodes,
                out: self.out,
                next: 0,
            }),
            Node::Unit if len.unwrap_or(0) == 0 => Ok(Compound::Fields {
                nodes: &[],
                out: self.out,
                next: 0,
            }),
            Node::Leaf {
                col,
                ty: ValueType::Bytes,
            } => Ok(Compound::Bytes {
                col: *col,
                out: self.out,
                bytes: Vec::with_capacity(len.unwrap_or(0)),
            }),
            _ => Err(self.mismatch("a sequence")),
        }
    }
}

/// The number of the ASCII digits `d`.
fn digits(d: &[u8]) -> Option<u32> {
    d.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD`, the form chrono writes a date of years 0 to 9999 in,
/// read without chrono's general parser (the common case, on the write
/// path of every cache row with a date); `None` for any other form.
fn plain_date(s: &[u8]) -> Option<NaiveDate> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(&s[..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, digits(&s[5..7])?, digits(&s[8..10])?)
}

/// `YYYY-MM-DDTHH:MM:SS` with up to nine fractional digits, as chrono
/// writes a timestamp of years 0 to 9999 (no leap second); `None` for any
/// other form.
fn plain_timestamp(s: &[u8]) -> Option<NaiveDateTime> {
    if s.len() < 19 || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let nanos = match &s[19..] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            digits(frac)? * 10u32.pow(9 - frac.len() as u32)
        }
        _ => return None,
    };
    plain_date(&s[..10])?.and_hms_nano_opt(
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
        nanos,
    )
}

/// A short text written without allocating (a date's or a number's).
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The fields of a struct or tuple, or the bytes of a sequence of `u8`s.
enum Compound<'a> {
    Fields {
        nodes: &'a [Node],
        out: &'a mut [Cell],
        next: usize,
    },
    Bytes {
        col: usize,
        out: &'a mut [Cell],
        bytes: Vec<u8>,
    },
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CellError> {
        match self {
            Compound::Fields { nodes, out, next } => {
                let node = nodes.get(*next).ok_or_else(|| CellError {
                    column: None,
                    message: format!("the value has more than {} fields", nodes.len()),
                })?;
                *next += 1;
                write(node, value, out)
            }
            Compound::Bytes { col, bytes, .. } => {
                let col = *col;
                bytes.push(value.serialize(U8Catcher).map_err(|mut e| {
                    e.column = Some(col);
                    e
                })?);
                Ok(())
            }
        }
    }

    fn skip(&mut self) {
        if let Compound::Fields { next, .. } = self {
            *next += 1;
        }
    }

    fn end(self) -> Result<(), CellError> {
        match self {
            Compound::Fields { nodes, next, .. } if next != nodes.len() => Err(CellError {
                column: None,
                message: format!("the value has {next} fields, its layout {}", nodes.len()),
            }),
            Compound::Fields { .. } => Ok(()),
            Compound::Bytes { col, out, bytes } => {
                out[col] = Cell::Bytes(bytes);
                Ok(())
            }
        }
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = CellError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CellError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CellError> {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = CellError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CellError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CellError> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = CellError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CellError> {
        self.element(value)
    }
    fn end(self) -> Result<(), CellError> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = CellError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), CellError> {
        self.element(value)
    }
    fn skip_field(&mut self, _key: &'static str) -> Result<(), CellError> {
        // Its columns stay `NULL`.
        self.skip();
        Ok(())
    }
    fn end(self) -> Result<(), CellError> {
        Compound::end(self)
    }
}

macro_rules! prims {
    ($($method:ident($t:ty) => $make:expr;)*) => {
        $(fn $method(self, v: $t) -> Result<(), CellError> {
            #[allow(clippy::redundant_closure_call)]
            self.put(($make)(v))
        })*
    };
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = CellError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Impossible<(), CellError>;
    type SerializeMap = Impossible<(), CellError>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Impossible<(), CellError>;

    fn is_human_readable(&self) -> bool {
        // As the tracer: a UUID is then 16 bytes, not text to parse.
        false
    }

    prims! {
        serialize_bool(bool) => Prim::Bool;
        serialize_i8(i8) => |v| Prim::I64(i64::from(v));
        serialize_i16(i16) => |v| Prim::I64(i64::from(v));
        serialize_i32(i32) => |v| Prim::I64(i64::from(v));
        serialize_i64(i64) => Prim::I64;
        serialize_i128(i128) => Prim::I128;
        serialize_u8(u8) => |v| Prim::U64(u64::from(v));
        serialize_u16(u16) => |v| Prim::U64(u64::from(v));
        serialize_u32(u32) => |v| Prim::U64(u64::from(v));
        serialize_u64(u64) => Prim::U64;
        serialize_u128(u128) => Prim::U128;
        serialize_f32(f32) => |v| Prim::F64(f64::from(v));
        serialize_f64(f64) => Prim::F64;
        serialize_char(char) => Prim::Char;
    }

    fn serialize_str(self, v: &str) -> Result<(), CellError> {
        self.put(Prim::Str(v))
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), CellError> {
        // Dates and timestamps come this way: short, so formatted on the
        // stack rather than into a new string.
        let mut text = StackText {
            buf: [0; 64],
            len: 0,
        };
        if fmt::Write::write_fmt(&mut text, format_args!("{value}")).is_ok()
            && let Ok(s) = std::str::from_utf8(&text.buf[..text.len])
        {
            return self.put(Prim::Str(s));
        }
        self.put(Prim::Str(&value.to_string()))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CellError> {
        self.put(Prim::Bytes(v))
    }

    fn serialize_none(self) -> Result<(), CellError> {
        match self.node {
            Node::Opt(_) => Ok(()),
            // A recursive type's deeper levels: one nullable JSON column.
            Node::Leaf {
                ty: ValueType::Json,
                ..
            } => Ok(()),
            _ => Err(self.mismatch("`None`")),
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CellError> {
        match self.node {
            Node::Opt(inner) => write(inner, value, self.out),
            _ => Err(self.mismatch("an option")),
        }
    }

    fn serialize_unit(self) -> Result<(), CellError> {
        match self.node {
            Node::Unit => Ok(()),
            _ => Err(self.mismatch("a unit")),
        }
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CellError> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), CellError> {
        Err(self.mismatch("an enum"))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CellError> {
        write(self.node, value, self.out)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), CellError> {
        Err(self.mismatch("an enum"))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>, CellError> {
        match self.node {
            Node::Leaf {
                ty: ValueType::Bytes,
                ..
            } => self.compound(len),
            _ => Err(self.mismatch("a sequence")),
        }
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, CellError> {
        self.compound(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, CellError> {
        self.compound(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CellError> {
        Err(self.mismatch("an enum"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, CellError> {
        Err(self.mismatch("a map"))
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a>, CellError> {
        match self.node {
            Node::Fields(_) | Node::Unit => self.compound(Some(len)),
            _ => Err(self.mismatch("a struct")),
        }
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CellError> {
        Err(self.mismatch("an enum"))
    }
}

/// Takes one `u8` (an element of a bytes column), refusing anything else.
struct U8Catcher;

fn not_u8() -> CellError {
    CellError {
        column: None,
        message: "an element of a bytes column that is not a u8".into(),
    }
}

macro_rules! refuse {
    ($($method:ident($($t:ty),*);)*) => {
        $(fn $method(self, $(_: $t),*) -> Result<u8, CellError> { Err(not_u8()) })*
    };
}

impl ser::Serializer for U8Catcher {
    type Ok = u8;
    type Error = CellError;
    type SerializeSeq = Impossible<u8, CellError>;
    type SerializeTuple = Impossible<u8, CellError>;
    type SerializeTupleStruct = Impossible<u8, CellError>;
    type SerializeTupleVariant = Impossible<u8, CellError>;
    type SerializeMap = Impossible<u8, CellError>;
    type SerializeStruct = Impossible<u8, CellError>;
    type SerializeStructVariant = Impossible<u8, CellError>;

    fn serialize_u8(self, v: u8) -> Result<u8, CellError> {
        Ok(v)
    }

    refuse! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _v: &T) -> Result<u8, CellError> {
        Err(not_u8())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<u8, CellError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _v: &T,
    ) -> Result<u8, CellError> {
        Err(not_u8())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, CellError> {
        Err(not_u8())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, CellError> {
        Err(not_u8())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, CellError> {
        Err(not_u8())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CellError> {
        Err(not_u8())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, CellError> {
        Err(not_u8())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, CellError> {
        Err(not_u8())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CellError> {
        Err(not_u8())
    }
}
