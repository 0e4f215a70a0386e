//! Who is who, without the internet: a display name in an HMAC-signed cookie.
//!
//! The cookie holds a random person id, the name and whether this is a host; the `cookie`
//! crate signs it with HMAC-SHA256 under a key derived from the server's secret and the
//! passcodes. An altered or forged cookie fails the signature and counts as no cookie, and
//! changing either passcode signs everybody out. The secret is 64 random bytes, kept in a file made at first start (mode 0600).

use http_types::cookies::{Cookie, CookieJar, Key, SameSite};
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// The cookie's name.
pub const COOKIE: &str = "smolchat";
/// How long a session lasts, in seconds: a year of lunch breaks.
const MAX_AGE_SECONDS: i64 = 365 * 24 * 3600;
/// Bytes of secret.
const SECRET_BYTES: usize = 64;

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random, the same in every tab of one browser: the same person may hold a name twice.
    pub person: u64,
    /// The display name, already checked.
    pub name: String,
    /// Signed in with the admin passcode: may moderate.
    pub host: bool,
}

/// Issues and checks session cookies.
pub struct Sessions {
    key: Key,
}

impl Sessions {
    /// Sessions signed with a key derived from `secret` (at least 32 bytes), `passcode` and
    /// the hosts' `admin` passcode.
    pub fn new(secret: &[u8], passcode: Option<&str>, admin: Option<&str>) -> Sessions {
        let mut master = secret.to_vec();
        if let Some(code) = passcode {
            master.extend_from_slice(b"\0passcode\0");
            master.extend_from_slice(code.as_bytes());
        }
        if let Some(code) = admin {
            master.extend_from_slice(b"\0admin\0");
            master.extend_from_slice(code.as_bytes());
        }
        Sessions {
            key: Key::derive_from(&master),
        }
    }

    /// A `Set-Cookie` value for `session`.
    pub fn issue(&self, session: &Session) -> String {
        let host = if session.host { ".host" } else { "" };
        let value = format!(
            "{:016x}.{}{host}",
            session.person,
            hex(session.name.as_bytes())
        );
        let mut jar = CookieJar::new();
        jar.signed(&self.key).add(Cookie::new(COOKIE, value));
        let mut cookie = jar.get(COOKIE).expect("just added").clone();
        cookie.set_path("/");
        cookie.set_http_only(true);
        cookie.set_same_site(SameSite::Lax);
        // Max-Age is added by hand: the cookie crate wants the `time` crate's Duration for it.
        format!("{cookie}; Max-Age={MAX_AGE_SECONDS}")
    }

    /// A `Set-Cookie` value that removes the session.
    pub fn clear(&self) -> String {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    }

    /// The session in a `Cookie` request header, if one is there and its signature holds.
    pub fn verify(&self, cookie_header: &str) -> Option<Session> {
        let raw = cookie_header
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value)?;
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(COOKIE, raw.to_owned()));
        let verified = jar.signed(&self.key).get(COOKIE)?;
        let mut parts = verified.value().split('.');
        let person = u64::from_str_radix(parts.next()?, 16).ok()?;
        let name = String::from_utf8(unhex(parts.next()?)?).ok()?;
        let host = match parts.next() {
            None => false,
            Some("host") => true,
            Some(_) => return None,
        };
        Some(Session { person, name, host })
    }
}

/// Reads the secret at `path`, or makes one there (creating its directory) if there is none.
pub fn load_or_create_secret(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds fewer than 32 bytes; delete it to make a new one",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let secret = new_secret();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    file.write_all(&secret)?;
    file.sync_all()?;
    log::info!("made a new session key in {}", path.display());
    Ok(secret)
}

/// 64 bytes from the operating system's random source.
pub fn new_secret() -> Vec<u8> {
    let key = Key::generate();
    let mut secret = Vec::with_capacity(SECRET_BYTES);
    secret.extend_from_slice(key.signing());
    secret.extend_from_slice(key.encryption());
    secret
}

/// `bytes` as lowercase hex (also how `dm` keeps names in its file).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex, if it is that.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_header(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn a_signed_cookie_round_trips() {
        let sessions = Sessions::new(&new_secret(), None, Some("admin"));
        let ann = Session {
            person: 0xfeed,
            name: "Ann Lee ✓".into(),
            host: false,
        };
        let set = sessions.issue(&ann);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"));
        let header = format!("other=1; {}; x=y", cookie_header(&set));
        assert_eq!(sessions.verify(&header), Some(ann.clone()));
        let host = Session { host: true, ..ann };
        let header = cookie_header(&sessions.issue(&host));
        assert_eq!(sessions.verify(&header), Some(host));
    }

    #[test]
    fn altered_forged_and_foreign_cookies_are_rejected() {
        let secret = new_secret();
        let sessions = Sessions::new(&secret, None, None);
        let header = cookie_header(&sessions.issue(&Session {
            person: 1,
            name: "ann".into(),
            host: false,
        }));
        // Change the name part ("ann" → "bob") and keep the signature.
        let forged = header.replace(&hex(b"ann"), &hex(b"bob"));
        assert_ne!(forged, header);
        assert_eq!(sessions.verify(&forged), None);
        // Made up from scratch.
        assert_eq!(
            sessions.verify(&format!("{COOKIE}=0000000000000001.616e6e")),
            None
        );
        // Signed by another server, or before the passcode changed.
        assert_eq!(
            Sessions::new(&new_secret(), None, None).verify(&header),
            None
        );
        assert_eq!(
            Sessions::new(&secret, Some("new code"), None).verify(&header),
            None
        );
        assert_eq!(
            Sessions::new(&secret, None, Some("admin")).verify(&header),
            None
        );
        // A guest cannot make itself a host: the flag is under the signature.
        let (name, value) = header.split_once('=').unwrap();
        let promoted = format!(
            "{name}={}",
            value.replacen(&hex(b"ann"), &format!("{}.host", hex(b"ann")), 1)
        );
        assert_eq!(sessions.verify(&promoted), None);
        assert_eq!(sessions.verify("unrelated=1"), None);
    }

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("smolchat-secret-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/secret.key");
        let first = load_or_create_secret(&path).unwrap();
        assert_eq!(first.len(), SECRET_BYTES);
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        fs::write(&path, b"short").unwrap();
        assert!(load_or_create_secret(&path).is_err());
    }
}
