//! Tracing a row type's columns through its `Deserialize` impl.
//!
//! The tracer is a deserializer that answers every request with a made-up
//! value and records what was asked: a struct's field names, an `Option`,
//! an `i64`. Where a type may refuse the made-up value (a `NaiveDate`
//! refuses the text `x`, a `NonZeroU32` refuses 0, a `Uuid` refuses 3
//! bytes), the request is a *decision point* with a few probes to offer in
//! turn; the probe a type accepts also tells what it is (text, a date, a
//! timestamp). A refusal fails the whole pass (a visitor is used up), so
//! the trace runs again with the next probe at the point that refused,
//! until one pass goes through or a point runs out of probes.

use std::collections::HashMap;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{MAX_COLUMN_NAME, Node, RowColumns, ValueColumn, ValueType};

/// How deep structs, options and enums may nest before the trace gives up.
const MAX_DEPTH: usize = 32;

/// How deep an `Option` may be and still be columns: a recursive type (a
/// struct holding an `Option<Box<Self>>`) stops here, its deeper levels one
/// nullable JSON column.
const MAX_OPTION_DEPTH: usize = 12;

/// How many passes a trace may take before giving up.
const MAX_PASSES: usize = 512;

#[derive(Debug)]
pub(super) struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

fn exhausted() -> TraceError {
    TraceError("no probe left".into())
}

/// A column as traced: its path-derived name before cleaning, and whether
/// it came from a `u8` (so that a tuple of them becomes one bytes column).
struct Traced {
    name: String,
    ty: ValueType,
    nullable: bool,
    from_u8: bool,
}

/// What one pass knows and finds.
struct Pass<'a> {
    /// The probe to offer at each decision point, by path (absent: the first).
    attempts: &'a HashMap<String, usize>,
    /// The innermost decision point that refused in this pass and has
    /// probes left.
    blame: Option<String>,
    columns: Vec<Traced>,
}

/// Traces `R`'s columns; `None` when no pass goes through.
pub(super) fn trace<R: DeserializeOwned>() -> Option<RowColumns> {
    let mut attempts: HashMap<String, usize> = HashMap::new();
    for _ in 0..MAX_PASSES {
        let mut pass = Pass {
            attempts: &attempts,
            blame: None,
            columns: Vec::new(),
        };
        let mut root = Node::Unit;
        let tracer = Tracer {
            pass: &mut pass,
            out: &mut root,
            name: String::new(),
            path: String::new(),
            nullable: false,
            depth: 0,
            discard: false,
        };
        match R::deserialize(tracer) {
            Ok(_) => return Some(finish(pass.columns, root)),
            Err(_) => {
                let blame = pass.blame?;
                *attempts.entry(blame).or_insert(0) += 1;
            }
        }
    }
    None
}

/// The columns with clean, unique names.
fn finish(traced: Vec<Traced>, root: Node) -> RowColumns {
    let mut columns: Vec<ValueColumn> = Vec::with_capacity(traced.len());
    for t in traced {
        let raw = if t.name.is_empty() { "value" } else { &t.name };
        let base = crate::sql_ident(raw, MAX_COLUMN_NAME);
        let mut name = base.clone();
        let mut n = 1;
        while columns.iter().any(|c| c.name == name) {
            n += 1;
            let suffix = format!("_{n}");
            let mut cut = base.clone();
            cut.truncate(MAX_COLUMN_NAME - suffix.len());
            name = format!("{cut}{suffix}");
        }
        columns.push(ValueColumn {
            name,
            ty: t.ty,
            nullable: t.nullable,
        });
    }
    RowColumns { columns, root }
}

/// The deserializer of one value during a pass.
struct Tracer<'p, 'a> {
    pass: &'p mut Pass<'a>,
    /// Where this value's layout goes.
    out: &'p mut Node,
    /// The column name so far (`parent_child`).
    name: String,
    /// The decision path: unique per position in the type.
    path: String,
    nullable: bool,
    depth: usize,
    /// Inside an enum (a JSON column): the value is needed, its columns not.
    discard: bool,
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}_{child}")
    }
}

