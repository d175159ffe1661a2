//! Rendering values and Z-sets as tables people can read.
//!
//! Values are rendered through their `Serialize` impl, so any row type works
//! without extra derives: a struct's fields become columns (a [`Pair`]'s
//! columns are `left` and `right`), anything else is one `_value_` column,
//! and nested values print like Python reprs (`Product(name='tv', price=3.0)`).
//!
//! [`Pair`]: crate::Pair

use std::fmt::{self, Display, Write as _};

use comfy_table::{CellAlignment, ContentLineStyle, LineStyle, Table, TableStyle};
use serde::ser::{self, Serialize};

use crate::float::python_repr;
use crate::{Weight, ZSet};

/// The box style of the original's tables (tabulate's `fancy_grid`).
const FANCY_GRID: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('╒', '═', '╤', '╕'))
    .header_lines(ContentLineStyle::new('│', '│', '│'))
    .header_separator(LineStyle::new('╞', '═', '╪', '╡'))
    .content_lines(ContentLineStyle::new('│', '│', '│'))
    .row_separator(LineStyle::new('├', '─', '┼', '┤'))
    .bottom_border(LineStyle::new('╘', '═', '╧', '╛'));

/// A value's printable form, built by [`ReprSerializer`].
#[derive(Debug, Clone)]
enum Repr {
    Unit,
    Atom(String),
    Str(String),
    Seq(&'static str, &'static str, Vec<Repr>),
    Struct(&'static str, Vec<(&'static str, Repr)>),
    TupleStruct(&'static str, Vec<Repr>),
    Map(Vec<(Repr, Repr)>),
}

