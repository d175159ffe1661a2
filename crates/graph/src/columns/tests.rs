//! Row types traced into columns and values written into cells, against
//! hand-written expectations.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};
use zset::{F64, Pair};

use super::*;

#[derive(Serialize, Deserialize)]
struct Daily {
    user_id: i64,
    meter_id: Uuid,
    date: NaiveDate,
    value: F64,
}

#[derive(Serialize, Deserialize)]
struct Inner {
    b: i64,
    when: Option<NaiveDateTime>,
}

#[derive(Serialize, Deserialize)]
enum Colour {
    Red,
    Rgb(u8, u8, u8),
    Named { name: String },
}

#[derive(Serialize, Deserialize)]
struct Wide {
    flag: bool,
    small: u8,
    big: u64,
    huge: i128,
    letter: char,
    inner: Option<Inner>,
    colour: Colour,
    tags: Vec<String>,
    blob: Vec<u8>,
    hash: [u8; 4],
    counts: BTreeMap<i64, String>,
    nz: NonZeroU32,
    pair: (i16, String),
}

fn cells<R: Serialize>(cols: &RowColumns, value: &R) -> Vec<Cell> {
    let mut out = Vec::new();
    cols.cells(value, &mut out).expect("cells");
    out
}

#[test]
fn a_struct_is_its_fields() {
    let cols = RowColumns::of::<Daily>();
    assert_eq!(
        cols.describe(),
        "user_id int, meter_id uuid, date date, value float"
    );
    let d = Daily {
        user_id: i64::MIN,
        meter_id: Uuid::from_u128(7),
        date: NaiveDate::from_ymd_opt(-4000, 2, 29).expect("a date"),
        value: F64::new(-1.5),
    };
    assert_eq!(
        cells(&cols, &d),
        vec![
            Cell::Int(i64::MIN),
            Cell::Uuid(Uuid::from_u128(7)),
            Cell::Date(d.date),
            Cell::Float(-1.5)
        ]
    );
}

