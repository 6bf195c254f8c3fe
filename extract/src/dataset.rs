//! The seed's dataset schema: `{category: {description, expected_effect, pairs: [[A, B], ...]}}`.
//!
//! Categories keep their JSON order; statement ids run 0.. in the order
//! category, pair, A then B.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

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

#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// sha256 of the file's bytes.
    pub sha256: String,
    pub categories: Vec<String>,
    pub n_pairs: u32,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Deserialize)]
struct CategoryDef {
    #[allow(dead_code)]
    #[serde(default)]
    description: Option<String>,
    #[allow(dead_code)]
    #[serde(default)]
    expected_effect: Option<String>,
    pairs: Vec<(String, String)>,
}

/// The top-level object, in file order (duplicate category names are refused).
struct Categories(Vec<(String, CategoryDef)>);

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
                let mut out: Vec<(String, CategoryDef)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!(
                            "category '{name}' appears twice"
                        )));
                    }
                    let def = map.next_value::<CategoryDef>()?;
                    out.push((name, def));
                }
                Ok(Categories(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Parses dataset JSON; `name` is used in messages.
pub fn parse(bytes: &[u8], name: &str) -> Result<(Vec<String>, u32, Vec<Statement>)> {
    let cats: Categories = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("{name}: not a dataset in the seed schema ({e})"))?;
    if cats.0.is_empty() {
        bail!("{name}: the dataset holds no categories");
    }
    let mut statements = Vec::new();
    let mut categories = Vec::new();
    let mut n_pairs = 0u32;
    for (cat, def) in cats.0 {
        if def.pairs.is_empty() {
            bail!("{name}: category '{cat}' has no pairs");
        }
        for (i, (a, b)) in def.pairs.into_iter().enumerate() {
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
    Ok((categories, n_pairs, statements))
}

/// Reads and parses a dataset file, hashing its bytes.
pub fn load(path: &Path) -> Result<Dataset> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read dataset {}", path.display()))?;
    let (categories, n_pairs, statements) = parse(&bytes, &path.display().to_string())?;
    Ok(Dataset {
        path: path.to_path_buf(),
        sha256: crate::util::sha256_bytes(&bytes),
        categories,
        n_pairs,
        statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_numbers_statements() {
        let json = br#"{"zeta": {"description": "d", "expected_effect": "e", "pairs": [["a0","b0"],["a1","b1"]]},
                        "alpha": {"pairs": [["x","y"]]}}"#;
        let (cats, n_pairs, st) = parse(json, "d.json").unwrap();
        assert_eq!(cats, vec!["zeta", "alpha"]);
        assert_eq!(n_pairs, 3);
        let got: Vec<_> = st
            .iter()
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
            ]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse(b"{}", "d.json").unwrap_err().to_string();
        assert!(e.contains("d.json") && e.contains("no categories"), "{e}");
        let e = parse(br#"{"c": {"pairs": []}}"#, "d.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("'c' has no pairs"), "{e}");
        let e = parse(b"{\"c\": {\"pairs\": [[\"a\"]]}}", "d.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("d.json") && e.contains("line 1"), "{e}");
        let e = parse(b"{\"c\": ", "d.json").unwrap_err().to_string();
        assert!(e.contains("EOF"), "{e}");
        let e = parse(
            br#"{"c": {"pairs": [["a","b"]]}, "c": {"pairs": [["a","b"]]}}"#,
            "d.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse(b"[]", "d.json").unwrap_err().to_string();
        assert!(e.contains("seed schema"), "{e}");
    }
}