impl Repr {
    /// The repr as a table cell: text at the top level is shown bare.
    fn cell(&self) -> String {
        match self {
            Repr::Str(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repr::Unit => f.write_str("()"),
            Repr::Atom(s) => f.write_str(s),
            Repr::Str(s) => write!(f, "{s:?}"),
            Repr::Seq(open, close, items) => {
                f.write_str(open)?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() == 1 && *open == "(" {
                    f.write_char(',')?;
                }
                f.write_str(close)
            }
            Repr::Struct(name, fields) => {
                write!(f, "{name}(")?;
                for (i, (field, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{field}={value}")?;
                }
                f.write_str(")")
            }
            Repr::TupleStruct(name, items) => {
                write!(f, "{name}(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
            Repr::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Renders one value the way table cells show nested values:
/// `Product(name="tv", price=3.0)`.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Product { name: String, price: stepping_zset::F64 }
/// let p = Product { name: "tv".into(), price: 3.0.into() };
/// assert_eq!(stepping_zset::render_value(&p), r#"Product(name="tv", price=3.0)"#);
/// ```
pub fn render_value<T: Serialize + ?Sized>(value: &T) -> String {
    repr(value).to_string()
}

fn repr<T: Serialize + ?Sized>(value: &T) -> Repr {
    // The serializer below has no failure of its own; a user `Serialize`
    // impl that fails is shown as its error rather than hiding the row.
    value
        .serialize(ReprSerializer)
        .unwrap_or_else(|e| Repr::Atom(format!("<{e}>")))
}

/// Renders `(value, weight)` rows as a table with a `_count_` column, one
/// column per struct field (or one `_value_` column).
pub fn render_table<'a, T: Serialize + 'a>(
    rows: impl IntoIterator<Item = (&'a T, Weight)>,
) -> String {
    let rows: Vec<(Repr, Weight)> = rows.into_iter().map(|(v, w)| (repr(v), w)).collect();
    let columns: Option<Vec<&'static str>> = {
        let mut shapes = rows.iter().map(|(r, _)| match r {
            Repr::Struct(_, fields) if !fields.is_empty() => {
                Some(fields.iter().map(|(name, _)| *name).collect::<Vec<_>>())
            }
            _ => None,
        });
        match shapes.next() {
            Some(Some(first)) if shapes.all(|s| s.as_ref() == Some(&first)) => Some(first),
            _ => None,
        }
    };
    let mut table = Table::new();
    table.load_style(FANCY_GRID);
    let mut header = vec!["_count_".to_owned()];
    match &columns {
        Some(names) => header.extend(names.iter().map(|n| (*n).to_owned())),
        None => header.push("_value_".to_owned()),
    }
    table.set_header(header);
    for (r, w) in &rows {
        let mut cells = vec![w.to_string()];
        match (&columns, r) {
            (Some(_), Repr::Struct(_, fields)) => {
                cells.extend(fields.iter().map(|(_, v)| v.cell()))
            }
            _ => cells.push(r.cell()),
        }
        table.add_row(cells);
    }
    if let Some(column) = table.column_mut(0) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    table.to_string()
}

impl<T: Serialize + Ord> Display for ZSet<T> {
    /// A table of the rows, sorted by value.
    ///
    /// ```
    /// use stepping_zset::{zset, ZSet};
    /// let z: ZSet<&str> = zset! { "b" => -1, "a" => 2 };
    /// let text = z.to_string();
    /// assert!(text.contains("_count_") && text.contains("_value_"));
    /// assert!(text.find("│       2 │ a").unwrap() < text.find("│      -1 │ b").unwrap());
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_table(self.sorted()))
    }
}

/// The error type of [`ReprSerializer`]: only user `Serialize` impls fail.
#[derive(Debug)]
struct ReprError(String);

impl Display for ReprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReprError {}

impl ser::Error for ReprError {
    fn custom<M: Display>(msg: M) -> Self {
        ReprError(msg.to_string())
    }
}

struct ReprSerializer;

struct SeqBuilder {
    open: &'static str,
    close: &'static str,
    name: Option<&'static str>,
    items: Vec<Repr>,
}

struct StructBuilder {
    name: &'static str,
    fields: Vec<(&'static str, Repr)>,
}

struct MapBuilder {
    entries: Vec<(Repr, Repr)>,
    key: Option<Repr>,
}

type R = Result<Repr, ReprError>;

impl ser::Serializer for ReprSerializer {
    type Ok = Repr;
    type Error = ReprError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructBuilder;

    fn serialize_bool(self, v: bool) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_i8(self, v: i8) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_i16(self, v: i16) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_i32(self, v: i32) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_i64(self, v: i64) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_i128(self, v: i128) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_u8(self, v: u8) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_u16(self, v: u16) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_u32(self, v: u32) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_u64(self, v: u64) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_u128(self, v: u128) -> R {
        Ok(Repr::Atom(v.to_string()))
    }
    fn serialize_f32(self, v: f32) -> R {
        Ok(Repr::Atom(python_repr(f64::from(v))))
    }
    fn serialize_f64(self, v: f64) -> R {
        Ok(Repr::Atom(python_repr(v)))
    }
    fn serialize_char(self, v: char) -> R {
        Ok(Repr::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> R {
        Ok(Repr::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        let mut s = String::from("0x");
        for b in v {
            let _ = write!(s, "{b:02x}");
        }
        Ok(Repr::Atom(s))
    }
    fn serialize_none(self) -> R {
        Ok(Repr::Atom("None".to_owned()))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(Repr::Unit)
    }
    fn serialize_unit_struct(self, name: &'static str) -> R {
        Ok(Repr::Atom(name.to_owned()))
    }
    fn serialize_unit_variant(self, _name: &'static str, _i: u32, variant: &'static str) -> R {
        Ok(Repr::Atom(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _i: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        let inner = value.serialize(ReprSerializer)?;
        // `OrEmpty::Value(x)` reads best as just `x`.
        if name == "OrEmpty" {
            return Ok(inner);
        }
        Ok(Repr::TupleStruct(variant, vec![inner]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ReprError> {
        Ok(SeqBuilder {
            open: "[",
            close: "]",
            name: None,
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ReprError> {
        Ok(SeqBuilder {
            open: "(",
            close: ")",
            name: None,
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ReprError> {
        Ok(SeqBuilder {
            open: "(",
            close: ")",
            name: Some(name),
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ReprError> {
        Ok(SeqBuilder {
            open: "(",
            close: ")",
            name: Some(variant),
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapBuilder, ReprError> {
        Ok(MapBuilder {
            entries: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructBuilder, ReprError> {
        Ok(StructBuilder {
            name,
            fields: Vec::with_capacity(len),
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructBuilder, ReprError> {
        Ok(StructBuilder {
            name: variant,
            fields: Vec::with_capacity(len),
        })
    }
}

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ReprError> {
        self.items.push(value.serialize(ReprSerializer)?);
        Ok(())
    }
    fn finish(self) -> R {
        Ok(match self.name {
            Some(name) => Repr::TupleStruct(name, self.items),
            None => Repr::Seq(self.open, self.close, self.items),
        })
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ReprError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ReprError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ReprError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ReprError> {
        self.push(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ReprError> {
        self.key = Some(key.serialize(ReprSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ReprError> {
        let key = self.key.take().unwrap_or(Repr::Unit);
        self.entries.push((key, value.serialize(ReprSerializer)?));
        Ok(())
    }
    fn end(self) -> R {
        Ok(Repr::Map(self.entries))
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ReprError> {
        self.fields.push((key, value.serialize(ReprSerializer)?));
        Ok(())
    }
    fn end(self) -> R {
        Ok(Repr::Struct(self.name, self.fields))
    }
}

impl ser::SerializeStructVariant for StructBuilder {
    type Ok = Repr;
    type Error = ReprError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ReprError> {
        self.fields.push((key, value.serialize(ReprSerializer)?));
        Ok(())
    }
    fn end(self) -> R {
        Ok(Repr::Struct(self.name, self.fields))
    }
}

#[cfg(test)]
mod tests {
    use crate::{F64, OrEmpty, Pair, zset};
    use serde::Serialize;

    #[derive(Serialize, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
    struct Product {
        name: String,
        price: F64,
    }

    #[test]
    fn struct_fields_become_columns() {
        let z = zset! {
            Product { name: "tv".into(), price: F64::new(3.0) } => 1,
            Product { name: "radio".into(), price: F64::new(5.5) } => -2,
        };
        let text = z.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("_count_") && lines[1].contains("name") && lines[1].contains("price")
        );
        assert!(text.contains("│      -2 │ radio │ 5.5   │"), "{text}");
        assert!(text.contains("│       1 │ tv    │ 3.0   │"), "{text}");
    }

    #[test]
    fn pairs_show_left_and_right_with_nested_reprs() {
        let p = Pair::new(
            Product {
                name: "tv".into(),
                price: F64::new(4.0),
            },
            OrEmpty::<i64>::Empty,
        );
        let text = zset! { p => 1 }.to_string();
        assert!(text.contains("left") && text.contains("right"), "{text}");
        assert!(
            text.contains(r#"Product(name="tv", price=4.0) │ Empty"#),
            "{text}"
        );
    }
}
