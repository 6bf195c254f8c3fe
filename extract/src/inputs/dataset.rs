//! The seed's dataset schema: `{category: {description, expected_effect, pairs: [[A, B], ...]}}`.
//!
//! Every shape error is refused here, before any model is loaded, naming the file,
//! the category and the pair: a cache that `analyze` would refuse costs GPU time.
//!
//! Categories keep their JSON order; statement ids run 0.. in the order
//! category, pair, A then B.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

use schemas::Side;

/// One statement of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub id: u32,
    pub category: String,
    pub pair_index: u32,
    pub side: Side,
    pub text: String,
}

impl Statement {
    /// How error messages name it: id, category, pair, side and the text's start.
    pub fn describe(&self) -> String {
        let mut text: String = self.text.chars().take(60).collect();
        if text.len() < self.text.len() {
            text.push('…');
        }
        format!(
            "statement {} (category '{}', pair {}, side {}, {text:?})",
            self.id,
            self.category,
            self.pair_index,
            self.side.as_str()
        )
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// sha256 of the file's bytes.
    pub sha256: String,
    pub categories: Vec<String>,
    pub n_pairs: u32,
    pub statements: Vec<Statement>,
}

/// The top-level object, in file order (duplicate category names are refused; serde_json's
/// own map would silently keep the last one).
struct Categories(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Categories {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Categories;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an object mapping category names to {description, expected_effect, pairs}",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Categories, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!(
                            "category '{name}' appears twice"
                        )));
                    }
                    let def = map.next_value::<Strict>()?.0;
                    out.push((name, def));
                }
                Ok(Categories(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A JSON value whose objects may not repeat a key: serde_json's `Value` keeps the
/// last of `"pairs": [...], "pairs": [...]` silently, dropping the first list.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
                Ok(Strict(Value::String(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                let mut out = Vec::new();
                while let Some(Strict(v)) = seq.next_element::<Strict>()? {
                    out.push(v);
                }
                Ok(Strict(Value::Array(out)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "key '{key}' appears twice in one object"
                        )));
                    }
                    let Strict(v) = map.next_value::<Strict>()?;
                    out.insert(key, v);
                }
                Ok(Strict(Value::Object(out)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// What a category's object may hold.
const KEYS: [&str; 3] = ["description", "expected_effect", "pairs"];

/// r is taken across categories: with two it is ±1 by construction, and `analyze`
/// refuses fewer than three.
pub const MIN_CATEGORIES: usize = 3;

/// The largest dataset file read: far beyond any statement dataset, and a guard
/// against `--dataset /dev/zero`.
const MAX_BYTES: u64 = 1 << 30;

/// Uniformity is a mean over pairs of positions within a category, so a category
/// needs two pairs; refusing here saves the forward passes `analyze` would refuse.
pub const MIN_PAIRS: usize = 2;

/// The UTF-8 byte order mark some editors (Notepad, Excel exports) put first; JSON
/// forbids it, but the text after it is fine, so it is skipped.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// JSON type of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Checks one category's definition and returns its pairs as (A, B) texts.
fn category_pairs(cat: &str, def: &Value) -> std::result::Result<Vec<(String, String)>, String> {
    if cat.trim().is_empty() {
        return Err(format!(
            "a category name is empty ('{cat}'); name every category"
        ));
    }
    // The name is printed in the report, the CSV and the figures: a NUL or a line
    // break there would break them.
    if cat.chars().any(char::is_control) {
        return Err(format!(
            "category {cat:?} holds a control character (a NUL, a line break); remove it from the name"
        ));
    }
    let obj = def.as_object().ok_or_else(|| {
        format!(
            "category '{cat}' is {}; expected an object {{description, expected_effect, pairs}}",
            kind(def)
        )
    })?;
    if let Some(key) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "category '{cat}' has an unknown key '{key}' (a category holds {}); a misspelt 'pairs' would drop its pairs",
            KEYS.join(", ")
        ));
    }
    for key in ["description", "expected_effect"] {
        match obj.get(key) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(v) => {
                return Err(format!(
                    "category '{cat}': '{key}' is {}; expected a string",
                    kind(v)
                ))
            }
        }
    }
    let pairs = match obj.get("pairs") {
        Some(Value::Array(p)) => p,
        Some(v) => {
            return Err(format!(
                "category '{cat}': 'pairs' is {}; expected a list of [A, B] pairs",
                kind(v)
            ))
        }
        None => {
            return Err(format!(
                "category '{cat}' has no 'pairs' key; expected a list of [A, B] pairs"
            ))
        }
    };
    if pairs.is_empty() {
        return Err(format!("category '{cat}' has no pairs"));
    }
    if pairs.len() < MIN_PAIRS {
        return Err(format!(
            "category '{cat}' has {} pair; uniformity needs at least {MIN_PAIRS} pairs per category",
            pairs.len()
        ));
    }
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| one_pair(cat, i, pair))
        .collect::<std::result::Result<_, _>>()?;
    no_repeats(cat, &pairs)?;
    Ok(pairs)
}