impl<'p, 'a> Tracer<'p, 'a> {
    /// The probe to offer here, of `n`; an error when none is left.
    fn attempt(&self, n: usize) -> Result<usize, TraceError> {
        let a = self.pass.attempts.get(&self.path).copied().unwrap_or(0);
        if a < n { Ok(a) } else { Err(exhausted()) }
    }

    /// Records this point as the one to change, unless a deeper one was.
    fn blame<T>(
        pass: &mut Pass<'_>,
        path: &str,
        r: Result<T, TraceError>,
    ) -> Result<T, TraceError> {
        if r.is_err() && pass.blame.is_none() {
            pass.blame = Some(path.to_owned());
        }
        r
    }

    fn leaf(&mut self, ty: ValueType, from_u8: bool) {
        if self.discard {
            return;
        }
        let col = self.pass.columns.len();
        self.pass.columns.push(Traced {
            name: self.name.clone(),
            ty,
            nullable: self.nullable,
            from_u8,
        });
        *self.out = Node::Leaf { col, ty };
    }

    fn child<'q>(
        pass: &'q mut Pass<'a>,
        out: &'q mut Node,
        name: String,
        path: String,
        nullable: bool,
        depth: usize,
        discard: bool,
    ) -> Tracer<'q, 'a> {
        Tracer {
            pass,
            out,
            name,
            path,
            nullable,
            depth,
            discard,
        }
    }

    fn deeper(&self) -> Result<usize, TraceError> {
        if self.depth >= MAX_DEPTH {
            Err(TraceError("nested too deep".into()))
        } else {
            Ok(self.depth + 1)
        }
    }

    /// A sequence of `names.len()` fields, each traced as a column group.
    fn fields<'de, V: Visitor<'de>>(
        &mut self,
        names: Vec<String>,
        v: V,
    ) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        let mut children = vec![Node::Unit; names.len()];
        let r = v.visit_seq(Fields {
            pass: &mut *self.pass,
            children: &mut children,
            names,
            path: &self.path,
            nullable: self.nullable,
            depth,
            discard: self.discard,
            next: 0,
        });
        if !self.discard {
            *self.out = if children.is_empty() {
                Node::Unit
            } else {
                Node::Fields(children)
            };
        }
        r
    }
}

macro_rules! probed {
    ($method:ident, $visit:ident, $ty:expr, $u8:expr, [$($probe:expr),+]) => {
        fn $method<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, TraceError> {
            let probes = [$($probe),+];
            let a = self.attempt(probes.len())?;
            self.leaf($ty, $u8);
            let r = v.$visit(probes[a]);
            Tracer::blame(self.pass, &self.path, r)
        }
    };
}

impl<'de, 'p, 'a> de::Deserializer<'de> for Tracer<'p, 'a> {
    type Error = TraceError;

