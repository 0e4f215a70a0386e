//! Uploaded file names, cleaned before anyone sees them: the name is only ever shown and offered
//! as a download name, never used on disk, but it still must not carry a path, control
//! characters, text-direction tricks (`photo\u{202E}gpj.exe` showing as `photoexe.jpg`) or
//! unbounded length into the room.

/// Longest cleaned name, in characters.
pub const MAX_NAME_CHARS: usize = 120;
/// The name of a file whose name cleans to nothing.
const FALLBACK: &str = "file";

/// The last path component of `raw`, without control, format or bidirectional characters,
/// trimmed, never starting with a dot, at most [`MAX_NAME_CHARS`] (keeping a short extension).
pub fn clean_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let kept: String = last.chars().filter(|&c| !unwanted(c)).collect();
    let trimmed = kept.trim().trim_start_matches('.').trim_start();
    if trimmed.is_empty() {
        return FALLBACK.to_owned();
    }
    if trimmed.chars().count() <= MAX_NAME_CHARS {
        return trimmed.to_owned();
    }
    // Too long: keep the start and an extension of up to 10 characters.
    let extension = trimmed
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty() && ext.chars().count() <= 10);
    match extension {
        Some(ext) => {
            let stem_chars = MAX_NAME_CHARS - ext.chars().count() - 1;
            let stem: String = trimmed.chars().take(stem_chars).collect();
            format!("{}.{ext}", stem.trim_end())
        }
        None => trimmed.chars().take(MAX_NAME_CHARS).collect(),
    }
}

/// Characters a shown file name must not contain: controls (NUL, newlines...), and the
/// invisible marks that reorder or hide text.
fn unwanted(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space, joiners, LTR/RTL marks
            | '\u{202A}'..='\u{202E}' // embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, isolates
            | '\u{061C}' // Arabic letter mark
            | '\u{FEFF}' // byte order mark
            | '\u{FFF9}'..='\u{FFFB}') // interlinear annotations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_to_their_last_part() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\Users\\ann\\cat.jpg"), "cat.jpg");
        assert_eq!(clean_name(".."), "file");
        assert_eq!(clean_name("dir/"), "file");
        assert_eq!(clean_name(".htaccess"), "htaccess");
    }

    #[test]
    fn controls_and_direction_tricks_are_removed() {
        assert_eq!(clean_name("a\0b\nc.txt"), "abc.txt");
        assert_eq!(clean_name("photo\u{202E}gpj.exe"), "photogpj.exe");
        assert_eq!(clean_name("\u{2067}x\u{2069}.png"), "x.png");
        assert_eq!(clean_name("  spaced name.pdf  "), "spaced name.pdf");
        assert_eq!(clean_name("\0\u{202E}"), "file");
    }

    #[test]
    fn long_names_are_capped_and_keep_their_extension() {
        let long = format!("{}.jpeg", "é".repeat(10_000));
        let clean = clean_name(&long);
        assert_eq!(clean.chars().count(), MAX_NAME_CHARS);
        assert!(clean.ends_with("é.jpeg"), "{clean}");
        let no_ext = "x".repeat(500);
        assert_eq!(clean_name(&no_ext).len(), MAX_NAME_CHARS);
        assert_eq!(clean_name("ünïcode ✓.txt"), "ünïcode ✓.txt");
    }
}