/// A statement given twice on one side of a category (a repeated pair included) has
/// cosine 1 with its copy and inflates that side's uniformity.
fn no_repeats(cat: &str, pairs: &[(String, String)]) -> std::result::Result<(), String> {
    let a: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let b: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    for (side, texts) in [("A", a), ("B", b)] {
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, &text) in texts.iter().enumerate() {
            if let Some(first) = seen.insert(text, i) {
                return Err(format!(
                    "category '{cat}': pairs {first} and {i} (counting from 0) have the same side {side} statement; a copy has cosine 1 with itself and would inflate the side's uniformity: remove the repeat"
                ));
            }
        }
    }
    Ok(())
}

/// Pair `i` of category `cat`: two different, non-empty statements.
fn one_pair(cat: &str, i: usize, pair: &Value) -> std::result::Result<(String, String), String> {
    let where_ = format!("category '{cat}' pair {i} (counting from 0)");
    let items = match pair {
        Value::Array(items) if items.len() == 2 => items,
        Value::Array(items) => {
            return Err(format!(
                "{where_} has {} element{}; a pair is exactly [A, B]",
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ))
        }
        v => return Err(format!("{where_} is {}; a pair is exactly [A, B]", kind(v))),
    };
    let text = |side: &str, item: &Value| -> std::result::Result<String, String> {
        let t = item.as_str().ok_or_else(|| {
            format!(
                "{where_} side {side} is {}; a statement is a string",
                kind(item)
            )
        })?;
        if t.trim().is_empty() {
            return Err(format!("{where_} side {side} is an empty statement"));
        }
        if t.contains('\0') {
            return Err(format!(
                "{where_} side {side} holds a NUL character; remove it (tokenizers read it as text)"
            ));
        }
        Ok(t.to_string())
    };
    let (a, b) = (text("A", &items[0])?, text("B", &items[1])?);
    if a == b {
        return Err(format!(
            "{where_} has the same text on both sides; a pair contrasts two statements"
        ));
    }
    if a.nfc().eq(b.nfc()) {
        return Err(format!(
            "{where_}: its two sides differ only in Unicode normalization (NFC against NFD: they print the same); a pair contrasts two statements"
        ));
    }
    Ok((a, b))
}

/// Parses dataset JSON; `name` is used in messages.
pub fn parse(bytes: &[u8], name: &str) -> Result<(Vec<String>, u32, Vec<Statement>)> {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{name}: the dataset file is empty");
    }
    // Its byte order mark, or, without one, a zero byte beside the first character.
    let wide = bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF");
    if wide || bytes.iter().take(2).any(|&b| b == 0) {
        bail!("{name}: the file is UTF-16 (or UTF-32) text, but a dataset is read as UTF-8 JSON; save it as UTF-8");
    }
    let cats: Categories = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json names a lone surrogate escape (`\ud800` without its pair) by
        // what it expected next.
        let text = e.to_string();
        if text.contains("surrogate") || text.contains("hex escape") {
            anyhow::anyhow!("{name}: line {}, column {}: a \\u escape of half a UTF-16 surrogate pair (a lone surrogate), which is no character; remove it or write the whole pair", e.line(), e.column())
        } else {
            anyhow::anyhow!("{name}: not a dataset in the seed schema ({e})")
        }
    })?;
    if cats.0.is_empty() {
        bail!("{name}: the dataset holds no categories");
    }
    look_alike_names(name, &cats.0)?;
    let mut statements = Vec::new();
    let mut categories = Vec::new();
    let mut n_pairs = 0u32;
    for (cat, def) in cats.0 {
        let pairs = category_pairs(&cat, &def).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            for (side, text) in [(Side::A, a), (Side::B, b)] {
                statements.push(Statement {
                    id: statements.len() as u32,
                    category: cat.clone(),
                    pair_index: i as u32,
                    side,
                    text,
                });
            }
            n_pairs += 1;
        }
        categories.push(cat);
    }
    if categories.len() < MIN_CATEGORIES {
        bail!(
            "{name}: the dataset has {} categor{}; r across categories needs at least {MIN_CATEGORIES} (analyze refuses fewer)",
            categories.len(),
            if categories.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok((categories, n_pairs, statements))
}

/// Reads and parses a dataset file, hashing its bytes.
pub fn load(path: &Path) -> Result<Dataset> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read dataset {}", path.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        bail!(
            "{}: larger than {} GiB, which no statement dataset is; is it the right file?",
            path.display(),
            MAX_BYTES >> 30
        );
    }
    let (categories, n_pairs, statements) = parse(&bytes, &path.display().to_string())?;
    Ok(Dataset {
        path: path.to_path_buf(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        categories,
        n_pairs,
        statements,
    })
}