    fn is_human_readable(&self) -> bool {
        // As the cell writer: a UUID is then 16 bytes, not text.
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, TraceError> {
        Err(TraceError("the type needs a self-describing format".into()))
    }

    probed!(
        deserialize_bool,
        visit_bool,
        ValueType::Bool,
        false,
        [false, true]
    );
    probed!(deserialize_i8, visit_i8, ValueType::Int, false, [0, 1]);
    probed!(deserialize_i16, visit_i16, ValueType::Int, false, [0, 1]);
    probed!(deserialize_i32, visit_i32, ValueType::Int, false, [0, 1]);
    probed!(deserialize_i64, visit_i64, ValueType::Int, false, [0, 1]);
    probed!(deserialize_u8, visit_u8, ValueType::Int, true, [0, 1]);
    probed!(deserialize_u16, visit_u16, ValueType::Int, false, [0, 1]);
    probed!(deserialize_u32, visit_u32, ValueType::Int, false, [0, 1]);
    probed!(
        deserialize_u64,
        visit_u64,
        ValueType::Numeric,
        false,
        [0, 1]
    );
    probed!(
        deserialize_i128,
        visit_i128,
        ValueType::Numeric,
        false,
        [0, 1]
    );
    probed!(
        deserialize_u128,
        visit_u128,
        ValueType::Numeric,
        false,
        [0, 1]
    );
    probed!(
        deserialize_f32,
        visit_f32,
        ValueType::Float,
        false,
        [0.0, 1.0]
    );
    probed!(
        deserialize_f64,
        visit_f64,
        ValueType::Float,
        false,
        [0.0, 1.0]
    );
    probed!(
        deserialize_char,
        visit_char,
        ValueType::Text,
        false,
        ['x', '0']
    );

    fn deserialize_str<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, TraceError> {
        // Text takes anything; a date or a timestamp only its own form.
        const PROBES: [(&str, ValueType); 3] = [
            ("x", ValueType::Text),
            ("1970-01-01", ValueType::Date),
            ("1970-01-01T00:00:00", ValueType::Timestamp),
        ];
        let a = self.attempt(PROBES.len())?;
        let (probe, ty) = PROBES[a];
        self.leaf(ty, false);
        let r = v.visit_str(probe);
        Tracer::blame(self.pass, &self.path, r)
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, TraceError> {
        // Bytes take any length; a UUID only 16.
        const PROBES: [(&[u8], ValueType); 2] =
            [(b"abc", ValueType::Bytes), (&[0; 16], ValueType::Uuid)];
        let a = self.attempt(PROBES.len())?;
        let (probe, ty) = PROBES[a];
        self.leaf(ty, false);
        let r = v.visit_bytes(probe);
        Tracer::blame(self.pass, &self.path, r)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        let depth = self.depth + 1;
        if depth > MAX_OPTION_DEPTH {
            // A recursive type: its deeper levels are not columns.
            let mut me = self;
            me.nullable = true;
            me.leaf(ValueType::Json, false);
            return v.visit_none();
        }
        let mut inner = Node::Unit;
        let r = v.visit_some(Tracer::child(
            self.pass,
            &mut inner,
            self.name.clone(),
            format!("{}?", self.path),
            true,
            depth,
            self.discard,
        ));
        if !self.discard {
            *self.out = Node::Opt(Box::new(inner));
        }
        r
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        if !self.discard {
            *self.out = Node::Unit;
        }
        v.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        let me = Tracer { depth, ..self };
        v.visit_newtype_struct(me)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, TraceError> {
        // First as bytes (one `u8` element), else as JSON (no element).
        let a = self.attempt(2)?;
        if a == 0 {
            self.leaf(ValueType::Bytes, false);
            let r = v.visit_seq(OneU8 { done: false });
            Tracer::blame(self.pass, &self.path, r)
        } else {
            self.leaf(ValueType::Json, false);
            let r = v.visit_seq(Empty);
            Tracer::blame(self.pass, &self.path, r)
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        mut self,
        len: usize,
        v: V,
    ) -> Result<V::Value, TraceError> {
        let first = self.pass.columns.len();
        let names = (0..len).map(|i| format!("{}_{i}", self.name)).collect();
        let r = self.fields(names, v);
        // A tuple of `u8`s (an array `[u8; N]`) is one bytes column.
        let columns = &mut self.pass.columns;
        if !self.discard
            && len > 0
            && columns.len() == first + len
            && columns[first..].iter().all(|c| c.from_u8)
        {
            columns.truncate(first);
            self.leaf(ValueType::Bytes, false);
        }
        r
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_tuple(len, v)
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, v: V) -> Result<V::Value, TraceError> {
        self.leaf(ValueType::Json, false);
        let r = v.visit_map(Empty);
        Tracer::blame(self.pass, &self.path, r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        let names = fields.iter().map(|f| join(&self.name, f)).collect();
        let mut me = self;
        me.fields(names, v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        // Each variant in turn as a unit, then each with made-up contents.
        let n = variants.len();
        let a = self.attempt(2 * n)?;
        let depth = self.deeper()?;
        self.leaf(ValueType::Json, false);
        let r = v.visit_enum(Variant {
            pass: &mut *self.pass,
            index: a % n,
            with_content: a >= n,
            path: format!("{}/{}", self.path, a % n),
            depth,
        });
        Tracer::blame(self.pass, &self.path, r)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, TraceError> {
        Err(TraceError("an identifier outside a struct or enum".into()))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, TraceError> {
        Err(TraceError("an ignored value".into()))
    }
}

/// The fields of a struct or tuple, each traced in turn.
struct Fields<'q, 'a> {
    pass: &'q mut Pass<'a>,
    children: &'q mut [Node],
    names: Vec<String>,
    path: &'q str,
    nullable: bool,
    depth: usize,
    discard: bool,
    next: usize,
}

impl<'de, 'q, 'a> SeqAccess<'de> for Fields<'q, 'a> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        let i = self.next;
        let Some(name) = self.names.get(i) else {
            return Ok(None);
        };
        self.next += 1;
        let tracer = Tracer {
            pass: &mut *self.pass,
            out: &mut self.children[i],
            name: name.clone(),
            path: format!("{}.{i}", self.path),
            nullable: self.nullable,
            depth: self.depth,
            discard: self.discard,
        };
        seed.deserialize(tracer).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.names.len() - self.next)
    }
}

/// A sequence of one `u8`: is the element type `u8`?
struct OneU8 {
    done: bool,
}

impl<'de> SeqAccess<'de> for OneU8 {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(U8Only).map(Some)
    }
}

/// Gives a `u8`, and refuses to be anything else.
struct U8Only;

impl<'de> de::Deserializer<'de> for U8Only {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, TraceError> {
        Err(TraceError("not a u8".into()))
    }

    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_u8(0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// An empty sequence or map.
struct Empty;

impl<'de> SeqAccess<'de> for Empty {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        _seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        Ok(None)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(0)
    }
}

impl<'de> MapAccess<'de> for Empty {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        _seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        _seed: V,
    ) -> Result<V::Value, TraceError> {
        Err(TraceError("no value".into()))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(0)
    }
}

/// The variant an enum is given in a pass, and its made-up contents.
struct Variant<'q, 'a> {
    pass: &'q mut Pass<'a>,
    index: usize,
    with_content: bool,
    path: String,
    depth: usize,
}

impl<'q, 'a> Variant<'q, 'a> {
    fn content<'s>(&'s mut self, out: &'s mut Node) -> Result<Tracer<'s, 'a>, TraceError> {
        if !self.with_content {
            return Err(TraceError("not a unit variant".into()));
        }
        Ok(Tracer {
            pass: &mut *self.pass,
            out,
            name: String::new(),
            path: self.path.clone(),
            nullable: false,
            depth: self.depth,
            discard: true,
        })
    }
}

impl<'de, 'q, 'a> EnumAccess<'de> for Variant<'q, 'a> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), TraceError> {
        let index = u32::try_from(self.index).map_err(|_| exhausted())?;
        let d: de::value::U32Deserializer<TraceError> = index.into_deserializer();
        Ok((seed.deserialize(d)?, self))
    }
}

impl<'de, 'q, 'a> VariantAccess<'de> for Variant<'q, 'a> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        mut self,
        seed: T,
    ) -> Result<T::Value, TraceError> {
        let mut scratch = Node::Unit;
        let tracer = self.content(&mut scratch)?;
        seed.deserialize(tracer)
    }

    fn tuple_variant<V: Visitor<'de>>(mut self, len: usize, v: V) -> Result<V::Value, TraceError> {
        let mut scratch = Node::Unit;
        let mut tracer = self.content(&mut scratch)?;
        let names = (0..len).map(|i| i.to_string()).collect();
        tracer.fields(names, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        mut self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        let mut scratch = Node::Unit;
        let mut tracer = self.content(&mut scratch)?;
        let names = fields.iter().map(|f| (*f).to_owned()).collect();
        tracer.fields(names, v)
    }
}
