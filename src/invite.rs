//! How people reach this box: the URLs it answers on, the Wi-Fi join string, and both as QR
//! codes (SVG for the page and the printed card, text blocks for a terminal).
//!
//! A server bound to a wildcard address (`0.0.0.0`, `::`) is reachable at each of the
//! machine's non-loopback interface addresses; those are listed IPv4 first, because a phone on a
//! home network is far likelier to resolve those. `--public-url` (a router's own DNS name, or
//! an HTTPS proxy in front of the box) comes before all of them. Nothing here knows HTTP.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};
use std::net::{IpAddr, SocketAddr};

/// What the invite card offers: where to browse, and which Wi-Fi to join first.
#[derive(Debug, Clone, Default)]
pub struct Invite {
    /// Base URLs (no trailing slash), best first; see [`reachable_urls`].
    pub urls: Vec<String>,
    /// The first URL is `--public-url`: prefer it over the address a browser used.
    pub public: bool,
    /// The Wi-Fi network's name, if one is offered.
    pub ssid: Option<String>,
    /// The `WIFI:` string for that network ([`wifi_string`]).
    pub wifi: Option<String>,
}

impl Invite {
    /// The invite for a server listening on `listen` with `config`'s invite options.
    pub fn new(listen: SocketAddr, config: &crate::Config) -> Invite {
        Invite {
            urls: reachable_urls(listen, config.public_url.as_deref()),
            public: config.public_url.is_some(),
            ssid: config.wifi_ssid.clone(),
            wifi: config
                .wifi_ssid
                .as_deref()
                .map(|ssid| wifi_string(ssid, config.wifi_password.as_deref())),
        }
    }
}

