//! Names: which room names and display names are allowed, and which names a message mentions.

use super::MAX_NAME_CHARS;

/// Checks a room name: 1–32 of `a-z 0-9 - _`.
pub fn valid_room(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Trims a display name and checks it: 1–32 printable characters.
pub fn display_name(raw: &str) -> Result<&str, &'static str> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err("a name needs at least one visible character")
    } else if chars > MAX_NAME_CHARS {
        Err("a name has at most 32 characters")
    } else if name.chars().any(char::is_control) {
        Err("a name cannot contain control characters")
    } else {
        Ok(name)
    }
}

/// The names among `present` that `text` mentions as `@name`, each once, in the order they
/// first appear. Names match case-insensitively, may contain spaces (the longest present name
/// wins: `@Ann Lee` over `@Ann`), and must stand alone: the `@` does not follow a letter or
/// digit (`ann@example.org` mentions nobody) and the name is not followed by one (`@Annie`
/// does not mention Ann).
pub fn mentions<'a>(text: &str, present: impl Iterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<(&str, String)> = present
        .filter(|name| !name.is_empty())
        .map(|name| (name, name.to_lowercase()))
        .collect();
    let mut found: Vec<String> = Vec::new();
    if names.is_empty() {
        return found;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    for (at, _) in text.match_indices('@') {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[at + 1..];
        let best = names
            .iter()
            .filter(|(name, folded)| {
                rest.get(..name.len())
                    .is_some_and(|head| head.to_lowercase() == *folded)
                    && !rest[name.len()..].chars().next().is_some_and(word)
            })
            .max_by_key(|(name, _)| name.len());
        if let Some((name, _)) = best {
            if !found.iter().any(|f| f == name) {
                found.push((*name).to_owned());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_find_present_names_only() {
        let here = ["Ann", "Ann Lee", "Bob", "Zoë"];
        let m = |text: &str| mentions(text, here.iter().copied());
        assert_eq!(m("hi @bob and @ANN"), ["Bob", "Ann"]);
        assert_eq!(m("@Ann Lee, lunch?"), ["Ann Lee"]);
        assert_eq!(m("@ann lee @Ann Lee"), ["Ann Lee"]);
        assert_eq!(m("@zoë!"), ["Zoë"]);
        assert_eq!(m("(@Bob)"), ["Bob"]);
        // Not a mention: an address, a longer word, a name not present, a bare @.
        assert!(m("mail ann@example.org").is_empty());
        assert!(m("@Annie @Bobby @carol @ @@").is_empty());
        assert!(mentions("@Bob", std::iter::empty()).is_empty());
        // A multi-byte character right after the @ does not split a character.
        assert!(m("@é @").is_empty());
    }

    #[test]
    fn room_names_follow_the_rule() {
        for good in ["lobby", "a", "x-1_y", &"z".repeat(32)] {
            assert!(valid_room(good), "{good}");
        }
        for bad in ["", "Lobby", "a b", "é", "../x", &"z".repeat(33)] {
            assert!(!valid_room(bad), "{bad}");
        }
    }

    #[test]
    fn display_names_are_trimmed_and_checked() {
        assert_eq!(display_name("  Ann Lee "), Ok("Ann Lee"));
        assert_eq!(display_name(&"é".repeat(32)).map(str::len), Ok(64));
        assert!(display_name("   ").is_err());
        assert!(display_name(&"é".repeat(33)).is_err());
        assert!(display_name("a\u{7}b").is_err());
    }
}