#[test]
fn every_kind_of_field() {
    let cols = RowColumns::of::<Wide>();
    assert_eq!(
        cols.describe(),
        "flag bool, small int, big numeric, huge numeric, letter text, inner_b int?, \
         inner_when timestamp?, colour json, tags json, blob bytes, hash bytes, counts json, \
         nz int, pair_0 int, pair_1 text"
    );
    let when = NaiveDate::from_ymd_opt(262_000, 12, 31)
        .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 999_999_999))
        .expect("a time");
    let w = Wide {
        flag: true,
        small: 255,
        big: u64::MAX,
        huge: i128::MIN,
        letter: 'é',
        inner: Some(Inner {
            b: 3,
            when: Some(when),
        }),
        colour: Colour::Rgb(1, 2, 3),
        tags: vec!["a\"b".into(), "\0".into()],
        blob: vec![0, 255],
        hash: [1, 2, 3, 4],
        counts: [(1, "x".to_owned()), (-2, "y".to_owned())].into(),
        nz: NonZeroU32::new(9).expect("not 0"),
        pair: (-1, "日本".into()),
    };
    assert_eq!(
        cells(&cols, &w),
        vec![
            Cell::Bool(true),
            Cell::Int(255),
            Cell::Numeric(u64::MAX.to_string()),
            Cell::Numeric(i128::MIN.to_string()),
            Cell::Text("é".into()),
            Cell::Int(3),
            Cell::Timestamp(when),
            Cell::Json(r#"{"Rgb":[1,2,3]}"#.into()),
            Cell::Json("[\"a\\\"b\",\"\u{fffd}\"]".into()),
            Cell::Bytes(vec![0, 255]),
            Cell::Bytes(vec![1, 2, 3, 4]),
            Cell::Json(r#"{"-2":"y","1":"x"}"#.into()),
            Cell::Int(9),
            Cell::Int(-1),
            Cell::Text("日本".into()),
        ]
    );
    let none = Wide {
        inner: None,
        colour: Colour::Named { name: "n".into() },
        ..w
    };
    let got = cells(&cols, &none);
    assert_eq!(
        &got[5..8],
        &[
            Cell::Null,
            Cell::Null,
            Cell::Json(r#"{"Named":{"name":"n"}}"#.into())
        ]
    );
    let red = Wide {
        colour: Colour::Red,
        ..none
    };
    assert_eq!(cells(&cols, &red)[7], Cell::Json("\"Red\"".into()));
}

#[test]
fn rows_that_are_not_structs() {
    assert_eq!(RowColumns::of::<i64>().describe(), "value int");
    assert_eq!(RowColumns::of::<String>().describe(), "value text");
    assert_eq!(RowColumns::of::<Option<F64>>().describe(), "value float?");
    assert_eq!(
        RowColumns::of::<(i64, (String, bool))>().describe(),
        "_0 int, _1_0 text, _1_1 bool"
    );
    assert_eq!(
        RowColumns::of::<Pair<F64, (i64, Uuid)>>().describe(),
        "left float, right_0 int, right_1 uuid"
    );
    assert_eq!(RowColumns::of::<()>().describe(), "");
    assert_eq!(RowColumns::of::<Colour>().describe(), "value json");
    let cols = RowColumns::of::<Option<F64>>();
    assert_eq!(cells(&cols, &None::<F64>), vec![Cell::Null]);
    assert_eq!(
        cells(&cols, &Some(F64::new(f64::NAN)))[0]
            .clone()
            .float()
            .map(f64::is_nan),
        Some(true)
    );
}

impl Cell {
    fn float(self) -> Option<f64> {
        match self {
            Cell::Float(f) => Some(f),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Clash {
    a_b: i64,
    a: Ab,
}

#[derive(Serialize, Deserialize)]
struct Ab {
    b: i64,
}

#[derive(Serialize, Deserialize)]
#[allow(non_snake_case)]
struct Odd {
    #[serde(rename = "Two Words")]
    two: i64,
    r#type: String,
}

#[test]
fn names_are_clean_and_unique() {
    assert_eq!(RowColumns::of::<Clash>().describe(), "a_b int, a_b_2 int");
    let odd = RowColumns::of::<Odd>();
    let names: Vec<&str> = odd.columns().iter().map(|c| c.name.as_str()).collect();
    assert!(names[0].starts_with("two_words_"), "{names:?}");
    assert_eq!(names[1], "type");
}

#[derive(Serialize, Deserialize)]
struct List {
    head: i64,
    tail: Option<Box<List>>,
}

#[test]
fn a_recursive_type_ends_in_json() {
    let cols = RowColumns::of::<List>();
    assert!(cols.columns().len() < 40, "{}", cols.describe());
    assert!(cols.describe().ends_with("json?"), "{}", cols.describe());
    let list = List {
        head: 1,
        tail: Some(Box::new(List {
            head: 2,
            tail: None,
        })),
    };
    let got = cells(&cols, &list);
    assert_eq!(&got[..3], &[Cell::Int(1), Cell::Int(2), Cell::Null]);
}

/// A string type that takes only its own words: no probe fits, so the
/// whole row is one JSON column.
#[derive(Serialize)]
struct Word(String);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "word" {
            Ok(Word(s))
        } else {
            Err(serde::de::Error::custom("not the word"))
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WithWord {
    n: i64,
    w: Word,
}

#[test]
fn an_untraceable_type_is_one_json_column() {
    let cols = RowColumns::of::<WithWord>();
    assert_eq!(cols.describe(), "value json");
    let got = cells(
        &cols,
        &WithWord {
            n: 1,
            w: Word("word".into()),
        },
    );
    assert_eq!(got, vec![Cell::Json(r#"{"n":1,"w":"word"}"#.into())]);
}

#[test]
fn json_text() {
    let v: BTreeMap<(i64, bool), Option<f64>> =
        [((1, true), Some(f64::NAN)), ((2, false), Some(-0.0))].into();
    assert_eq!(
        to_json(&v).expect("json"),
        r#"{"[1,true]":null,"[2,false]":-0.0}"#
    );
    assert_eq!(
        to_json(&(Uuid::from_u128(1), "\u{1}\n")).expect("json"),
        r#"["00000000-0000-0000-0000-000000000001","\u0001\n"]"#
    );
}

/// Dates and timestamps in the form chrono writes for years 0 to 9999
/// take a short path; every form gives what chrono's parser gives.
#[test]
fn dates_and_times_read_as_chrono_reads_them() {
    #[derive(Serialize, Deserialize)]
    struct When {
        d: NaiveDate,
        t: NaiveDateTime,
    }
    let cols = RowColumns::of::<When>();
    assert_eq!(cols.describe(), "d date, t timestamp");
    let times = [
        (0, 0),
        (1, 0),
        (59, 123_000_000),
        (59, 999_999_999),
        (7, 1_000),
    ];
    for year in [0, 1, 1970, 2023, 9999, 10_000, -1, -4713, 262_142] {
        for (sec, nano) in times {
            let d = NaiveDate::from_ymd_opt(year, 2, 28).expect("a date");
            let t = d.and_hms_nano_opt(23, 59, sec, nano).expect("a time");
            assert_eq!(
                cells(&cols, &When { d, t }),
                vec![Cell::Date(d), Cell::Timestamp(t)],
                "{d} {t}"
            );
        }
    }
}