/// The base URLs (no trailing slash) this server can be reached at, best first.
///
/// `public_url` (already validated by [`parse_public_url`]) leads; then, for a wildcard
/// `listen` address, the machine's interface addresses, or else the listen address itself.
pub fn reachable_urls(listen: SocketAddr, public_url: Option<&str>) -> Vec<String> {
    let interfaces = if listen.ip().is_unspecified() {
        match if_addrs::get_if_addrs() {
            Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
            Err(error) => {
                log::warn!("cannot list network interfaces: {error}");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    urls_for(listen, &interfaces, public_url)
}

/// [`reachable_urls`] with the interface addresses given (the testable part).
fn urls_for(listen: SocketAddr, interfaces: &[IpAddr], public_url: Option<&str>) -> Vec<String> {
    let mut urls: Vec<String> = public_url.map(str::to_owned).into_iter().collect();
    let port = listen.port();
    if listen.ip().is_unspecified() {
        let mut ips: Vec<IpAddr> = interfaces
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            // An IPv6 wildcard also takes IPv4; an IPv4 wildcard takes only IPv4.
            .filter(|ip| listen.is_ipv6() || ip.is_ipv4())
            .collect();
        // Stable: IPv4 first, each family in the order the system lists its interfaces.
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        urls.extend(
            ips.into_iter()
                .map(|ip| base_url(SocketAddr::new(ip, port))),
        );
        if urls.is_empty() {
            // No network yet (a board still waiting for its DHCP lease): this machine only.
            urls.push(format!("http://localhost:{port}"));
        }
    } else {
        urls.push(base_url(listen));
    }
    urls.dedup();
    urls
}

/// `http://ip:port`, with IPv6 in brackets.
fn base_url(addr: SocketAddr) -> String {
    // SocketAddr's Display already brackets IPv6 (and drops a zero scope id).
    format!("http://{addr}")
}

/// Checks a `--public-url`: `http://` or `https://`, a host, an optional port, nothing after
/// the authority but an optional `/`. Returns it lowercased in scheme and host, without the `/`.
pub fn parse_public_url(value: &str) -> Result<String, String> {
    let bad = || format!("'{value}' is not a URL like http://chat.lan:8080");
    let (scheme, rest) = value.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        // A bare IPv6 literal has colons too; it must be bracketed, so `]` ends the host.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && (host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || (host.starts_with('[')
                && host.ends_with(']')
                && host[1..host.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok || !port_ok {
        return Err(bad());
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// The page address of `room` under `base` (the lobby is the root).
pub fn room_url(base: &str, room: &str) -> String {
    if room == crate::message::DEFAULT_ROOM {
        format!("{base}/")
    } else {
        format!("{base}/r/{room}")
    }
}

/// The text of a Wi-Fi QR code (the `WIFI:` scheme phones' cameras understand): WPA with a
/// password, an open network without one. `\ ; , : "` in either field are escaped with `\`.
pub fn wifi_string(ssid: &str, password: Option<&str>) -> String {
    match password {
        Some(password) => format!(
            "WIFI:T:WPA;S:{};P:{};;",
            wifi_escape(ssid),
            wifi_escape(password)
        ),
        None => format!("WIFI:T:nopass;S:{};;", wifi_escape(ssid)),
    }
}

fn wifi_escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for ch in field.chars() {
        if matches!(ch, '\\' | ';' | ',' | ':' | '"') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A QR code of `data` as a standalone SVG document (dark on white, with its quiet zone), or
/// `None` if the data is too long for any QR code.
pub fn qr_svg(data: &str) -> Option<String> {
    // Medium correction: a printed card survives a smudge, and the code stays coarse.
    let code = QrCode::with_error_correction_level(data, EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

/// A QR code of `data` drawn with half-block characters, two modules per character cell, for a
/// terminal (light modules as spaces on an inverted background are not assumed: dark is drawn).
pub fn qr_terminal(data: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(data, EcLevel::L).ok()?;
    Some(
        code.render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_lists_interfaces_ipv4_first_without_loopback() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "fd00::5", "192.168.1.20", "::1", "10.0.0.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            urls_for(addr("[::]:8080"), &ips, None),
            [
                "http://192.168.1.20:8080",
                "http://10.0.0.7:8080",
                "http://[fd00::5]:8080"
            ]
        );
        // An IPv4 wildcard does not answer on IPv6 addresses.
        assert_eq!(
            urls_for(addr("0.0.0.0:80"), &ips, None),
            ["http://192.168.1.20:80", "http://10.0.0.7:80"]
        );
    }

    #[test]
    fn the_public_url_leads_and_a_fixed_address_is_itself() {
        let ips: Vec<IpAddr> = vec!["192.168.1.20".parse().unwrap()];
        assert_eq!(
            urls_for(addr("0.0.0.0:8080"), &ips, Some("http://chat.lan:8080")),
            ["http://chat.lan:8080", "http://192.168.1.20:8080"]
        );
        assert_eq!(
            urls_for(addr("127.0.0.1:9000"), &ips, None),
            ["http://127.0.0.1:9000"]
        );
        assert_eq!(
            urls_for(addr("0.0.0.0:8080"), &[], None),
            ["http://localhost:8080"]
        );
    }

    #[test]
    fn the_real_machine_lists_no_loopback() {
        for url in reachable_urls(addr("0.0.0.0:8080"), None) {
            assert!(
                !url.contains("127.0.0.1") && !url.contains("[::1]"),
                "{url}"
            );
            assert!(
                url.starts_with("http://") && url.ends_with(":8080"),
                "{url}"
            );
        }
    }

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            parse_public_url("HTTP://Chat.LAN:8080/"),
            Ok("http://chat.lan:8080".into())
        );
        assert_eq!(
            parse_public_url("https://[fd00::1]"),
            Ok("https://[fd00::1]".into())
        );
        for bad in [
            "chat.lan",
            "ftp://chat.lan",
            "http://",
            "http://chat.lan/path",
            "http://chat.lan:0",
            "http://chat.lan:99999",
            "http://a b",
            "http://chat.lan?x=1",
            "http://user@chat.lan",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn room_urls_put_the_lobby_at_the_root() {
        assert_eq!(room_url("http://h:1", "lobby"), "http://h:1/");
        assert_eq!(room_url("http://h:1", "kitchen"), "http://h:1/r/kitchen");
    }

    #[test]
    fn wifi_strings_escape_special_characters() {
        assert_eq!(
            wifi_string("Home", Some("pass")),
            "WIFI:T:WPA;S:Home;P:pass;;"
        );
        assert_eq!(
            wifi_string(r#"a;b,c:d\e"f"#, Some(r#"p;w"#)),
            r#"WIFI:T:WPA;S:a\;b\,c\:d\\e\"f;P:p\;w;;"#
        );
        assert_eq!(wifi_string("Café", None), "WIFI:T:nopass;S:Café;;");
    }

    #[test]
    fn qr_codes_render_as_svg_and_text() {
        let svg = qr_svg("http://192.168.1.20:8080/").unwrap();
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
        let text = qr_terminal("http://192.168.1.20:8080/").unwrap();
        assert!(text.lines().count() > 10 && text.contains('█'));
        assert!(qr_svg(&"x".repeat(8000)).is_none());
    }
}
