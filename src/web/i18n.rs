//! The page's words: one table per language (`templates/i18n/*.json`, compiled in), chosen
//! from the request's `Accept-Language`. Pages render them on the server, and hand the whole
//! table to the page's scripts as a data attribute.

use super::State;
use std::collections::HashMap;
use std::sync::OnceLock;
use tide::Request;

/// The languages there are tables for; the first is the fallback.
const TABLES: [(&str, &str); 3] = [
    ("en", include_str!("../../templates/i18n/en.json")),
    ("fr", include_str!("../../templates/i18n/fr.json")),
    ("es", include_str!("../../templates/i18n/es.json")),
];

/// One language's table.
pub(super) struct Strings {
    /// The language tag, for `<html lang>`.
    pub lang: &'static str,
    /// The table as JSON, for the page's scripts.
    pub json: &'static str,
    words: HashMap<String, String>,
}

impl Strings {
    /// The word for `key` (the key itself if the table lacks it, so a gap shows, not breaks).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.words.get(key).map_or(key, String::as_str)
    }
}

fn tables() -> &'static [Strings] {
    static PARSED: OnceLock<Vec<Strings>> = OnceLock::new();
    PARSED.get_or_init(|| {
        TABLES
            .iter()
            .map(|(lang, json)| Strings {
                lang,
                json,
                words: serde_json::from_str(json).expect("the compiled-in tables are valid JSON"),
            })
            .collect()
    })
}

/// The table for the request's `Accept-Language`.
pub(super) fn for_request(req: &Request<State>) -> &'static Strings {
    let header = req.header("Accept-Language").map(|v| v.last().as_str());
    let tables = tables();
    let index = choose(header.unwrap_or(""), &TABLES.map(|(lang, _)| lang));
    &tables[index]
}

/// The best of `langs` for an `Accept-Language` value (quality values honoured; the primary
/// subtag decides, so `fr-CA` gets `fr`); 0 when none fits.
fn choose(header: &str, langs: &[&str]) -> usize {
    let mut best = (0.0_f32, 0);
    for (order, item) in header.split(',').enumerate() {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(1.0, |q| q.trim().parse().unwrap_or(0.0));
        let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
        if let Some(index) = langs.iter().position(|l| *l == primary) {
            // Equal quality: the earlier entry wins (a tiny penalty per position).
            let score = q - order as f32 * 1e-4;
            if q > 0.0 && score > best.0 {
                best = (score, index);
            }
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_table() {
        let langs = ["en", "fr", "es"];
        assert_eq!(choose("", &langs), 0);
        assert_eq!(choose("fr-CA,fr;q=0.9,en;q=0.8", &langs), 1);
        assert_eq!(choose("de-DE, es;q=0.5, en;q=0.4", &langs), 2);
        assert_eq!(choose("en;q=0.2, es;q=0.9", &langs), 2);
        assert_eq!(choose("fr;q=0, de", &langs), 0);
        assert_eq!(choose("ES", &langs), 2);
    }

    #[test]
    fn every_table_has_every_key() {
        let tables = tables();
        for table in tables {
            for key in tables[0].words.keys() {
                assert!(table.words.contains_key(key), "{}: {key}", table.lang);
            }
            assert_eq!(table.words.len(), tables[0].words.len(), "{}", table.lang);
        }
    }
}