/// Two category names that differ only in Unicode normalization (NFC against NFD)
/// look the same everywhere they are printed.
fn look_alike_names(name: &str, cats: &[(String, Value)]) -> Result<()> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (cat, _) in cats {
        if let Some(first) = seen.insert(cat.nfc().collect(), cat) {
            bail!(
                "{name}: categories {first:?} and {cat:?} differ only in Unicode normalization (they print the same); write both the same way"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_numbers_statements() {
        let json = br#"{"zeta": {"description": "d", "expected_effect": "e", "pairs": [["a0","b0"],["a1","b1"]]},
                        "alpha": {"pairs": [["x","y"],["z","w"]]},
                        "mid": {"pairs": [["m0","n0"],["m1","n1"]]}}"#;
        let (cats, n_pairs, st) = parse(json, "d.json").unwrap();
        assert_eq!(cats, vec!["zeta", "alpha", "mid"]);
        assert_eq!(n_pairs, 6);
        let got: Vec<_> = st
            .iter()
            .take(8)
            .map(|s| {
                (
                    s.id,
                    s.category.as_str(),
                    s.pair_index,
                    s.side,
                    s.text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "zeta", 0, Side::A, "a0"),
                (1, "zeta", 0, Side::B, "b0"),
                (2, "zeta", 1, Side::A, "a1"),
                (3, "zeta", 1, Side::B, "b1"),
                (4, "alpha", 0, Side::A, "x"),
                (5, "alpha", 0, Side::B, "y"),
                (6, "alpha", 1, Side::A, "z"),
                (7, "alpha", 1, Side::B, "w"),
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let mut json = b"\xEF\xBB\xBF".to_vec();
        json.extend_from_slice(
            br#"{"c": {"pairs": [["a","b"],["c","d"]]}, "e": {"pairs": [["a","b"],["c","d"]]}, "f": {"pairs": [["a","b"],["c","d"]]}}"#,
        );
        let (cats, n_pairs, _) = parse(&json, "d.json").unwrap();
        assert_eq!((cats[0].as_str(), n_pairs), ("c", 6));
    }

    fn err(json: &str) -> String {
        let e = parse(json.as_bytes(), "d.json").unwrap_err().to_string();
        assert!(e.starts_with("d.json: "), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    }

    #[test]
    fn errors_name_the_problem() {
        let two = r#"[["a","b"],["c","d"]]"#;
        let cases: Vec<(String, &str)> =
            vec![
            ("{}".into(), "no categories"),
            ("".into(), "file is empty"),
            ("  \n".into(), "file is empty"),
            (r#"{"c": {"pairs": []}}"#.into(), "'c' has no pairs"),
            (
                r#"{"c": {"pairs": [["a","b"]]}}"#.into(),
                "'c' has 1 pair; uniformity needs at least 2 pairs",
            ),
            (
                format!(r#"{{"": {{"pairs": {two}}}}}"#),
                "category name is empty",
            ),
            (
                format!(r#"{{" ": {{"pairs": {two}}}}}"#),
                "category name is empty",
            ),
            (
                r#"{"c": {"pairs": [["a","b"],["c","d","e"]]}}"#.into(),
                "category 'c' pair 1 (counting from 0) has 3 elements; a pair is exactly [A, B]",
            ),
            (
                r#"{"c": {"pairs": [["a"],["c","d"]]}}"#.into(),
                "category 'c' pair 0 (counting from 0) has 1 element; a pair is exactly [A, B]",
            ),
            (
                r#"{"c": {"pairs": [["a","b"],"c d"]}}"#.into(),
                "pair 1 (counting from 0) is a string; a pair is exactly [A, B]",
            ),
            (
                r#"{"c": {"pairs": [["a","b"],["c",7]]}}"#.into(),
                "pair 1 (counting from 0) side B is a number; a statement is a string",
            ),
            (
                r#"{"c": {"pairs": [["a","b"],[" ","d"]]}}"#.into(),
                "pair 1 (counting from 0) side A is an empty statement",
            ),
            (
                r#"{"c": {"pairs": [["a","b"],["d","d"]]}}"#.into(),
                "same text on both sides",
            ),
            (
                r#"{"c": {"pairs": {"a": "b"}}}"#.into(),
                "'pairs' is an object; expected a list of [A, B] pairs",
            ),
            (r#"{"c": {"pair": []}}"#.into(), "'c' has an unknown key 'pair'"),
            (r#"{"c": {"description": "d"}}"#.into(), "'c' has no 'pairs' key"),
            (
                format!(r#"{{"c": {{"pairs": {two}}}, "e": {{"pairs": {two}}}}}"#),
                "has 2 categories; r across categories needs at least 3",
            ),
            (r#"{"c": [["a","b"]]}"#.into(), "'c' is a list; expected an object"),
            (
                format!(r#"{{"c": {{"description": 3, "pairs": {two}}}}}"#),
                "'description' is a number; expected a string",
            ),
            (
                format!(r#"{{"c": {{"pairs": {two}}}, "c": {{"pairs": {two}}}}}"#),
                "category 'c' appears twice",
            ),
            ("[]".into(), "expected an object mapping category names"),
            ("{\"c\": ".into(), "EOF"),
            (
                format!(r#"{{"c": {{"pairs": {two}, "pairs": []}}}}"#),
                "key 'pairs' appears twice in one object",
            ),
        ];
        for (json, want) in cases {
            let e = err(&json);
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
